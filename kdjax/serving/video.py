"""Video files in and out for a frame-batch predictor: decode, predict in batches, encode (PyAV).

This module owns everything between a video file and a ``predict_batch`` function, and knows
nothing of models:

    predict_batch: uint8 (N, H, W, 3) RGB frames -> uint8 (N, H', W', 3) RGB frames

(H' = H*s and W' = W*s with s = 1 to sharpen, 2..4 to upscale; any fixed output size works).

- `sharpen_video(src, dst, predict_batch)` decodes the first video stream of ``src``, hands its
  frames to ``predict_batch`` ``batch_size`` at a time and encodes the predictions to ``dst``
  (H.264 by default) with the input's timestamps, so the frame rate, constant or variable, is
  kept, and so is a display rotation. Audio and subtitle streams are copied packet by packet
  (no re-encode) when the output container can hold their codec; other streams (data,
  attachments, further video) are left out and listed in the report.
- `iter_frames(src)` and `iter_video(src, predict_batch)` yield decoded or predicted frames
  without writing a file; `probe_video(src)` reads a video's size, rate and length.
- `VIDEO_EXTENSIONS` and `is_video_path` let a command line route files by suffix.

Streaming: memory does not grow with the length of the video. A background thread decodes the
next batch while the predictor runs on the current one (at most one decoded batch waits), and
predicted frames go to the encoder at once; only the encoder's own look-ahead (about 40 frames
for x264's defaults) adds to that.

Colours: frames are converted to RGB with the YUV matrix and range the input is tagged with
(untagged input: BT.709 from 1280 pixels wide or 577 high, BT.601 below, as video players
assume), and back to YUV with the same matrix and range, which the output is tagged with, so
colours do not shift.

Odd sizes: chroma-subsampled pixel formats cannot hold them (yuv420p needs an even width and
height), so predicted frames are padded by repeating their last row or column;
`VideoReport.output_size` is the encoded size. ``pix_fmt="yuv444p"`` keeps odd sizes exactly.

Unusable input or output raises `VideoError`, one sentence naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.format import VideoFormat
from av.video.reformatter import VideoReformatter
from tqdm import tqdm

from kdjax import outputs

__all__ = [
    "VIDEO_EXTENSIONS",
    "PredictBatch",
    "VideoError",
    "VideoInfo",
    "VideoReport",
    "is_video_path",
    "iter_frames",
    "iter_video",
    "probe_video",
    "sharpen_video",
]

logger = logging.getLogger(__name__)

PredictBatch = Callable[[np.ndarray], np.ndarray]

# Lower-case file suffixes treated as videos when routing files; also the output suffixes
# `sharpen_video` accepts (whether a container can hold the chosen codec is checked on opening).
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg",
    ".ts", ".m2ts", ".mts", ".flv", ".wmv", ".ogv", ".3gp",
)  # fmt: skip

# Encoders suggested when the requested one is unknown, in order of preference.
_SUGGESTED_ENCODERS = ("libx264", "libx265", "libvpx-vp9", "libaom-av1", "ffv1", "mpeg4")
# Frames decoded per batch by `iter_frames` (the caller sees single frames).
_ITER_FRAMES_BATCH = 8
# Used when a stream declares no frame rate at all; only the encoder's rate control and the
# nominal rate in the header depend on it, as every frame keeps its own timestamp.
_FALLBACK_FRAME_RATE = Fraction(25)

# FFmpeg's AVColorSpace and AVColorRange values, which PyAV exposes as plain ints.
_AVCOL_SPC_BT709, _AVCOL_SPC_SMPTE170M = 1, 6
_AVCOL_RANGE_MPEG, _AVCOL_RANGE_JPEG = 1, 2
# AVColorSpace tag -> swscale's matrix (SWS_CS_*), for the tags swscale has a matrix for.
_SWS_MATRIX = {
    1: 1,  # BT.709
    4: 4,  # FCC
    5: 5,  # BT.470BG (BT.601, 625 lines)
    6: 5,  # SMPTE 170M (BT.601, 525 lines): the same matrix
    7: 7,  # SMPTE 240M
    9: 9,  # BT.2020 non-constant luminance
    10: 9,  # BT.2020 constant luminance: swscale has only the non-constant matrix
}


class VideoError(ValueError):
    """A video that cannot be read or written; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, from its header.

    Attributes:
      path: the file.
      size: (height, width) of the first video stream.
      frame_rate: its average frame rate (frames per second).
      frames: its number of frames, from the header or estimated from its duration; None if
        unknown.
      duration: its duration in seconds; None if unknown.
      codec: its codec (e.g. "h264").
      other_streams: the file's other streams, e.g. "audio aac 44100 Hz".
    """

    path: Path
    size: tuple[int, int]
    frame_rate: Fraction
    frames: int | None
    duration: float | None
    codec: str
    other_streams: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class VideoReport:
    """What `sharpen_video` did.

    Attributes:
      src: the input video.
      dst: the output video.
      frames: frames predicted and encoded.
      seconds: wall-clock time of the whole call.
      frames_per_second: frames / seconds.
      input_size: (height, width) of the input frames.
      output_size: (height, width) of the encoded frames: the predicted size, plus one row or
        column of padding where the pixel format needs even sizes.
      frame_rate: the average frame rate of input and output (timestamps are copied).
      codec: the output's video encoder.
      copied_streams: streams copied unchanged, e.g. "audio aac 44100 Hz".
      skipped_streams: streams left out, with the reason.
    """

    src: Path
    dst: Path
    frames: int
    seconds: float
    frames_per_second: float
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    frame_rate: Fraction
    codec: str
    copied_streams: tuple[str, ...]
    skipped_streams: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Color:
    """How the input's YUV maps to RGB, kept for the output so colours do not shift."""

    matrix: int  # swscale matrix (SWS_CS_*) for YUV <-> RGB
    colorspace: int  # AVColorSpace tag written to the output
    color_range: int  # AVColorRange of the conversion and of the output
    primaries: int  # tags copied unchanged (no conversion)
    trc: int
    input_is_rgb: bool  # RGB input (e.g. libx264rgb, ffv1 gbrp) needs no matrix


