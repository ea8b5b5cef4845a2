"""The `kdjax` command: help, fast start without training code, `kdjax models` and aliases,
`kdjax upscale`, batches (several inputs, globs, videos in folders, a counted summary), `kdjax
stream` on a generated RGB24 stream, and one-sentence errors for usage and backend mistakes.

Commands run as the installed `kdjax` script of this environment, from a temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import kdjax
from kdjax import catalog, cli, weights
from kdjax.serving import files, stream
from kdjax.serving.sharpener import Sharpener

REPO = Path(__file__).resolve().parents[1]
KDJAX = str(Path(sys.executable).with_name("kdjax"))
TRAINING_MODULES = ("orbax", "grain", "tensorboardX", "optax", "kdjax.train", "kdjax.checkpoints", "kdjax.data")


def _kdjax(*args: str, cwd: Path, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [KDJAX, *args], cwd=cwd, capture_output=True, timeout=300, env={**os.environ, **(env or {})}, **kwargs
    )


def _one_sentence_error(result: subprocess.CompletedProcess) -> str:
    """The last line of stderr, checked to be one sentence and no traceback."""
    stderr = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
    last = stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and "Traceback" not in stderr, stderr[-2000:]
    assert last.startswith("error: ") and last.endswith("."), last
    assert ". " not in last.removesuffix(".").replace("e.g. ", ""), last
    return last


def _photo(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write_clip(path: Path, frames: int = 4, size: tuple[int, int] = (32, 48)) -> Path:
    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=24)
        video.height, video.width = size
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = Fraction(1, 24)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(_photo(*size, seed=index), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 24)
            output.mux(video.encode(frame))
        output.mux(video.encode(None))
    return path


class Identity:
    """A stand-in model: the image unchanged (scale 1), so batches test the file handling alone."""

    scale = 1
    size_multiple = 1

    def apply(self, variables, x, *, train=False):
        return x


# --- Help ---------------------------------------------------------------------------------


def test_help_lists_the_commands_and_each_commands_flags_with_defaults(tmp_path):
    for args in ((), ("-h",), ("--help",)):
        result = _kdjax(*args, cwd=tmp_path, text=True)
        assert result.returncode == 0, result.stderr
        for name, command in cli.COMMANDS.items():
            assert f"  {name.ljust(len('import-weights'))}  {command.summary}\n" in result.stdout
    for args in (("sharpen", "-h"), ("sharpen", "--model=x", "--help"), ("--mode=sharpen", "--help")):
        result = _kdjax(*args, cwd=tmp_path, text=True)
        assert result.returncode == 0, result.stderr
        assert re.search(r"^  --input +an image, a video", result.stdout, re.M), result.stdout
        assert "(default: sharpen_x2)" in result.stdout and "(default: auto)" in result.stdout
        assert "example:\n  kdjax sharpen --model=sharpen_x2" in result.stdout
        assert "--arch" not in result.stdout and "--config" not in result.stdout
    train = _kdjax("train", "--help", cwd=tmp_path, text=True)
    assert train.returncode == 0 and "--config.KEY=VALUE" in train.stdout and "--input" not in train.stdout


def test_every_flag_a_command_lists_is_defined_and_described():
    for name, command in cli.COMMANDS.items():
        text = cli.command_help(name)
        for flag, meaning in command.flags.items():
            assert flag in cli.flags.FLAGS and meaning, (name, flag)
            assert f"--{flag}" in text
        assert command.example.startswith(("kdjax ", "ffmpeg ")) and f"kdjax {name}" in command.example


def test_flags_of_another_command_and_unknown_commands_are_one_sentence(tmp_path):
    assert "--arch is not a flag of kdjax sharpen; see kdjax sharpen --help." in _one_sentence_error(
        _kdjax("sharpen", "--arch=rlfn", "--input=a.png", "--output=b.png", cwd=tmp_path)
    )
    assert "shrpen is not a kdjax command (did you mean sharpen?)" in _one_sentence_error(
        _kdjax("shrpen", cwd=tmp_path)
    )
    assert "unexpected arguments: extra" in _one_sentence_error(_kdjax("models", "extra", cwd=tmp_path))


# --- Fast start ---------------------------------------------------------------------------

_IN_PROCESS = """
import sys
from kdjax import cli
try:
    cli.main(["kdjax", *sys.argv[1:]])
