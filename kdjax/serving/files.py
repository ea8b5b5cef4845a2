"""Sharpening files and folders: which outputs the inputs map to, and writing them faithfully.

`plan_paths` turns a command line's inputs (files, folders and glob patterns, any number) and its
output into (input, output) jobs, without JAX, so that `kdjax sharpen` reports a missing input or
a wrong output before it loads a model; `sharpen_planned` runs them and `sharpen_paths` does both.
One image or video file goes to the output file or into the output folder; a folder is mirrored
under the output folder (several inputs: each under its own name there). Images become PNG files
(`IMAGE_EXTENSIONS`); videos (`video.VIDEO_EXTENSIONS`) go through `Sharpener.sharpen_video` to a
video of the same container where it holds H.264 (`VIDEO_OUTPUT_SUFFIXES`), else to an .mp4.

An input is never overwritten: outputs are compared with the inputs by file identity, so a link
to an input or another spelling of its path is refused too, whatever `overwrite` says; outputs
follow `kdjax.outputs` (never inside a model folder, written under a temporary name renamed when
complete). Image
files are read and written with `kdjax.images.read_image_file` and `write_image_file`: the model
sees the upright RGB pixels at up to 16 bits, and the output keeps the input's alpha (resized
with the image by an upscaling model), bit depth (or the one asked for), ICC profile and EXIF.

Within a batch nothing is logged: files skipped (an existing output, a file that is neither an
image nor a video) and files that failed (unreadable) are counted in the `SharpenReport`, whose
`summary` names each with its reason after the progress bar; for a single input file they are
errors.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from kdjax import outputs
from kdjax.images import (
    IMAGE_EXTENSIONS,
    ImageMetadata,
    ImageReadError,
    output_bit_depth,
    quantize,
    read_image_file,
    write_image_file,
)
from kdjax.imresize import imresize

if TYPE_CHECKING:
    from kdjax.serving.sharpener import Sharpener

# Containers a sharpened video keeps (they hold H.264); a video in any other goes to an .mp4.
VIDEO_OUTPUT_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")
# Why a file is skipped (a `SharpenReport.skipped` reason), and how the summary counts it.
OUTPUT_EXISTS = "its output exists (pass --overwrite to replace it)"
NOT_AN_IMAGE_OR_VIDEO = "not an image or video file"
_COUNTED_AS = {OUTPUT_EXISTS: "with an existing output, pass --overwrite", NOT_AN_IMAGE_OR_VIDEO: "not images or videos"}


def _video_extensions() -> tuple[str, ...]:
    # PyAV is imported with the video module, only when a command sees files.
    from kdjax.serving.video import VIDEO_EXTENSIONS  # pylint: disable=import-outside-toplevel

    return VIDEO_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class Job:
    """One input file and the output it is sharpened into; `kind` is "image" or "video"."""

    src: Path
    dst: Path
    kind: str


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `plan_paths` found: the jobs, the files skipped from the start, whether the input
    was one file (whose problems are then errors rather than skips) and whether existing outputs
    are replaced."""

    jobs: list[Job]
    skipped: list[tuple[Path, str]]
    single: bool
    output: Path
    overwrite: bool


@dataclasses.dataclass(frozen=True)
class Written:
    """An output written: sizes are (height, width); `frames` is None for an image."""

    src: Path
    dst: Path
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    frames: int | None
    seconds: float


@dataclasses.dataclass(frozen=True)
class SharpenReport:
    """What `sharpen_paths` did: outputs written, inputs skipped and failed (with their reasons)."""

    written: list[Written]
    skipped: list[tuple[Path, str]]
    failed: list[tuple[Path, str]]
    scale: int
    output: Path
    seconds: float

    @property
    def outputs(self) -> list[Path]:
        return [item.dst for item in self.written]

    def summary(self) -> str:
        """One line per skipped or failed file, then one line for the whole run."""
        lines = [f"skipped {src}: {reason}" for src, reason in self.skipped]
        lines += [f"failed {src}: {reason.rstrip('.')}" for src, reason in self.failed]
        if len(self.written) == 1 and not self.skipped and not self.failed:
            item = self.written[0]
            sizes = f"{_size(item.input_size)} -> {_size(item.output_size)}, x{self.scale}"
            if item.frames is None:
                lines.append(f"Wrote {item.dst} ({sizes}) in {self.seconds:.1f} s.")
            else:
                lines.append(
                    f"Wrote {item.dst} ({item.frames} frames, {sizes}) in {self.seconds:.1f} s "
                    f"({item.frames / item.seconds:.1f} frames/s)."
                )
            return "\n".join(lines)
        videos = sum(item.frames is not None for item in self.written)
        counts = [_count(n, noun) for n, noun in ((len(self.written) - videos, "image"), (videos, "video")) if n]
        line = f"Wrote {' and '.join(counts) or '0 files'} (x{self.scale}) under {self.output} in {self.seconds:.1f} s"
        if self.skipped:
            reasons: dict[str, int] = {}
            for _, reason in self.skipped:
                reasons[_COUNTED_AS[reason]] = reasons.get(_COUNTED_AS[reason], 0) + 1
            line += f"; skipped {len(self.skipped)} ({'; '.join(f'{n} {r}' for r, n in reasons.items())})"
        if self.failed:
            line += f"; {len(self.failed)} failed"
        lines.append(line + ".")
        return "\n".join(lines)


