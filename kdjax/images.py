"""Image files and arrays: reading, writing, RGB uint8 conversion, comparison grids, and the
one pair of helpers between 8-bit values and unit floats.

Every image on the host is an ``np.uint8`` array of shape (H, W, 3), RGB. This module turns
whatever a file or a user holds (grayscale, alpha, palette, 16-bit, float) into that form, and
reports unusable input with one sentence naming the file. Models see float32 in [0, 1]:
``to_unit_float`` and ``to_uint8`` convert both ways, for numpy and JAX arrays alike (they
only use array methods, so they trace inside ``jax.jit`` and this module never imports JAX).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "ImageWriteError",
    "image_grid",
    "image_size",
    "read_image",
    "to_rgb_uint8",
    "to_uint8",
    "to_unit_float",
    "write_image",
]

# Lower-case file suffixes treated as images when scanning folders.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_UINT16_TO_UINT8 = 255.0 / 65535.0
# Float images above this are almost certainly on a 0..255 scale rather than 0..1; values a
# little above 1 are legitimate (model outputs are not clipped) and get clipped.
_MAX_PLAUSIBLE_UNIT_FLOAT = 2.0
_GRID_BACKGROUND = 255
_GRID_LABEL_SIZE = 14


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message names the file and the problem."""


class ImageWriteError(ValueError):
    """An image that cannot be written; the message names the file and the problem."""


def to_unit_float(images):
    """Integer images (uint8, uint16) to float32 in [0, 1]; float images to float32, unchanged.

    Works on numpy and JAX arrays (inside ``jax.jit`` too).
    """
    if np.issubdtype(images.dtype, np.integer):
        return images.astype(np.float32) / float(np.iinfo(images.dtype).max)
    return images.astype(np.float32)


def to_uint8(images):
    """Float images in [0, 1] to uint8: clipped, scaled by 255 and rounded to nearest.

    The 8-bit quantization of the published metrics and of every image kdjax writes; works on
    numpy and JAX arrays (inside ``jax.jit`` too).
    """
    return (images.clip(0.0, 1.0) * 255.0).round().astype(np.uint8)


def to_rgb_uint8(array: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Converts a user's image array to uint8 (H, W, 3) RGB.

    Accepted shapes are (H, W), (H, W, 1), (H, W, 3) and (H, W, 4); gray is replicated to RGB and
    alpha is dropped. Accepted values are uint8 (kept), uint16 (scaled by 255/65535 and rounded),
    bool, and float taken as [0, 1] (clipped, scaled by 255 and rounded). Floats above 2 are
    rejected, as they are almost certainly on a 0..255 scale, and so are NaN and +-inf.

    Args:
      array: the image.
      name: how error messages call the array (e.g. its file name).

    Returns:
      A C-contiguous uint8 (H, W, 3) array (the input itself when it already is one).

    Raises:
      ValueError: for other shapes or dtypes, NaN or infinite floats, or floats on a 0..255 scale.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) == 0:
        raise ValueError(
            f"{name} has shape {array.shape}; pass a non-empty (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image."
        )
    array = array[:, :, :3] if array.shape[2] == 4 else array
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = np.round(array * _UINT16_TO_UINT8).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            kind = "NaN" if np.isnan(array).any() else "infinite"
            raise ValueError(f"{name} contains {kind} values; pass finite floats in [0, 1].")
        if array.max() > _MAX_PLAUSIBLE_UNIT_FLOAT:
            raise ValueError(
                f"{name} is a float image with values up to {float(array.max()):.1f}; floats must be in "
                "[0, 1], so divide by 255 or pass a uint8 array."
            )
        array = to_uint8(array)
    else:
        raise ValueError(f"{name} has dtype {array.dtype}; pass uint8, uint16, or float in [0, 1].")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def _pil_to_rgb_uint8(image: Image.Image, name: str) -> np.ndarray:
    """Converts a decoded PIL image of any mode to uint8 RGB (alpha dropped, like OpenCV's imread)."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale: Pillow's own convert("L") clips instead of rescaling.
        values = np.asarray(image).astype(np.float64)
        return to_rgb_uint8(np.round(np.clip(values, 0, 65535) * _UINT16_TO_UINT8).astype(np.uint8), name=name)
    if image.mode == "F":
        values = np.asarray(image)
        if not (np.isfinite(values).all() and 0.0 <= values.min() and values.max() <= 1.0):
            raise ImageReadError(f"{name} holds floating-point pixels outside [0, 1]; convert it to an 8- or 16-bit image.")
        return to_rgb_uint8(values, name=name)
    if image.mode == "P" and "transparency" in image.info:
        # Pillow asks for palette transparency to go through RGBA before RGB.
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as uint8 (H, W, 3) RGB.

    Grayscale, palette, 16-bit and CMYK images are converted to 8-bit RGB (16-bit values are
    scaled by 255/65535), alpha channels are dropped, the EXIF orientation is applied, and of
    multi-frame files (GIF, TIFF) the first frame is read.

    Raises:
      ImageReadError: the file is missing, not an image, truncated, or otherwise undecodable.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so truncation surfaces here rather than later
            ImageOps.exif_transpose(image, in_place=True)
            return _pil_to_rgb_uint8(image, name=str(path))
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"Image file {path} does not exist; check the path.") from None
    except UnidentifiedImageError:
        raise ImageReadError(
            f"{path} is not a readable image (expected one of {', '.join(IMAGE_EXTENSIONS)}); remove or replace it."
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        detail = " ".join(str(error).split())  # keep the message on one line
        raise ImageReadError(f"Image file {path} is truncated or corrupt ({detail}); remove or replace it.") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file from its header, without decoding the pixels.

    Raises:
      ImageReadError: the file is missing or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            # Pillow decodes a whole PNG to look for EXIF after the pixels; those are rare.
            has_header_exif = image.format != "PNG" or "exif" in image.info
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1) if has_header_exif else 1
    except FileNotFoundError:
        raise ImageReadError(f"Image file {path} does not exist; check the path.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageReadError(
            f"{path} is not a readable image (expected one of {', '.join(IMAGE_EXTENSIONS)}); remove or replace it."
        ) from None
    # EXIF orientations 5..8 are transposed, so read_image returns them with swapped sides.
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes an image (any array ``to_rgb_uint8`` accepts) to ``path``; the suffix picks the format.

    Missing parent folders are created. JPEG is written at quality 95.

    Raises:
      ImageWriteError: unknown suffix, or the file cannot be written.
      ValueError: the array is not an image.
    """
    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ImageWriteError(
            f"Cannot write {path}: its suffix is not one of {', '.join(IMAGE_EXTENSIONS)}; choose e.g. '.png'."
        )
    pil_image = Image.fromarray(to_rgb_uint8(image, name=f"the image for {path}"))
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pil_image.save(path, **options)
    except OSError as error:
        raise ImageWriteError(
            f"Cannot write {path} ({error.strerror or error}); choose a writable location."
        ) from None