@dataclasses.dataclass
class _Batch:
    frames: np.ndarray  # uint8 (N, H, W, 3) RGB; N = 0 only for the last batch
    pts: list[int]  # in the video stream's time base
    packets: list[av.Packet]  # packets of copied streams demuxed since the previous batch
    rotation: float  # display rotation of the frames (phone videos), counter-clockwise degrees


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether a path names a video file, by its suffix (see `VIDEO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def probe_video(src: str | os.PathLike) -> VideoInfo:
    """Reads a video's size, frame rate and length from its header, decoding nothing.

    Raises:
      VideoError: ``src`` is missing, not a video, or has no video stream.
    """
    src = Path(src)
    with _open_input(src) as container:
        return _describe(container, src)


def iter_frames(src: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yields the frames of the first video stream of ``src`` as uint8 (H, W, 3) RGB arrays.

    Frames come as coded: a display rotation (phone videos) is not applied.
    The file is opened (and checked) at once; frames are decoded as they are consumed, by a
    background thread at most two batches of 8 frames ahead.

    Raises:
      VideoError: ``src`` is missing, not a video, has no video stream, or is corrupt.
    """
    src = Path(src)
    container = _open_input(src)
    return _iter_batches(container, src, _ITER_FRAMES_BATCH, lambda frames: frames)


def iter_video(src: str | os.PathLike, predict_batch: PredictBatch, *, batch_size: int = 8) -> Iterator[np.ndarray]:
    """Yields the predicted frames of the first video stream of ``src``, one at a time.

    Frames are decoded and passed to ``predict_batch`` ``batch_size`` at a time (the last batch
    may be smaller); the next batch is decoded while the predictor runs.

    Args:
      src: the video file.
      predict_batch: uint8 (N, H, W, 3) RGB -> uint8 (N, H', W', 3) RGB.
      batch_size: frames per ``predict_batch`` call.

    Returns:
      An iterator of uint8 (H', W', 3) RGB arrays.

    Raises:
      VideoError: ``src`` is missing, not a video, has no video stream, or is corrupt.
      ValueError: ``predict_batch`` returned something else than uint8 (N, H', W', 3) frames.
    """
    _check_batch_size(batch_size)
    src = Path(src)
    container = _open_input(src)
    return _iter_batches(container, src, batch_size, lambda frames: _predict(predict_batch, frames))


def sharpen_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    predict_batch: PredictBatch,
    *,
    batch_size: int = 8,
    codec: str = "libx264",
    crf: int | None = 18,
    pix_fmt: str = "yuv420p",
    codec_options: Mapping[str, str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> VideoReport:
    """Runs ``predict_batch`` on every frame of a video and encodes the result, keeping the audio.

    The first video stream of ``src`` is decoded to RGB, passed to ``predict_batch``
    ``batch_size`` frames at a time, and encoded to ``dst`` at the predicted size, each frame
    with its input timestamp. Audio and subtitle streams are copied unchanged when the output
    container can hold them, and a display rotation (phone videos) is kept. ``dst`` is written
    under a temporary name of this process next to it (`kdjax.outputs.atomic_file`) and renamed
    when complete, so it never holds a partial video; an existing ``dst`` is replaced only with
    ``overwrite``. Fewer frames decoded than the header counts (a truncated input) is a warning.

    Args:
      src: the input video.
      dst: the output video; its suffix picks the container (one of `VIDEO_EXTENSIONS`).
      predict_batch: uint8 (N, H, W, 3) RGB -> uint8 (N, H', W', 3) RGB, the same H', W' for
        every batch.
      batch_size: frames per ``predict_batch`` call.
      codec: FFmpeg video encoder, e.g. "libx264", "libx265", "libvpx-vp9" (for .webm),
        "libx264rgb" or "ffv1" (lossless, .mkv).
      crf: constant rate factor (quality; lower is better, 0 is lossless for x264), or None
        for encoders without one (ffv1, mpeg4).
      pix_fmt: encoded pixel format: "yuv420p" plays everywhere; "yuv444p" keeps full colour
        resolution; "rgb24" with libx264rgb.
      codec_options: further encoder options, e.g. {"preset": "veryfast"} or {"qp": "0"}.
      progress: show a progress bar (frames/s, and the ETA when the frame count is known).
      overwrite: replace an existing ``dst`` (never the input, nor a file in a model folder).

    Returns:
      A `VideoReport`.

    Raises:
      VideoError: ``src`` is missing, not a video or has no video stream; ``dst`` has an
        unknown suffix or is not writable; the encoder or pixel format is unknown or does not
        fit the container; or encoding fails.
      ValueError: ``predict_batch`` returned something else than uint8 (N, H', W', 3) frames.
    """
    start = time.perf_counter()
    _check_batch_size(batch_size)
    src, dst = Path(src), Path(dst)
    _check_encoder(codec, pix_fmt, dst)
    _check_output_path(src, dst)
    try:
        outputs.check_output(dst, overwrite=overwrite, inputs=[src])
    except outputs.OutputError as error:
        raise VideoError(str(error)) from None
    options = dict(codec_options or {})
    if crf is not None:
        options["crf"] = str(crf)
    # The temporary name keeps the suffix: FFmpeg picks the container from it.
    with _open_input(src) as container, outputs.atomic_file(dst) as partial:
        info = _describe(container, src)
        declared = container.streams.video[0].frames  # 0 where the header does not count them
        with av.open(str(partial), mode="w") as output:
            frames, output_size, copied, skipped = _transcode(
                container, output, info, dst, predict_batch, batch_size, codec, pix_fmt, options, progress
            )
    if frames < declared:
        logger.warning(
            "%s ended after %d of the %d frames its header counts (truncated or damaged); %s holds those %d frames.",
            src, frames, declared, dst, frames,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    return VideoReport(
        src=src,
        dst=dst,
        frames=frames,
        seconds=seconds,
        frames_per_second=frames / seconds,
        input_size=info.size,
        output_size=output_size,
        frame_rate=info.frame_rate,
        codec=codec,
        copied_streams=copied,
        skipped_streams=skipped,
    )


def _transcode(
    container: av.container.InputContainer,
    output: av.container.OutputContainer,
    info: VideoInfo,
    dst: Path,
    predict_batch: PredictBatch,
    batch_size: int,
    codec: str,
    pix_fmt: str,
    options: dict[str, str],
    progress: bool,
) -> tuple[int, tuple[int, int], tuple[str, ...], tuple[str, ...]]:
    """Decodes, predicts, encodes and remuxes; returns (frames, output size, copied, skipped)."""
    video_in = container.streams.video[0]
    color = _input_color(video_in)
    # The video stream is added first, so it stays stream 0 whatever the input's order.
    video_out = _add_video_stream(output, video_in, info, dst, codec, pix_fmt, options, color)
    copied_out, copied, skipped = _add_copied_streams(output, container, video_in)
    output.metadata.update(container.metadata)

    # YUV output is converted with, and tagged with, the input's matrix and range.
    to_yuv = (
        {} if VideoFormat(pix_fmt).is_rgb else {"dst_colorspace": color.matrix, "dst_color_range": color.color_range}
    )
    reformatter = VideoReformatter()
    frames = 0
    predicted_size = output_size = None
    batches = _prefetched(_read_batches(container, info.path, video_in, list(copied_out.values()), batch_size))
    with contextlib.closing(batches), tqdm(
        total=info.frames, unit="frame", desc=info.path.name, disable=not progress, dynamic_ncols=True
    ) as bar:
        for batch in batches:
            if len(batch.frames):
                predicted = _predict(predict_batch, batch.frames)
                if output_size is None:
                    predicted_size = predicted.shape[1:3]
                    output_size = _encodable_size(predicted_size, pix_fmt, info.path)
                    # Size and rotation can be set until the first packet writes the header.
                    video_out.height, video_out.width = output_size
                    if batch.rotation:
                        video_out.set_display_rotation(batch.rotation)
                elif predicted.shape[1:3] != predicted_size:
                    raise ValueError(
                        f"predict_batch returned {predicted.shape[1:3]} frames after {predicted_size} ones; "
                        "it must return one size for the whole video."
                    )
                predicted = _pad(predicted, output_size)
            elif output_size is None:
                break  # the video stream has no frame
            else:
                predicted = batch.frames  # only the copied streams' last packets
            with _writing(dst, codec):
                for packet in batch.packets:
                    packet.stream = copied_out[packet.stream.index]
                    output.mux(packet)
                for image, pts in zip(predicted, batch.pts):
                    frame = reformatter.reformat(
                        av.VideoFrame.from_ndarray(image, format="rgb24"), format=pix_fmt, **to_yuv
                    )
                    frame.pts = pts
                    frame.time_base = video_in.time_base
                    output.mux(video_out.encode(frame))
            frames += len(batch.frames)
            bar.update(len(batch.frames))
        bar.total = frames  # the header's count may have been an estimate
        bar.refresh()
    if output_size is None:
        raise VideoError(f"{info.path} has a video stream but no decodable frame; check that it plays.")
    with _writing(dst, codec):
        output.mux(video_out.encode(None))  # flush the encoder's delayed frames
    return frames, output_size, copied, skipped


def _add_video_stream(
    output: av.container.OutputContainer,
    video_in: av.video.stream.VideoStream,
    info: VideoInfo,
    dst: Path,
    codec: str,
    pix_fmt: str,
    options: dict[str, str],
    color: _Color,
) -> av.video.stream.VideoStream:
    try:
        video_out = output.add_stream(codec, rate=info.frame_rate)
    except ValueError:
        raise VideoError(
            f"Cannot write {dst}: {dst.suffix} files cannot hold {codec} video; use another codec or a .mkv output."
        ) from None
    # The input's time base, so that every timestamp is carried over exactly (variable rate too).
    video_out.time_base = video_in.time_base
    context = video_out.codec_context
    context.time_base = video_in.time_base
    context.pix_fmt = pix_fmt
    context.options = options
    if not VideoFormat(pix_fmt).is_rgb:
        context.colorspace = color.colorspace
        context.color_range = color.color_range
    context.color_primaries = color.primaries
    context.color_trc = color.trc
    if video_in.codec_context.sample_aspect_ratio:
        context.sample_aspect_ratio = video_in.codec_context.sample_aspect_ratio
    return video_out


def _add_copied_streams(
    output: av.container.OutputContainer,
    container: av.container.InputContainer,
    video_in: av.video.stream.VideoStream,
) -> tuple[dict[int, av.stream.Stream], tuple[str, ...], tuple[str, ...]]:
    """Adds an output stream per copyable input stream: ({input index: output stream}, copied, skipped)."""
    copied_out, copied, skipped = {}, [], []
    for stream in container.streams:
        if stream.index == video_in.index:
            continue
        name = _stream_name(stream)
        if stream.type not in ("audio", "subtitle"):
            skipped.append(f"{name} (only audio and subtitles are copied)")
            continue
        try:
            copied_out[stream.index] = output.add_stream_from_template(stream)
        except ValueError:  # the container cannot hold this codec
            skipped.append(f"{name} (the output container cannot hold it)")
            continue
        copied_out[stream.index].metadata.update(stream.metadata)  # e.g. the language
        copied.append(name)
    for name in skipped:
        logger.warning("Leaving out stream %s of %s.", name, container.name)
    return copied_out, tuple(copied), tuple(skipped)


def _iter_batches(
    container: av.container.InputContainer,
    src: Path,
    batch_size: int,
    process: Callable[[np.ndarray], np.ndarray],
) -> Iterator[np.ndarray]:
    with container, contextlib.closing(
        _prefetched(_read_batches(container, src, container.streams.video[0], [], batch_size))
    ) as batches:
        for batch in batches:
            if len(batch.frames):
                yield from process(batch.frames)


def _read_batches(
    container: av.container.InputContainer,
    src: Path,
    video_in: av.video.stream.VideoStream,
    copied: list[av.stream.Stream],
    batch_size: int,
) -> Iterator[_Batch]:
    """Demuxes ``container``, yielding RGB frames of ``video_in`` in batches, with the copied streams' packets."""
    color = _input_color(video_in)
    to_rgb = {} if color.input_is_rgb else {"src_colorspace": color.matrix, "src_color_range": color.color_range}
    # Frames are scaled to the stream's initial size, should it change mid-stream (as FFmpeg does).
    width, height = video_in.codec_context.width, video_in.codec_context.height
    reformatter = VideoReformatter()
    frame_step = max(1, round(1 / (_frame_rate(video_in) * video_in.time_base)))
    frames, pts, packets = [], [], []
    last_pts, rotation = None, 0
    decoded = 0
    try:
        for packet in container.demux(video_in, *copied):
            if packet.stream.index != video_in.index:
                if packet.dts is not None:  # demux ends each stream with an empty flush packet
                    packets.append(packet)
                continue
            for frame in packet.decode():
                rgb = reformatter.reformat(frame, width, height, "rgb24", **to_rgb)
                frames.append(rgb.to_ndarray())
                # Encoders need strictly increasing timestamps; a missing or repeated one
                # (broken files) becomes the previous one plus a frame.
                if frame.pts is not None and (last_pts is None or frame.pts > last_pts):
                    last_pts = frame.pts
                else:
                    last_pts = 0 if last_pts is None else last_pts + frame_step
                pts.append(last_pts)
                rotation = frame.rotation
                decoded += 1
                if len(frames) == batch_size:
                    yield _Batch(np.stack(frames), pts, packets, rotation)
                    frames, pts, packets = [], [], []
    except av.FFmpegError as error:
        raise VideoError(
            f"{src} is corrupt after frame {decoded} ({_one_line(error)}); re-encode or replace it."
        ) from None
    if frames or packets:
        empty = np.empty((0, height, width, 3), np.uint8)
        yield _Batch(np.stack(frames) if frames else empty, pts, packets, rotation)


def _prefetched(items: Iterator[_Batch], depth: int = 1) -> Iterator[_Batch]:
    """Runs ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    Decoding (in FFmpeg, which releases the GIL) then overlaps the caller's prediction and
    encoding. Exceptions are re-raised in the consumer; closing the returned generator stops
    and joins the thread, so the caller may close the container afterwards.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(error)

    thread = threading.Thread(target=produce, name="video-decoder", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _predict(predict_batch: PredictBatch, frames: np.ndarray) -> np.ndarray:
    predicted = np.asarray(predict_batch(frames))
    if predicted.dtype != np.uint8 or predicted.ndim != 4 or predicted.shape[::3] != (len(frames), 3):
        raise ValueError(
            f"predict_batch returned {predicted.dtype} {predicted.shape} for {frames.shape}; "
            f"it must return uint8 ({len(frames)}, H', W', 3) RGB frames."
        )
    return predicted


def _encodable_size(size: tuple[int, int], pix_fmt: str, src: Path) -> tuple[int, int]:
    """The smallest (height, width) >= ``size`` that ``pix_fmt`` can hold (even sizes for yuv420p)."""
    pixel_format = VideoFormat(pix_fmt)
    # chroma_height(4) is 4 / 2**log2_chroma_h: 4 for full-height chroma, 2 for half, 1 for a quarter.
    multiple = (4 // pixel_format.chroma_height(4), 4 // pixel_format.chroma_width(4))
    padded = tuple(-(-side // step) * step for side, step in zip(size, multiple))
    if padded != tuple(size):
        logger.warning(
            "Predicted frames of %s are %dx%d; %s needs multiples of %dx%d, so they are padded to %dx%d "
            "by repeating their last column and row.",
            src, size[1], size[0], pix_fmt, multiple[1], multiple[0], padded[1], padded[0],
        )  # fmt: skip
    return padded


def _pad(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pads (N, H, W, 3) frames at the bottom and right to ``size``, repeating the edge, C-contiguous."""
    pad_h, pad_w = size[0] - frames.shape[1], size[1] - frames.shape[2]
    if not (pad_h or pad_w):
        return np.ascontiguousarray(frames)
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _input_color(video_in: av.video.stream.VideoStream) -> _Color:
    context = video_in.codec_context
    colorspace = context.colorspace
    if colorspace not in _SWS_MATRIX:  # untagged: guess as players do
        hd = context.width >= 1280 or context.height > 576
        colorspace = _AVCOL_SPC_BT709 if hd else _AVCOL_SPC_SMPTE170M
    return _Color(
        matrix=_SWS_MATRIX[colorspace],
        colorspace=colorspace,
        color_range=_AVCOL_RANGE_JPEG if context.color_range == _AVCOL_RANGE_JPEG else _AVCOL_RANGE_MPEG,
        primaries=context.color_primaries,
        trc=context.color_trc,
        input_is_rgb=context.format is not None and context.format.is_rgb,
    )


def _open_input(src: Path) -> av.container.InputContainer:
    """Opens a video file for reading, with a decodable video stream."""
    if src.is_dir():
        raise VideoError(f"{src} is a folder, not a video file; pass a video file.")
    if not src.exists():
        raise VideoError(f"Video file {src} does not exist; check the path.")
    try:
        container = av.open(str(src), mode="r")
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoError(
            f"{src} is not a readable video ({_one_line(error)}); pass a video file such as .mp4, .mov or .mkv."
        ) from None
    if not container.streams.video:
        kinds = ", ".join(stream.type for stream in container.streams) or "nothing"
        container.close()
        raise VideoError(f"{src} has no video stream (it holds {kinds}); pass a file with video.")
    video_in = container.streams.video[0]
    if video_in.codec_context is None or not video_in.codec_context.width:
        container.close()
        raise VideoError(f"{src} has a video stream this FFmpeg cannot decode; convert it to H.264 first.")
    video_in.thread_type = "AUTO"  # frame and slice threads
    return container


def _describe(container: av.container.InputContainer, src: Path) -> VideoInfo:
    video_in = container.streams.video[0]
    frame_rate = _frame_rate(video_in)
    if video_in.duration is not None and video_in.time_base:
        duration = float(video_in.duration * video_in.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = None
    if video_in.frames:
        frames = video_in.frames
    elif duration is not None:
        frames = round(duration * frame_rate)
    else:
        frames = None
    return VideoInfo(
        path=src,
        size=(video_in.codec_context.height, video_in.codec_context.width),
        frame_rate=frame_rate,
        frames=frames,
        duration=duration,
        codec=video_in.codec_context.name,
        other_streams=tuple(_stream_name(stream) for stream in container.streams if stream.index != video_in.index),
    )


def _frame_rate(video_in: av.video.stream.VideoStream) -> Fraction:
    return video_in.average_rate or video_in.guessed_rate or _FALLBACK_FRAME_RATE


def _stream_name(stream: av.stream.Stream) -> str:
    context = stream.codec_context
    name = f"{stream.type} {context.name if context is not None else 'unknown'}"
    if stream.type == "audio":
        name += f" {context.sample_rate} Hz"
    language = stream.metadata.get("language")
    return f"{name} ({language})" if language else name


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size is {batch_size}; pass a positive number of frames.")


def _check_encoder(codec: str, pix_fmt: str, dst: Path) -> None:
    try:
        encoder = av.Codec(codec, "w")
    except ValueError:
        available = ", ".join(name for name in _SUGGESTED_ENCODERS if name in av.codecs_available)
        raise VideoError(f"Unknown video encoder {codec!r} for {dst}; use one of {available}.") from None
    if encoder.type != "video":
        raise VideoError(
            f"{codec!r} encodes {encoder.type}, not video, for {dst}; use a video encoder such as libx264."
        )
    formats = [pixel_format.name for pixel_format in encoder.video_formats or ()]
    if formats and pix_fmt not in formats:
        raise VideoError(
            f"Encoder {codec} cannot write pixel format {pix_fmt!r} for {dst}; use one of {', '.join(formats)}."
        )


def _check_output_path(src: Path, dst: Path) -> None:
    if not is_video_path(dst):
        raise VideoError(
            f"Cannot write {dst}: {dst.suffix or 'no suffix'} is not a video file type; "
            f"end the name with one of {', '.join(VIDEO_EXTENSIONS)}."
        )
    folder = dst.parent
    if not folder.is_dir():
        raise VideoError(f"Cannot write {dst}: folder {folder} does not exist; create it first.")
    if dst.is_dir():
        raise VideoError(f"Cannot write {dst}: it is a folder; pass a file name.")


@contextlib.contextmanager
def _writing(dst: Path, codec: str) -> Iterator[None]:
    """Turns FFmpeg's encoding and muxing errors into one-sentence `VideoError`s."""
    try:
        yield
    except av.FFmpegError as error:
        raise VideoError(
            f"Writing {dst} with {codec} failed ({_one_line(error)}); check the disk space and the codec options."
        ) from None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
