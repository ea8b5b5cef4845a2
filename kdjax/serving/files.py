"""Sharpening files and folders: which outputs an input maps to, and writing them.

`sharpen_paths` is what `kdjax sharpen` runs: an image file, or every image under a folder
(mirrored under the output folder), never overwriting an input: outputs are compared with
the inputs by file identity, so a link to an input or another spelling of its path is refused
too, whatever `overwrite` says.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from kdjax.images import IMAGE_EXTENSIONS, ImageReadError, read_image, write_image
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
    return jobs


def sharpen_paths(
    sharpener: Sharpener, input_path: str | Path, output_path: str | Path, *, overwrite: bool = False
) -> list[Path]:
    """Sharpens an image file, or every image under a folder (recursively), into PNG files.

    A folder's structure and file names are mirrored under `output_path` (suffix `.png`).
    A single file goes to `output_path` if it is an image file name, else into that folder.
    Unreadable images in a folder and existing outputs (unless `overwrite`) are skipped with
    a warning; for a single file they are errors. An input is never overwritten.

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
            image = read_image(src)
        except ImageReadError as error:
            if single:
                raise
            logger.warning("Skipping %s: %s", src, error)
            continue
        write_image(dst, sharpener.sharpen(image))
        written.append(dst)
    return written