except SystemExit as exit:
    print("exit", exit.code, file=sys.stderr)
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "orbax", "grain", "tensorboardX", "optax")
               or m.startswith("kdjax."))))
"""


def _modules_after(args: list[str], cwd: Path) -> tuple[set[str], str]:
    result = subprocess.run([sys.executable, "-c", _IN_PROCESS, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    return set(result.stdout.strip().splitlines()[-1].split(",")), result.stderr


def test_usage_and_file_errors_come_before_jax_is_imported(tmp_path):
    for args in (
        ["sharpen", "--input=missing.png", "--output=out.png"],
        ["sharpen", "--output=out.png"],
        ["stream", "--size=12"],
        ["export", "--model=sharpen_x2"],
        ["models"],
    ):
        modules, stderr = _modules_after(args, tmp_path)
        assert "jax" not in modules, (args, stderr)


def test_sharpen_and_load_import_no_training_code(tmp_path):
    Image.fromarray(_photo()).save(tmp_path / "in.png")
    modules, stderr = _modules_after(["sharpen", "--input=in.png", "--output=out.png"], tmp_path)
    assert (tmp_path / "out.png").is_file() and "jax" in modules, stderr
    assert not [m for m in modules if m.startswith(TRAINING_MODULES)], modules
    script = "import sys, kdjax; kdjax.load('sharpen_x2'); print([m for m in sys.modules if m.startswith(%r)])"
    result = subprocess.run([sys.executable, "-c", script % (TRAINING_MODULES,)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "[]", (result.stdout, result.stderr[-2000:])


# --- Models, aliases, upscale ---------------------------------------------------------------


def test_models_lists_every_released_model_with_its_task_scale_and_measured_numbers(tmp_path):
    result = _kdjax("models", cwd=tmp_path, text=True)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:] if line.strip()}
    released = sorted(path.name for path in (REPO / "pretrained").iterdir() if (path / "params.msgpack").is_file())
    assert released and all(name in rows for name in released)
    aliases = json.loads((REPO / "pretrained" / "aliases.json").read_text())
    for name in released:
        _, alias, task, scale, params, ms, set5, urban100 = rows[name]
        model_scale = kdjax.load(name, tile=None).scale
        assert (task, scale) == ("upscale" if model_scale > 1 else "sharpen", f"x{model_scale}"), name
        assert alias == (", ".join(a for a, target in aliases.items() if target == name) or "-")
        assert params == f"{json.loads((REPO / 'pretrained' / name / 'export.json').read_text())['params']:,}"
        run = Path(json.loads((REPO / "pretrained" / name / "export.json").read_text())["workdir"]).name
        contents = [json.loads(path.read_text()) for path in (REPO / "benchmarks" / "results").glob("*.json")]
        measured = [
            row["sets"]["Urban100"]["psnr_y"]
            for content in contents if isinstance(content, list)
            for row in content
            if isinstance(row, dict) and row.get("run") in (run, name) and "Urban100" in row.get("sets", {})
        ]
        assert urban100 == (f"{measured[0]:.2f}" if measured else "-"), name  # nothing is invented
    # The numbers are the benchmark rows' (one source), e.g. the x2 upscale student's.
    row = json.loads((REPO / "benchmarks" / "results" / "students_x2.json").read_text())[0]
    assert rows["rep_kd_x2"][5:7] == [f"{row['ms_per_frame']:,.0f}", f"{row['sets']['Set5']['psnr_y']:.2f}"]


def test_each_released_model_has_at_most_one_benchmark_row():
    for model in catalog.catalogue():
        run = Path(json.loads((catalog.released_models()[model.name] / "export.json").read_text())["workdir"]).name
        assert len(catalog.benchmark_rows(model.name, run)) <= 1, model.name


def test_task_aliases_name_released_models_everywhere_a_name_is_taken():
    aliases = json.loads((REPO / "pretrained" / "aliases.json").read_text())
    assert catalog.aliases() == aliases  # every alias names a released model
    assert aliases == {"upscale_x2": "rep_kd_x2", "sharpen_x2": "rep_kd_sharpen_x2", "videocall": "rep_videocall"}
    for alias, name in aliases.items():
        assert weights.resolve(alias) == weights.resolve(name)
    assert kdjax.load("upscale_x2", tile=None).scale == 2 and kdjax.load("sharpen_x2", tile=None).scale == 1


def test_upscale_shows_the_scale_and_refuses_a_same_size_model(tmp_path):
    Image.fromarray(_photo(20, 30)).save(tmp_path / "in.png")
    result = _kdjax("upscale", "--input=in.png", "--output=big.png", cwd=tmp_path, text=True)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"Wrote big\.png \(30x20 -> 60x40, x2\) in [0-9.]+ s\.", result.stdout.strip()), result.stdout
    assert Image.open(tmp_path / "big.png").size == (60, 40)
    last = _one_sentence_error(_kdjax("upscale", "--model=sharpen_x2", "--input=in.png", "--output=o.png", cwd=tmp_path))
    assert "--model=sharpen_x2 keeps the image size" in last and "upscale_x2 (rep_kd_x2)" in last


# --- Batches ------------------------------------------------------------------------------


@pytest.fixture
def identity():
    return Sharpener(Identity(), {}, tile=None)


def test_several_inputs_globs_and_videos_in_a_folder_each_go_to_their_own_output(tmp_path, identity):
    for name in ("a.png", "b.jpg", "folder/c.png", "folder/deeper/d.bmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_photo()).save(tmp_path / name)
    _write_clip(tmp_path / "folder" / "clip.mp4")
    _write_clip(tmp_path / "folder" / "old.avi")
    (tmp_path / "folder" / "notes.txt").write_text("not an image")
    (tmp_path / "folder" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    report = files.sharpen_paths(
        identity, [tmp_path / "a.png", str(tmp_path / "*.jpg"), tmp_path / "folder", tmp_path / "a.png"], out,
        progress=False,
    )
    assert sorted(report.outputs) == sorted([
        out / "a.png", out / "b.png", out / "folder" / "c.png", out / "folder" / "deeper" / "d.png",
        out / "folder" / "clip.mp4", out / "folder" / "old.mp4",
    ])
    assert report.skipped == [(tmp_path / "folder" / "notes.txt", files.NOT_AN_IMAGE_OR_VIDEO)]
    assert [src for src, _ in report.failed] == [tmp_path / "folder" / "broken.png"]
    assert report.summary().splitlines()[-1].startswith(f"Wrote 4 images and 2 videos (x1) under {out} in ")
    assert report.summary().endswith("; skipped 1 (1 not images or videos); 1 failed.")
    with av.open(str(out / "folder" / "clip.mp4")) as clip:
        assert sum(1 for _ in clip.decode(video=0)) == 4


def test_a_folder_or_several_inputs_with_a_file_like_output_is_one_sentence(tmp_path, identity):
    (tmp_path / "in").mkdir()
    Image.fromarray(_photo()).save(tmp_path / "in" / "a.png")
    with pytest.raises(ValueError, match=r"^Output .*x\.png is a file name but input .*in is a folder; pass an output folder"):
        files.plan_paths(tmp_path / "in", tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"is a file name but there are 2 inputs"):
        files.plan_paths([tmp_path / "in" / "a.png", tmp_path / "in"], tmp_path / "x.mp4")
    with pytest.raises(FileNotFoundError, match=r"^Input pattern .*\*\.gif matches no file"):
        files.plan_paths(str(tmp_path / "*.gif"), tmp_path / "out")
    assert not (tmp_path / "x.png").exists()


def test_batch_from_the_command_line_takes_repeated_inputs_and_files_after_the_flags(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(_photo()).save(tmp_path / name)
    (tmp_path / "out").mkdir()
    Image.fromarray(_photo()).save(tmp_path / "out" / "c.png")
    result = _kdjax("sharpen", "--input=a.png", "--output=out", "b.png", "c.png", cwd=tmp_path, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "skipped c.png: its output exists (pass --overwrite to replace it)"
    assert re.fullmatch(
        r"Wrote 2 images \(x1\) under out in [0-9.]+ s; skipped 1 \(1 with an existing output, pass --overwrite\)\.",
        lines[1],
    ), lines
    assert "WARNING" not in result.stderr  # skips are counted in the summary, not logged into the progress bar
    last = _one_sentence_error(_kdjax("sharpen", "--input=out", "--output=x.png", cwd=tmp_path))
    assert "Output x.png is a file name but input out is a folder; pass an output folder" in last


# --- Streams ------------------------------------------------------------------------------

STREAM_SIZE = (180, 320)  # height, width
STREAM_FRAMES = 30


def _stream_frames() -> np.ndarray:
    """30 frames of a moving gradient with noise: something to sharpen."""
    height, width = STREAM_SIZE
    rows, cols = np.mgrid[:height, :width]
    rng = np.random.default_rng(7)
    frames = [
        np.clip(np.stack([(cols + 4 * t) % 256, (rows * 2 + t) % 256, (cols + rows) % 256], -1)
                + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
        for t in range(STREAM_FRAMES)
    ]
    return np.stack(frames)


def test_stream_of_generated_frames_equals_load_on_each_frame(tmp_path):
    frames = _stream_frames()
    result = _kdjax("stream", "--model=videocall", "--size=320x180", cwd=tmp_path, input=frames.tobytes())
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    outputs = np.frombuffer(result.stdout, np.uint8).reshape(STREAM_FRAMES, *STREAM_SIZE, 3)
    model = kdjax.load("videocall")
    for frame, output in zip(frames, outputs):
        expected = model(frame)
        assert np.abs(expected.astype(int) - output).max() <= 1
    assert np.abs(outputs.astype(int) - frames).mean() > 0.5  # sharpened, not copied
    stderr = result.stderr.decode()
    assert "320x180 RGB24 in, 320x180 RGB24 out" in stderr
    assert re.search(r"Streamed 30 frames of 320x180 -> 320x180 in [0-9.]+ s \([0-9.]+ frames/s\)\.", stderr), stderr


def test_stream_compiles_once_and_keeps_one_frame_in_memory(identity):
    import io

    frames = _stream_frames()[:5]
    sink = io.BytesIO()
    report = stream.sharpen_stream(identity, STREAM_SIZE, io.BytesIO(frames.tobytes()), sink, progress=False)
    assert report.frames == 5 and not report.output_closed and sink.getvalue() == frames.tobytes()
    assert identity.trace_count == 1


def test_stream_partial_frame_bad_size_and_closed_reader(tmp_path):
    frames = _stream_frames()[:3].tobytes()
    partial = _kdjax("stream", "--size=320x180", cwd=tmp_path, input=frames[:-100])
    assert len(partial.stdout) == 2 * 320 * 180 * 3  # the whole frames before it are written
    assert "Standard input ended 172700 bytes into frame 3, which needs 172800" in _one_sentence_error(partial)
    assert "--size=320 is not WIDTHxHEIGHT" in _one_sentence_error(_kdjax("stream", "--size=320", cwd=tmp_path, input=b""))
    (tmp_path / "frames.rgb").write_bytes(frames)
    # The reader stops after 1,000 bytes: the stream ends quietly, without a traceback.
    pipeline = f"{KDJAX} stream --size=320x180 < frames.rgb 2> err.txt | head -c 1000 > /dev/null; exit ${{PIPESTATUS[0]}}"
    closed = subprocess.run(["bash", "-c", pipeline], cwd=tmp_path, timeout=300)
    err = (tmp_path / "err.txt").read_text()
    assert closed.returncode == 0 and "Traceback" not in err and "the reader closed the output" in err, err


# --- Backends and exports -------------------------------------------------------------------


def test_a_backend_that_is_not_installed_is_one_sentence(tmp_path):
    Image.fromarray(_photo()).save(tmp_path / "in.png")
    for platform in ("cuda", "tpu"):
        last = _one_sentence_error(
            _kdjax("sharpen", "--input=in.png", "--output=out.png", cwd=tmp_path, env={"JAX_PLATFORMS": platform})
        )
        assert f"JAX_PLATFORMS={platform}" in last and 'pip install -U "jax[cuda13]"' in last
    assert not (tmp_path / "out.png").exists()


def test_export_refuses_an_existing_output_unless_overwrite(tmp_path):
    (tmp_path / "model.stablehlo").write_bytes(b"keep me")
    last = _one_sentence_error(
        _kdjax("export", "--model=sharpen_x2", "--format=stablehlo", "--output=model.stablehlo", cwd=tmp_path)
    )
    assert "Output model.stablehlo already exists" in last and "--overwrite" in last
    assert (tmp_path / "model.stablehlo").read_bytes() == b"keep me"
    result = _kdjax(
        "export", "--model=sharpen_x2", "--format=stablehlo", "--output=model.stablehlo", "--overwrite", cwd=tmp_path
    )
    assert result.returncode == 0 and (tmp_path / "model.stablehlo").read_bytes() != b"keep me", result.stderr