def _size(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _file_id(path: Path) -> tuple[int, int]:
    """An existing file's or folder's identity (device, inode), the same for every path to it."""
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def _expand(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The input paths, glob patterns (``*``, ``?``, ``[...]``, ``**``) expanded, duplicates dropped."""
    paths: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        if not os.path.exists(text) and any(char in text for char in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise FileNotFoundError(f"Input pattern {text} matches no file; check the pattern or the folder.")
            paths += [Path(match) for match in matches]
        elif not os.path.exists(text):
            raise FileNotFoundError(
                f"Input {text} does not exist; pass image or video files, folders or a pattern such as photos/*.jpg."
            )
        else:
            paths.append(Path(text))
    unique: dict[tuple[int, int], Path] = {}
    for path in paths:
        unique.setdefault(_file_id(path), path)
    return list(unique.values())


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return "video" if suffix in _video_extensions() else None


def _output_name(src: Path, kind: str) -> str:
    if kind == "image":
        return f"{src.stem}.png"
    return src.name if src.suffix.lower() in VIDEO_OUTPUT_SUFFIXES else f"{src.stem}.mp4"


def _folder_jobs(source: Path, target: Path, skipped: list[tuple[Path, str]]) -> list[Job]:
    """Jobs for every image and video under `source`, mirrored under `target`; other files are skipped."""
    if target.exists() and _file_id(target) == _file_id(source):
        raise ValueError(f"Output folder {target} is the input folder; choose another output folder so inputs are kept.")
    skip = target.resolve()  # An output folder nested in the input is not read back as input.
    jobs = []
    for path in sorted(source.rglob("*")):
        if not path.is_file() or _is_within(path.resolve(), skip):
            continue
        kind = _kind(path)
        if kind is None:
            skipped.append((path, NOT_AN_IMAGE_OR_VIDEO))
        else:
            jobs.append(Job(path, target / path.relative_to(source).parent / _output_name(path, kind), kind))
    return jobs


def _single_file_job(source: Path, target: Path) -> Job:
    kind = "video" if source.suffix.lower() in _video_extensions() else "image"
    if target.is_dir() or (not target.exists() and not target.suffix):
        return Job(source, target / _output_name(source, kind), kind)
    if kind == "video" or target.suffix.lower() in IMAGE_EXTENSIONS:
        return Job(source, target, kind)  # a video's output suffix is checked by the video writer
    raise ValueError(f"Output {target} is neither a folder nor an image file name; end it in .png or pass a folder.")


def _output_exists(dst: Path) -> ValueError:
    return ValueError(
        f"Output {dst} already exists; delete it, choose another output, or pass --overwrite (overwrite=True from Python)."
    )


def plan_paths(
    inputs: str | os.PathLike | Sequence[str | os.PathLike], output_path: str | os.PathLike, *, overwrite: bool = False
) -> Plan:
    """The jobs for `inputs` (files, folders or glob patterns) into `output_path`; imports no JAX.

    Raises:
      FileNotFoundError: an input or pattern names nothing, or the folders hold no image or video.
      ValueError: the output cannot hold the inputs (a file name for a folder or several inputs),
        an output would overwrite an input, two inputs would be written to one output, or the
        output of a single input file exists and `overwrite` is False.
    """
    sources = _expand([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)
    target = Path(output_path)
    single = len(sources) == 1 and sources[0].is_file()
    skipped: list[tuple[Path, str]] = []
    if single:
        jobs = [_single_file_job(sources[0], target)]
        if jobs[0].dst.exists() and not overwrite and not jobs[0].dst.is_dir():
            raise _output_exists(jobs[0].dst)
    else:
        what = f"input {sources[0]} is a folder" if len(sources) == 1 else f"there are {len(sources)} inputs"
        if target.exists() and not target.is_dir():
            raise ValueError(f"Output {target} is a file but {what}; pass an output folder.")
        if not target.exists() and target.suffix.lower() in (*IMAGE_EXTENSIONS, *_video_extensions()):
            raise ValueError(
                f"Output {target} is a file name but {what}; pass an output folder, e.g. --output={target.with_suffix('')}."
            )
        jobs = []
        for source in sources:
            if source.is_dir():
                jobs += _folder_jobs(source, target if len(sources) == 1 else target / source.name, skipped)
            elif (kind := _kind(source)) is None:
                skipped.append((source, NOT_AN_IMAGE_OR_VIDEO))
            else:
                jobs.append(Job(source, target / _output_name(source, kind), kind))
        if not jobs:
            where = f"under {sources[0]}" if len(sources) == 1 else "among the inputs"
            raise FileNotFoundError(
                f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) or videos found {where}; check the input."
            )
    # Inputs are compared by file identity, not by name: an output that is a symlink, a hard
    # link or another spelling (`..`) of an input is the input.
    inputs_by_id = {_file_id(job.src): job.src for job in jobs}
    written_by: dict[Path, Path] = {}
    for job in jobs:
        overwritten = inputs_by_id.get(_file_id(job.dst)) if job.dst.exists() else None
        if overwritten is not None:
            raise ValueError(f"Output {job.dst} would overwrite input {overwritten}; choose another output path.")
        resolved = job.dst.resolve()
        if resolved in written_by:
            raise ValueError(f"Inputs {written_by[resolved]} and {job.src} would both be written to {job.dst}; rename one.")
        written_by[resolved] = job.src
        # Released and exported model folders, an output under a file or in a folder kdjax cannot
        # write: refused before any work (an existing output is the caller's to skip or replace).
        outputs.check_output(job.dst, overwrite=True)
    return Plan(jobs, skipped, single, target, overwrite)


def _resized_alpha(metadata: ImageMetadata, shape: tuple[int, int]) -> ImageMetadata:
    """`metadata` with its alpha resized to `shape` (height, width), as an upscaled image needs.

    MATLAB-style bicubic (`kdjax.imresize`, how the benchmarks' images are resized), computed in
    float64, clipped and rounded to the alpha's dtype.
    """
    alpha = metadata.alpha
    if alpha is None or alpha.shape == shape:
        return metadata
    resized = imresize(alpha.astype(np.float64), output_shape=shape)
    maximum = np.iinfo(alpha.dtype).max
    return dataclasses.replace(metadata, alpha=np.clip(np.round(resized), 0, maximum).astype(alpha.dtype))


def _sharpen_image(sharpener: Sharpener, job: Job, bit_depth: int | str) -> Written:
    start = time.perf_counter()
    pixels, metadata = read_image_file(job.src)
    if output_bit_depth(job.dst, bit_depth, metadata.bit_depth) == 16:
        # An 8-bit input written as 16 bits is sharpened as 16-bit values, so the output has
        # the model's precision rather than 8 bits padded.
        pixels = quantize(pixels, np.uint16)
    output = sharpener.sharpen(pixels)
    write_image_file(job.dst, output, _resized_alpha(metadata, output.shape[:2]), bit_depth=bit_depth)
    return Written(job.src, job.dst, pixels.shape[:2], output.shape[:2], None, time.perf_counter() - start)


def _sharpen_video(sharpener: Sharpener, job: Job, progress: bool, overwrite: bool) -> Written:
    job.dst.parent.mkdir(parents=True, exist_ok=True)  # the video writer wants its folder
    report = sharpener.sharpen_video(job.src, job.dst, progress=progress, overwrite=overwrite)
    return Written(job.src, job.dst, report.input_size, report.output_size, report.frames, report.seconds)


def sharpen_planned(
    sharpener: Sharpener, plan: Plan, *, bit_depth: int | str = "auto", progress: bool = True
) -> SharpenReport:
    """Runs the jobs of `plan_paths` (see `sharpen_paths`)."""
    from kdjax.serving.video import VideoError  # pylint: disable=import-outside-toplevel

    start = time.perf_counter()
    written, skipped, failed = [], list(plan.skipped), []
    for job in tqdm(plan.jobs, desc="sharpen", unit="file", disable=plan.single or not progress, dynamic_ncols=True):
        if job.dst.exists() and not plan.overwrite:
            if plan.single:
                raise _output_exists(job.dst)
            skipped.append((job.src, OUTPUT_EXISTS))
            continue
        try:
            if job.kind == "image":
                written.append(_sharpen_image(sharpener, job, bit_depth))
            else:
                written.append(_sharpen_video(sharpener, job, progress and plan.single, plan.overwrite))
        except (ImageReadError, VideoError) as error:
            if plan.single:
                raise
            failed.append((job.src, str(error)))
    return SharpenReport(written, skipped, failed, sharpener.scale, plan.output, time.perf_counter() - start)


def sharpen_paths(
    sharpener: Sharpener,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_path: str | os.PathLike,
    *,
    overwrite: bool = False,
    bit_depth: int | str = "auto",
    progress: bool = True,
) -> SharpenReport:
    """Sharpens image and video files, folders of them (recursively) and glob patterns.

    One input file goes to `output_path` if it is a file name of its kind, else into that
    folder. A folder's structure and file names are mirrored under `output_path` (images as
    `.png`, videos as in the module docstring); with several inputs each goes under its own name
    there. Within a batch, files that are neither images nor videos and existing outputs (unless
    `overwrite`) are skipped, unreadable files fail, and the rest go on; for a single file they
    are errors. An input is never overwritten.

    Outputs keep the input's alpha, ICC profile and EXIF (orientation 1: the pixels are
    written upright) where their format holds them. `bit_depth` is "auto" (the input's: 16
    for 16-bit PNG and TIFF where the output format holds it, else 8), 8 or 16; the model runs
    on 16-bit values whenever the input or the output has 16 bits.

    Returns:
      A `SharpenReport` (`outputs`: the files written; `summary()`: what a command prints).
    """
    plan = plan_paths(inputs, output_path, overwrite=overwrite)
    return sharpen_planned(sharpener, plan, bit_depth=bit_depth, progress=progress)
