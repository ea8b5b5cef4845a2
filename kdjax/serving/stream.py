"""Live streams: raw RGB24 frames of one size on a pipe in, sharpened frames out (`kdjax stream`).

    ffmpeg -i in.mp4 -f rawvideo -pix_fmt rgb24 - \
      | kdjax stream --model=videocall --size=1280x720 \
      | ffmpeg -f rawvideo -pix_fmt rgb24 -s 1280x720 -r 30 -i - out.mp4

`sharpen_stream` reads frames of ``height * width * 3`` bytes from a binary file (standard
input), sharpens each with `Sharpener.sharpen` (compiled once: every frame has the same shape)
and writes it at once, flushed, to another (standard output), so frames come out as they go
in. Memory is one frame in and one frame out whatever the length of the stream. Frames per
second go to standard error (tqdm). A stream that ends inside a frame raises `StreamError`
after the whole frames before it were written; a reader that closes the output ends the stream
quietly (`StreamReport.output_closed`).
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:
    from kdjax.serving.sharpener import Sharpener


class StreamError(ValueError):
    """A stream that is not whole RGB24 frames of the given size; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class StreamReport:
    """What `sharpen_stream` did: frames written, sizes as (height, width), wall-clock seconds."""

    frames: int
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    seconds: float
    output_closed: bool

    def summary(self) -> str:
        (height, width), (out_height, out_width) = self.input_size, self.output_size
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        closed = "; the reader closed the output" if self.output_closed else ""
        return (
            f"Streamed {self.frames} frames of {width}x{height} -> {out_width}x{out_height} in {self.seconds:.1f} s "
            f"({rate:.1f} frames/s){closed}."
        )


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> (720, 1280), (height, width); `StreamError` for anything else."""
    match = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", text.strip().lower())
    if match is None:
        raise StreamError(f"--size={text} is not WIDTHxHEIGHT in pixels; pass the stream's frame size, e.g. --size=1280x720.")
    return int(match.group(2)), int(match.group(1))


def sharpen_stream(
    sharpener: Sharpener, size: tuple[int, int], source: BinaryIO, sink: BinaryIO, *, progress: bool = True
) -> StreamReport:
    """Sharpens RGB24 frames of `size` (height, width) read from `source` into `sink`, one by one.

    Raises:
      StreamError: `source` ended inside a frame (the frames before it are written).
    """
    height, width = size
    frame_bytes = height * width * 3
    output_size = (height * sharpener.scale, width * sharpener.scale)
    start = time.perf_counter()
    frames, closed = 0, False
    with tqdm(desc="stream", unit="frame", disable=not progress, file=sys.stderr, dynamic_ncols=True, delay=1) as bar:
        while data := source.read(frame_bytes):
            if len(data) < frame_bytes:
                raise StreamError(
                    f"Standard input ended {len(data)} bytes into frame {frames + 1}, which needs {frame_bytes} "
                    f"({width}x{height} RGB24); check that --size matches the stream and that it is sent with "
                    "-f rawvideo -pix_fmt rgb24."
                )
            output = sharpener.sharpen(np.frombuffer(data, np.uint8).reshape(height, width, 3))
            try:
                sink.write(output.tobytes())
                sink.flush()
            except BrokenPipeError:
                closed = True
                break
            frames += 1
            bar.update()
    return StreamReport(frames, size, output_size, time.perf_counter() - start, closed)