def image_grid(
    rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], *, padding: int = 4
) -> np.ndarray:
    """Lays images out in a labelled grid, e.g. columns input | teacher | student | ground truth.

    Every cell is as wide as the widest image in its column and as tall as the tallest in its
    row; smaller images sit in the top-left corner on a white background. Column labels are
    drawn above the first row.

    Args:
      rows: rows of images, each row one image per column (any arrays ``to_rgb_uint8`` accepts).
      labels: one label per column.
      padding: white pixels between cells and around the grid.

    Returns:
      The grid as uint8 (H, W, 3), ready for ``write_image``.

    Raises:
      ValueError: no rows, or a row whose length differs from the number of labels.
    """
    if not rows:
        raise ValueError("image_grid got no rows; pass at least one row of images.")
    for index, row in enumerate(rows):
        if len(row) != len(labels):
            raise ValueError(
                f"image_grid row {index} has {len(row)} images but there are {len(labels)} labels; "
                "give one label per column."
            )
    cells = [[to_rgb_uint8(image, name=f"grid cell ({r}, {c})") for c, image in enumerate(row)] for r, row in enumerate(rows)]
    column_widths = [max(row[c].shape[1] for row in cells) for c in range(len(labels))]
    row_heights = [max(image.shape[0] for image in row) for row in cells]
    font = ImageFont.load_default(size=_GRID_LABEL_SIZE)
    label_height = _GRID_LABEL_SIZE + 2 * padding
    height = label_height + sum(row_heights) + padding * (len(rows) + 1)
    width = sum(column_widths) + padding * (len(labels) + 1)
    grid = np.full((height, width, 3), _GRID_BACKGROUND, np.uint8)
    column_lefts = np.cumsum([padding] + [w + padding for w in column_widths[:-1]])
    top = label_height + padding
    for row, row_height in zip(cells, row_heights):
        for image, left in zip(row, column_lefts):
            grid[top : top + image.shape[0], left : left + image.shape[1]] = image
        top += row_height + padding
    canvas = Image.fromarray(grid)
    draw = ImageDraw.Draw(canvas)
    for label, left in zip(labels, column_lefts):
        draw.text((int(left), padding), str(label), fill=(0, 0, 0), font=font)
    return np.asarray(canvas).copy()
