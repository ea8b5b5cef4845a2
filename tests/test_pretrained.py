"""The released weights under pretrained/: they load on a fresh clone and reproduce
the Set5/Set14 numbers of BENCHMARKS.md (the benchmark suite's results.json, the upscale
teacher's in benchmarks/results/teachers_x2.json, and the students' evaluations in
benchmarks/results/students_x2.json and students_sharpen.json)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data

import kdjax
from kdjax import evaluation
from kdjax.configs import common

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = REPO / "pretrained"
SHARED = REPO / common.SHARED_DATA
BENCHMARK_ROWS = {
    row["run"]: row
    for results in (
        "x2_benchmark.json", "teachers_x2.json", "students_x2.json", "students_sharpen.json", "students_stream.json"
    )
    for row in json.loads((REPO / "benchmarks" / "results" / results).read_text())
}
RELEASED = {
    "swin_light_x2": ("Set5",),
    "swin_light_x2_upscale": ("Set5",),
    "realtime_kd_x2": ("Set5", "Set14"),
    "realtime_x2": ("Set5", "Set14"),
    "rep_kd_x2": ("Set5", "Set14"),
    "rep_kd_sharpen_x2": ("Set5", "Set14"),
    "rep_videocall": ("Set5", "Set14"),
    "stream_x2": ("Set5", "Set14"),
}


def test_the_released_models_are_all_there():
    assert sorted(path.name for path in PRETRAINED.iterdir() if path.is_dir()) == sorted(RELEASED)


# The teachers are checked on Set5 only: Set14 takes it minutes on a CI CPU.
@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_weights_reproduce_their_benchmark_row(name):
    folder = PRETRAINED / name
    run = Path(json.loads((folder / "export.json").read_text())["workdir"]).name
    sets = RELEASED[name]
    results = evaluation.evaluate_workdir(folder, eval_dirs=[str(SHARED / s) for s in sets])
    for set_name in sets:
        expected = BENCHMARK_ROWS[run]["sets"][set_name]
        assert results[set_name]["model"]["psnr_y"] == pytest.approx(expected["psnr_y"], abs=0.01)
        assert results[set_name]["model"]["ssim_y"] == pytest.approx(expected["ssim_y"], abs=1e-4)


def test_kdjax_load_finds_released_models_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = np.asarray(skimage.data.astronaut())[:72, :100]
    sharp = kdjax.load("realtime_kd_x2").sharpen(image)
    assert sharp.shape == image.shape and sharp.dtype == np.uint8
    assert np.abs(sharp.astype(int) - image).mean() > 0.5


@pytest.mark.parametrize(
    "name, scale", [("rep_kd_x2", 2), ("rep_kd_sharpen_x2", 1), ("rep_videocall", 1), ("stream_x2", 2)]
)
def test_the_released_rep_students_run_folded(name, scale):
    model = kdjax.load(name)
    assert model.scale == scale and model.model.folded
    image = np.asarray(skimage.data.astronaut())[:40, :60]
    assert model(image).shape == (40 * scale, 60 * scale, 3)


def test_stream_x2_upscales_a_compressed_clip_end_to_end_and_keeps_its_audio(tmp_path):
    """`kdjax sharpen --model=stream_x2` on a small H.264 clip with AAC audio, as a user runs it."""
    import av  # pylint: disable=import-outside-toplevel  # videos only

    height, width, frames, sample_rate = 64, 96, 6, 16000
    photo = np.asarray(skimage.data.astronaut())[100 : 100 + 2 * height : 2, 150 : 150 + 2 * width : 2]
    clip = tmp_path / "call_540p.mp4"
    with av.open(str(clip), "w") as container:
        video_stream = container.add_stream("libx264", rate=24, options={"crf": "30"})
        video_stream.height, video_stream.width, video_stream.pix_fmt = height, width, "yuv420p"
        audio_stream = container.add_stream("aac", rate=sample_rate)
        audio_stream.layout = "mono"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(photo, index, axis=1)), format="rgb24")
            container.mux(video_stream.encode(frame))
        container.mux(video_stream.encode(None))
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(sample_rate // 4) / sample_rate)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024].copy(), format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = sample_rate, start
            container.mux(audio_stream.encode(chunk))
        container.mux(audio_stream.encode(None))
    output = tmp_path / "call_1080p.mp4"
    command = Path(sys.executable).with_name("kdjax")
    result = subprocess.run(
        [str(command), "sharpen", "--model=stream_x2", f"--input={clip}", f"--output={output}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    with av.open(str(output)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])]
        assert [stream.type for stream in container.streams] == ["video", "audio"]
        assert container.streams.audio[0].codec_context.name == "aac"
    assert len(decoded) == frames and decoded[0].shape == (2 * height, 2 * width, 3)
