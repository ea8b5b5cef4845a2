"""Tests for kdjax.serving.video: frames, sizes, timestamps, colours and audio survive a round trip,
batches are bounded, and unusable files give one-sentence errors.

Every clip is made here with PyAV: 64x48 colour bars with a moving square at 24 fps, H.264
yuv420p, with a 0.5 s AAC sine tone.
"""

import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from kdjax.serving import video

HEIGHT, WIDTH, RATE, FRAMES = 48, 64, 24, 12
SAMPLE_RATE = 44100
BARS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))


def _pattern(index: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Colour bars on the top half; a white square moving 4 pixels a frame on a gradient below."""
    image = np.zeros((height, width, 3), np.uint8)
    bar = width // len(BARS)
    for i, colour in enumerate(BARS):
        image[: height // 2, i * bar : (i + 1) * bar] = colour
    image[height // 2 :] = np.linspace(0, 160, width, dtype=np.uint8)[None, :, None]
    left = (4 * index) % (width - 8)
    image[height // 2 + 4 : height // 2 + 12, left : left + 8] = 255
    return image


def _write_clip(
    path: Path, *, pts=range(FRAMES), size=(HEIGHT, WIDTH), audio=True, video_stream=True, rotation=0
) -> Path:
    """An H.264 clip with frames at ``pts`` in units of 1/24 s (gaps make a variable frame rate)."""
    with av.open(str(path), "w") as output:
        if video_stream:
            stream = output.add_stream("libx264", rate=RATE)
            stream.height, stream.width = size
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = Fraction(1, RATE)
            if rotation:
                stream.set_display_rotation(rotation)
        if audio:
            tone = output.add_stream("aac", rate=SAMPLE_RATE)
            tone.layout = "mono"
        if video_stream:
            for index, timestamp in enumerate(pts):
                frame = av.VideoFrame.from_ndarray(_pattern(index, *size), format="rgb24")
                frame.pts = timestamp
                frame.time_base = Fraction(1, RATE)
                output.mux(stream.encode(frame))
            output.mux(stream.encode(None))
        if audio:
            samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE)).astype(np.float32)
            for start in range(0, len(samples), 1024):
                chunk = samples[None, start : start + 1024].copy()
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate, frame.pts = SAMPLE_RATE, start
                output.mux(tone.encode(frame))
            output.mux(tone.encode(None))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


def _frame_times(path: Path) -> list[Fraction]:
    """Presentation times (s) of the decoded frames of the first video stream, read by PyAV alone."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame.pts * stream.time_base for frame in container.decode(stream)]


def _audio_packets(path: Path) -> tuple[str, int, list[bytes], Fraction]:
    """(codec, sample rate, packet payloads, total duration in s) of the first audio stream."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        packets = [packet for packet in container.demux(stream) if packet.dts is not None]
        duration = sum(packet.duration for packet in packets) * stream.time_base
        return stream.codec_context.name, stream.codec_context.sample_rate, [bytes(p) for p in packets], duration


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def _upscale_and_invert(frames: np.ndarray) -> np.ndarray:
    """A stand-in x2 upscaler whose output cannot be mistaken for its input."""
    return 255 - frames.repeat(2, axis=1).repeat(2, axis=2)


def test_sharpen_video_keeps_frames_timestamps_colours_and_audio(clip, tmp_path):
    batch_sizes = []

    def identity(frames):
        batch_sizes.append(len(frames))
        return frames

    out = tmp_path / "out.mp4"
    report = video.sharpen_video(clip, out, identity, batch_size=5, progress=False)

    assert batch_sizes == [5, 5, 2]  # streamed in bounded batches, every frame once
    assert (report.frames, report.input_size, report.output_size) == (FRAMES, (HEIGHT, WIDTH), (HEIGHT, WIDTH))
    assert report.frame_rate == RATE and report.frames_per_second > 0
    assert report.copied_streams[0].startswith("audio aac 44100 Hz") and report.skipped_streams == ()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.mp4"]  # no partial file left

    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == RATE
        # Untagged SD input is read as BT.601 limited range, and the output says so.
        assert (stream.codec_context.colorspace, stream.codec_context.color_range) == (6, 1)
    assert _frame_times(out) == _frame_times(clip) == [Fraction(i, RATE) for i in range(FRAMES)]

    # Audio remuxed, not re-encoded: the very same packets.
    assert _audio_packets(out) == _audio_packets(clip)

    # Lossy H.264 (crf 18) of the decoded input: measured 37-38 dB per frame on this clip (the
    # colour-bar edges suffer from 4:2:0 chroma); a frame off by one scores 17-22 dB.
    inputs, outputs = list(video.iter_frames(clip)), list(video.iter_frames(out))
    assert len(outputs) == FRAMES
    assert min(_psnr(a, b) for a, b in zip(inputs, outputs)) > 32
    # Colours: bar interiors measured within 1.6 levels on average; a YUV matrix mismatch
    # (BT.601 vs BT.709) moves saturated bars by 14 to 39 levels.
    bar = WIDTH // len(BARS)
    for a, b in zip(inputs, outputs):
        for i in range(len(BARS)):
            interior = np.s_[4 : HEIGHT // 2 - 4, i * bar + 4 : (i + 1) * bar - 4]
            assert np.abs(a[interior].mean((0, 1)) - b[interior].mean((0, 1))).max() < 3


def test_upscaled_output_equals_predictor_on_decoded_input(clip, tmp_path):
    out = tmp_path / "up.mkv"
    # x264 at qp 0 is lossless and libx264rgb encodes the RGB planes themselves (no YUV
    # conversion), so the decoded output must equal the prediction exactly.
    report = video.sharpen_video(
        clip, out, _upscale_and_invert, codec="libx264rgb", pix_fmt="rgb24", crf=None,
        codec_options={"qp": "0"}, progress=False,
    )  # fmt: skip
    assert report.output_size == (2 * HEIGHT, 2 * WIDTH)
    outputs = list(video.iter_frames(out))
    assert len(outputs) == FRAMES
    for frame, output in zip(video.iter_frames(clip), outputs):
        np.testing.assert_array_equal(output, _upscale_and_invert(frame[None])[0])

    # Matroska stores milliseconds (and shifts everything by the AAC priming delay): frame
    # intervals are kept to the millisecond.
    times = np.array(_frame_times(out), float)
    np.testing.assert_allclose(np.diff(times), 1 / RATE, atol=1e-3)
    codec, sample_rate, packets, duration = _audio_packets(out)
    assert (codec, sample_rate, len(packets)) == _audio_packets(clip)[:2] + (len(_audio_packets(clip)[2]),)
    assert abs(duration - _audio_packets(clip)[3]) < 0.01


def test_variable_frame_rate_timestamps_are_kept(tmp_path):
    pts = [0, 1, 2, 4, 5, 8, 9, 13, 14, 15]
    clip = _write_clip(tmp_path / "vfr.mp4", pts=pts, audio=False)
    out = tmp_path / "vfr_out.mp4"
    video.sharpen_video(clip, out, lambda frames: frames, batch_size=3, progress=False)
    assert _frame_times(out) == _frame_times(clip) == [Fraction(p, RATE) for p in pts]


def test_display_rotation_is_kept(tmp_path):
    clip = _write_clip(tmp_path / "portrait.mp4", pts=range(3), audio=False, rotation=90)
    out = tmp_path / "portrait_out.mp4"
    video.sharpen_video(clip, out, lambda frames: frames, progress=False)
    with av.open(str(out)) as container:
        assert [frame.rotation for frame in container.decode(video=0)] == [90, 90, 90]


def test_untagged_hd_input_is_read_and_tagged_as_bt709(tmp_path):
    clip = _write_clip(tmp_path / "hd.mp4", pts=range(2), size=(720, 1280), audio=False)
    out = tmp_path / "hd_out.mp4"
    video.sharpen_video(clip, out, lambda frames: frames, codec_options={"preset": "ultrafast"}, progress=False)
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.colorspace == 1  # BT.709


def test_iter_video_yields_predictions_of_iter_frames(clip):
    frames = list(video.iter_frames(clip))
    assert len(frames) == FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3) and frames[0].dtype == np.uint8
    predicted = list(video.iter_video(clip, _upscale_and_invert, batch_size=5))
    assert len(predicted) == FRAMES
    for frame, prediction in zip(frames, predicted):
        np.testing.assert_array_equal(prediction, _upscale_and_invert(frame[None])[0])


def test_stopping_early_ends_the_decoder_thread(clip):
    frames = video.iter_frames(clip)
    next(frames)
    frames.close()
    assert not [thread for thread in threading.enumerate() if thread.name == "video-decoder"]


def test_odd_predicted_sizes_are_padded_for_yuv420p_and_kept_for_yuv444p(clip, tmp_path):
    def crop(frames):
        return np.ascontiguousarray(frames[:, : HEIGHT - 1, : WIDTH - 1])

    report = video.sharpen_video(clip, tmp_path / "odd.mp4", crop, progress=False)
    assert report.output_size == (HEIGHT, WIDTH)
    padded = next(video.iter_frames(tmp_path / "odd.mp4")).astype(int)
    # The added column and row repeat their neighbours (up to the lossy codec).
    assert np.abs(padded[:, -1] - padded[:, -2]).mean() < 3 and np.abs(padded[-1] - padded[-2]).mean() < 3

    report = video.sharpen_video(clip, tmp_path / "odd444.mp4", crop, pix_fmt="yuv444p", progress=False)
    assert report.output_size == (HEIGHT - 1, WIDTH - 1)
    assert next(video.iter_frames(tmp_path / "odd444.mp4")).shape == (HEIGHT - 1, WIDTH - 1, 3)


def test_probe_video(clip):
    info = video.probe_video(clip)
    assert (info.size, info.frame_rate, info.frames, info.codec) == ((HEIGHT, WIDTH), RATE, FRAMES, "h264")
    assert info.duration == pytest.approx(FRAMES / RATE, abs=0.05)
    assert info.other_streams[0].startswith("audio aac 44100 Hz")


def test_is_video_path():
    assert video.is_video_path("a/b/clip.MP4") and video.is_video_path("x.mkv") and video.is_video_path("x.webm")
    assert not video.is_video_path("photo.png") and not video.is_video_path("video")


def _assert_one_sentence_naming(error: pytest.ExceptionInfo, path: Path, fix: str):
    message = str(error.value)
    assert str(path) in message and fix in message
    assert "\n" not in message and message.endswith(".") and message.count(". ") == 0


def test_unreadable_inputs_are_one_sentence_errors(clip, tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(video.VideoError) as error:
        video.sharpen_video(missing, tmp_path / "out.mp4", lambda frames: frames, progress=False)
    _assert_one_sentence_naming(error, missing, "does not exist; check the path")

    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    with pytest.raises(video.VideoError) as error:
        video.iter_frames(text)
    _assert_one_sentence_naming(error, text, "is not a readable video")

    audio_only = _write_clip(tmp_path / "tone.mp4", video_stream=False)
    with pytest.raises(video.VideoError) as error:
        video.probe_video(audio_only)
    _assert_one_sentence_naming(error, audio_only, "has no video stream (it holds audio)")
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize(
    ("name", "options", "fix"),
    [
        ("out.xyz", {}, "is not a video file type; end the name with one of .mp4"),
        ("missing/out.mp4", {}, "does not exist; create it first"),
        ("out.mp4", {"codec": "h265x"}, "Unknown video encoder 'h265x'"),
        ("out.mp4", {"codec": "aac"}, "encodes audio, not video"),
        ("out.webm", {}, ".webm files cannot hold libx264 video; use another codec"),
        ("out.mp4", {"pix_fmt": "rgb24"}, "cannot write pixel format 'rgb24'"),
    ],
)
def test_unwritable_outputs_are_one_sentence_errors(clip, tmp_path, name, options, fix):
    dst = tmp_path / name
    with pytest.raises(video.VideoError) as error:
        video.sharpen_video(clip, dst, lambda frames: frames, progress=False, **options)
    _assert_one_sentence_naming(error, dst, fix)
    assert not dst.exists()


def test_writing_over_the_input_is_refused(clip):
    with pytest.raises(video.VideoError) as error:
        video.sharpen_video(clip, clip, lambda frames: frames, progress=False)
    _assert_one_sentence_naming(error, clip, "is the input")


def test_bad_predictor_output_is_reported_and_leaves_no_file(clip, tmp_path):
    with pytest.raises(ValueError, match=r"must return uint8 \(12, H', W', 3\) RGB frames") as error:
        video.sharpen_video(clip, tmp_path / "out.mp4", lambda frames: frames / 255.0, batch_size=12, progress=False)
    assert not isinstance(error.value, video.VideoError)
    assert list(tmp_path.iterdir()) == []


def test_sharpener_sharpens_a_clip_through_its_compiled_batches(clip, tmp_path):
    """`Sharpener.sharpen_video` (what `kdjax sharpen --input=clip.mp4` runs) with a real model:
    one compile for all frames, each decoded output frame near the model's output for it."""
    import kdjax  # pylint: disable=import-outside-toplevel  # the rest of this file needs no JAX

    model = kdjax.load("realtime_kd_x2")
    report = model.sharpen_video(
        clip, tmp_path / "out.mkv", codec="libx264rgb", pix_fmt="rgb24", crf=None, codec_options={"qp": "0"},
        progress=False,
    )
    assert report.frames == FRAMES and model.trace_count == 2  # batches of 8 frames, and the last 4
    decoded_in = list(video.iter_frames(clip))
    decoded_out = list(video.iter_frames(tmp_path / "out.mkv"))
    np.testing.assert_array_equal(decoded_out[5], model.sharpen(decoded_in[5]))
