"""Sharpening files and folders: which outputs an input maps to, and writing them faithfully.

`sharpen_paths` is what `kdjax sharpen` runs: an image file, or every image under a folder
(mirrored under the output folder), never overwriting an input: outputs are compared with
the inputs by file identity, so a link to an input or another spelling of its path is refused
too, whatever `overwrite` says; outputs follow `kdjax.outputs` (never inside a model folder,
written under a temporary name renamed when complete). Files are read and written with
`kdjax.images.read_image_file` and `write_image_file`: the model sees the upright RGB pixels at
up to 16 bits, and the output keeps the input's alpha (resized with the image by an upscaling
model), bit depth (or the one asked for), ICC profile and EXIF.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

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
from kdjax.serving.sharpener import Sharpener

logger = logging.getLogger(__name__)


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _file_id(path: Path) -> tuple[int, int]:
    """An existing file's or folder's identity (device, inode), the same for every path to it."""
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def _plan_outputs(source: Path, target: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs for a file or a folder of images; refuses to overwrite inputs."""
    if not source.exists():
        raise FileNotFoundError(f"Input {source} does not exist; pass an image file or a folder of images.")
    if source.is_file():
        if target.is_dir() or (not target.exists() and not target.suffix):
            jobs = [(source, target / f"{source.stem}.png")]
        elif target.suffix.lower() in IMAGE_EXTENSIONS:
            jobs = [(source, target)]
        else:
            raise ValueError(
                f"Output {target} is neither a folder nor an image file name; end it in .png or pass a folder."
            )
    else:
        if target.exists() and not target.is_dir():
            raise ValueError(f"Output {target} is a file but input {source} is a folder; pass an output folder.")
        if target.exists() and _file_id(target) == _file_id(source):
            raise ValueError(
                f"Output folder {target} is the input folder; choose another output folder so inputs are kept."
            )
        skip = target.resolve()  # An output folder nested in the input is not read back as input.
        inputs = [
            path
            for path in sorted(source.rglob("*"))
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not _is_within(path.resolve(), skip)
        ]
        if not inputs:
            raise FileNotFoundError(
                f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {source}; check the input folder."
            )
        jobs = [(path, target / path.relative_to(source).with_suffix(".png")) for path in inputs]
    # Inputs are compared by file identity, not by name: an output that is a symlink, a hard
    # link or another spelling (`..`) of an input is the input.
    inputs_by_id = {_file_id(src): src for src, _ in jobs}
    written_by: dict[Path, Path] = {}
    for src, dst in jobs:
        overwritten = inputs_by_id.get(_file_id(dst)) if dst.exists() else None
        if overwritten is not None:
            raise ValueError(f"Output {dst} would overwrite input {overwritten}; choose another output path.")
        resolved = dst.resolve()
        if resolved in written_by:
            raise ValueError(f"Inputs {written_by[resolved]} and {src} would both be written to {dst}; rename one.")
        written_by[resolved] = src
        # Released and exported model folders, an output under a file or in a folder kdjax cannot
        # write: refused before any work (an existing output is the caller's to skip or replace).
        outputs.check_output(dst, overwrite=True)
    return jobs


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


def sharpen_paths(
    sharpener: Sharpener,
    input_path: str | Path,
    output_path: str | Path,
    *,
    overwrite: bool = False,
    bit_depth: int | str = "auto",
) -> list[Path]:
    """Sharpens an image file, or every image under a folder (recursively), into PNG files.

    A folder's structure and file names are mirrored under `output_path` (suffix `.png`).
    A single file goes to `output_path` if it is an image file name, else into that folder.
    Unreadable images in a folder and existing outputs (unless `overwrite`) are skipped with
    a warning; for a single file they are errors. An input is never overwritten.

    Outputs keep the input's alpha, ICC profile and EXIF (orientation 1: the pixels are
    written upright) where their format holds them. `bit_depth` is "auto" (the input's: 16
    for 16-bit PNG and TIFF where the output format holds it, else 8), 8 or 16; the model runs
    on 16-bit values whenever the input or the output has 16 bits.

    Returns:
      The output files written.
    """
    source = Path(input_path)
    jobs = _plan_outputs(source, Path(output_path))
    single = source.is_file()
    written = []
    for src, dst in tqdm(jobs, desc="sharpen", unit="image", disable=single):
        if dst.exists() and not overwrite:
            message = f"Output {dst} already exists; delete it, choose another output, or pass --overwrite (overwrite=True from Python)."
            if single:
                raise ValueError(message)
            logger.warning("Skipping %s: %s", src, message)
            continue
        try:
            pixels, metadata = read_image_file(src)
        except ImageReadError as error:
            if single:
                raise
            logger.warning("Skipping %s: %s", src, error)
            continue
        if output_bit_depth(dst, bit_depth, metadata.bit_depth) == 16:
            # An 8-bit input written as 16 bits is sharpened as 16-bit values, so the output has
            # the model's precision rather than 8 bits padded.
            pixels = quantize(pixels, np.uint16)
        output = sharpener.sharpen(pixels)
        write_image_file(dst, output, _resized_alpha(metadata, output.shape[:2]), bit_depth=bit_depth)
        written.append(dst)
    return written
