"""Image files and arrays: reading, writing, RGB conversion, comparison grids, and the helpers
between integer values and unit floats.

Every image on the host is an (H, W, 3) RGB array, ``np.uint8`` (what training, evaluation
and grids use) or ``np.uint16`` (16-bit files on their way through the model). This module
turns whatever a file or a user holds (grayscale, alpha, palette, 16-bit, float) into that
form, and reports unusable input with one sentence naming the file. Models see float32 in
[0, 1]: ``to_unit_float`` and ``quantize`` (``to_uint8``) convert both ways, for numpy and
JAX arrays alike (they only use array methods, so they trace inside ``jax.jit`` and this
module never imports JAX).

Two ways to read and write files:

* ``read_image`` / ``write_image``: 8-bit RGB only (alpha dropped, 16 bits scaled to 8,
  metadata not kept), for datasets and grids.
* ``read_image_file`` / ``write_image_file``: faithful, for sharpening photos. The pixels come
  at the file's bit depth (16-bit PNG and TIFF stay 16-bit: Pillow holds 16-bit grayscale
  only, so 16-bit colour PNGs are decoded by PyAV's FFmpeg and 16-bit colour TIFFs by tifffile,
  both already installed with kdjax), upright (EXIF orientation applied); ``ImageMetadata``
  keeps the alpha channel, the bit depth, the ICC profile and the EXIF block (its orientation
  reset to 1, as the pixels are upright), and the writer puts back what the output format
  holds: alpha in PNG, TIFF, WebP and BMP; 16 bits in PNG and TIFF; ICC in PNG, JPEG, TIFF and
  WebP; EXIF in PNG, JPEG and WebP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from kdjax import outputs

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageMetadata",
    "ImageReadError",
    "ImageWriteError",
    "image_grid",
    "image_size",
    "output_bit_depth",
    "quantize",
    "read_image",
    "read_image_file",
    "to_rgb",
    "to_rgb_uint8",
    "to_uint8",
    "to_unit_float",
    "write_image",
    "write_image_file",
]

# Lower-case file suffixes treated as images when scanning folders.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_UINT16_TO_UINT8 = 255.0 / 65535.0
_DTYPE_OF_BIT_DEPTH = {8: np.uint8, 16: np.uint16}
# Suffixes whose formats hold 16 bits per sample, and those that cannot hold an alpha channel.
_16_BIT_EXTENSIONS = (".png", ".tif", ".tiff")
_OPAQUE_EXTENSIONS = (".jpg", ".jpeg")
_TIFF_EXTENSIONS = (".tif", ".tiff")
# Formats whose files Pillow writes the EXIF block into (TIFF stores its tags differently).
_EXIF_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
_EXIF_PREFIX = b"Exif\x00\x00"
# How to turn pixels stored with each EXIF orientation upright: the transposes
# ImageOps.exif_transpose applies, on (H, W, C) arrays.
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
# Float images above this are almost certainly on a 0..255 scale rather than 0..1; values a
# little above 1 are legitimate (model outputs are not clipped) and get clipped.
_MAX_PLAUSIBLE_UNIT_FLOAT = 2.0
_GRID_BACKGROUND = 255
_GRID_LABEL_SIZE = 14
# Rows of a 16-bit PNG compressed per call: a few MiB, so memory stays the image and a signal
# (Ctrl-C) is handled between calls rather than after one call over the whole image.
_PNG_ROWS_PER_CHUNK_BYTES = 4 << 20

logger = logging.getLogger(__name__)


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message names the file and the problem."""


class ImageWriteError(ValueError):
    """An image that cannot be written; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True, eq=False)
class ImageMetadata:
    """What `read_image_file` keeps of a file besides its RGB pixels, for `write_image_file`.

    Attributes:
      alpha: (H, W) opacity of the upright pixels, in their dtype (uint8 or uint16), or None
        for a file without transparency.
      bit_depth: 8 or 16, the file's bits per sample.
      icc_profile: the embedded ICC colour profile, or None.
      exif: the EXIF block as Pillow writes it (``b"Exif\\0\\0"`` and a TIFF structure), its
        orientation set to 1 since the pixels are upright, or None.
    """

    alpha: np.ndarray | None = None
    bit_depth: int = 8
    icc_profile: bytes | None = None
    exif: bytes | None = None


def to_unit_float(images):
    """Integer images (uint8, uint16) to float32 in [0, 1]; float images to float32, unchanged.

    Works on numpy and JAX arrays (inside ``jax.jit`` too).
    """
    if np.issubdtype(images.dtype, np.integer):
        return images.astype(np.float32) / float(np.iinfo(images.dtype).max)
    return images.astype(np.float32)


def quantize(images, dtype):
    """Images (float in [0, 1], uint8 or uint16) to the integer `dtype`, uint8 or uint16.

    Floats are clipped, scaled by the dtype's maximum and rounded to nearest; integers are
    rescaled between the two ranges the same way (uint8 to uint16 multiplies by 257 exactly)
    and returned as they are when already of `dtype`. Works on numpy and JAX arrays (inside
    ``jax.jit`` too).
    """
    if images.dtype == dtype:
        return images
    if np.issubdtype(images.dtype, np.integer):
        images = to_unit_float(images)
    return (images.clip(0.0, 1.0) * float(np.iinfo(dtype).max)).round().astype(dtype)


def to_uint8(images):
    """Float images in [0, 1] to uint8: clipped, scaled by 255 and rounded to nearest.

    The 8-bit quantization of the published metrics and of every 8-bit image kdjax writes;
    works on numpy and JAX arrays (inside ``jax.jit`` too).
    """
    return quantize(images, np.uint8)


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
    return quantize(to_rgb(array, name=name), np.uint8)


def to_rgb(array: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Like `to_rgb_uint8`, except that uint16 images stay uint16 (H, W, 3): what a model is
    fed at full precision. Every other dtype becomes uint8 as in `to_rgb_uint8`."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) == 0:
        raise ValueError(
            f"{name} has shape {array.shape}; pass a non-empty (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image."
        )
    array = array[:, :, :3] if array.shape[2] == 4 else array
    if array.dtype in (np.uint8, np.uint16):
        pass
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
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


def _unit_float_pixels(image: Image.Image, name: str) -> np.ndarray:
    """The pixels of a floating-point ("F") image, which must lie in [0, 1]."""
    values = np.asarray(image)
    if not (np.isfinite(values).all() and 0.0 <= values.min() and values.max() <= 1.0):
        raise ImageReadError(f"{name} holds floating-point pixels outside [0, 1]; convert it to an 8- or 16-bit image.")
    return values


def _pil_to_rgb_uint8(image: Image.Image, name: str) -> np.ndarray:
    """Converts a decoded PIL image of any mode to uint8 RGB (alpha dropped, like OpenCV's imread)."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale: Pillow's own convert("L") clips instead of rescaling.
        values = np.asarray(image).astype(np.float64)
        return to_rgb_uint8(np.round(np.clip(values, 0, 65535) * _UINT16_TO_UINT8).astype(np.uint8), name=name)
    if image.mode == "F":
        return to_rgb_uint8(_unit_float_pixels(image, name), name=name)
    if image.mode == "P" and "transparency" in image.info:
        # Pillow asks for palette transparency to go through RGBA before RGB.
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


@contextlib.contextmanager
def _open_image(path: Path) -> Iterator[Image.Image]:
    """Opens and decodes `path` with Pillow; any failure, then or inside the block, becomes a
    one-sentence ImageReadError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so truncation surfaces here rather than later
            yield image
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


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as uint8 (H, W, 3) RGB.

    Grayscale, palette, 16-bit and CMYK images are converted to 8-bit RGB (16-bit values are
    scaled by 255/65535), alpha channels are dropped, the EXIF orientation is applied, and of
    multi-frame files (GIF, TIFF) the first frame is read. `read_image_file` keeps all of that.

    Raises:
      ImageReadError: the file is missing, not an image, truncated, or otherwise undecodable.
    """
    path = Path(path)
    with _open_image(path) as image:
        ImageOps.exif_transpose(image, in_place=True)
        return _pil_to_rgb_uint8(image, name=str(path))


def read_image_file(path: str | os.PathLike) -> tuple[np.ndarray, ImageMetadata]:
    """Reads an image file faithfully: upright RGB pixels at the file's bit depth, and its metadata.

    16-bit PNG and TIFF files (colour or grayscale) give uint16 pixels with all 16 bits, every
    other file uint8 (a float TIFF in [0, 1] gives uint16). Grayscale is replicated to RGB; the
    alpha of RGBA, LA and transparent palette images goes to `ImageMetadata.alpha`. The EXIF
    orientation is applied to pixels and alpha alike. Of multi-frame files (animated GIF, WebP
    or PNG, multi-page TIFF) the first frame is read, with a warning.

    Returns:
      `(pixels, metadata)`: (H, W, 3) uint8 or uint16 RGB, and an `ImageMetadata`.

    Raises:
      ImageReadError: the file is missing, not an image, truncated, or otherwise undecodable.
    """
    path = Path(path)
    with _open_image(path) as image:
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            logger.warning(
                "%s has %d frames; only the first is used (convert it to a video, e.g. .mp4, to process every frame).",
                path, frames,
            )
        samples = _samples(path, image)
        exif = image.getexif()
        orientation = exif.get(ExifTags.Base.Orientation, 1)
        if ExifTags.Base.Orientation in exif:
            exif[ExifTags.Base.Orientation] = 1
        # Only formats with an EXIF block proper; a TIFF's "EXIF" is its own tag directory.
        exif_block = exif.tobytes() if "exif" in image.info else None
        icc_profile = image.info.get("icc_profile") or None
    samples = _UPRIGHT.get(orientation, lambda a: a)(samples)
    channels = samples.shape[2]
    rgb = samples[:, :, :3] if channels >= 3 else np.repeat(samples[:, :, :1], 3, axis=2)
    alpha = samples[:, :, -1] if channels in (2, 4) else None
    metadata = ImageMetadata(
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        bit_depth=8 * samples.dtype.itemsize,
        icc_profile=icc_profile,
        exif=exif_block,
    )
    return np.ascontiguousarray(rgb), metadata


def _samples(path: Path, image: Image.Image) -> np.ndarray:
    """A decoded image's samples as stored: uint8 or uint16 (H, W, C), C = 1 (gray), 2 (gray
    and alpha), 3 (RGB) or 4 (RGBA)."""
    if image.format == "PNG":
        with open(path, "rb") as file:
            bit_depth, color_type = file.read(26)[24:26]  # from the IHDR chunk
        if bit_depth == 16 and color_type in (2, 4, 6):
            # Pillow decodes 16-bit colour PNGs to 8 bits; FFmpeg (PyAV, kdjax's video
            # dependency, imported here only) keeps all 16.
            import av  # pylint: disable=import-outside-toplevel

            with av.open(str(path)) as container:
                frame = next(container.decode(video=0))
                return frame.to_ndarray(format="rgb48le" if color_type == 2 else "rgba64le")
    if image.format == "TIFF" and np.max(image.tag_v2.get(258, 8)) == 16 and not image.mode.startswith("I"):
        # Likewise for 16-bit colour TIFFs; tifffile comes with scikit-image.
        import tifffile  # pylint: disable=import-outside-toplevel

        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages[0]
            samples = page.asarray()
            separate = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
            return np.moveaxis(samples, 0, -1) if separate else samples
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)[:, :, None]
    if image.mode == "F":
        return quantize(_unit_float_pixels(image, str(path)), np.uint16)[:, :, None]
    return np.asarray(image.convert("RGBA" if image.has_transparency_data else "RGB"))


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


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ImageWriteError(
            f"Cannot write {path}: its suffix is not one of {', '.join(IMAGE_EXTENSIONS)}; choose e.g. '.png'."
        )


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[Path]:
    """Yields the temporary file to write in place of `path` (`kdjax.outputs.atomic_file`: renamed
    onto `path` when complete; missing parent folders are created); a failure to write becomes an
    ImageWriteError."""
    try:
        with outputs.atomic_file(path) as temporary:
            yield temporary
    except OSError as error:
        raise ImageWriteError(
            f"Cannot write {path} ({error.strerror or error}); choose a writable location."
        ) from None


def _quality_options(path: Path) -> dict[str, int]:
    return {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes an image (any array ``to_rgb_uint8`` accepts) to ``path``; the suffix picks the format.

    Missing parent folders are created. JPEG is written at quality 95. Always 8-bit RGB; see
    `write_image_file` for alpha, 16 bits and metadata.

    Raises:
      ImageWriteError: unknown suffix, or the file cannot be written.
      ValueError: the array is not an image.
    """
    path = Path(path)
    _check_suffix(path)
    pil_image = Image.fromarray(to_rgb_uint8(image, name=f"the image for {path}"))
    with _writing(path) as temporary:
        pil_image.save(temporary, **_quality_options(path))


def output_bit_depth(path: str | os.PathLike, bit_depth: int | str, source_bit_depth: int) -> int:
    """The bit depth, 8 or 16, `write_image_file` writes `path` with.

    Args:
      path: the output file; its suffix picks the format (16 bits: PNG and TIFF only).
      bit_depth: "auto" (the source's where the format holds it, else 8), 8 or 16.
      source_bit_depth: the input file's (`ImageMetadata.bit_depth`).

    Raises:
      ValueError: `bit_depth` is none of those.
      ImageWriteError: 16 bits asked of a format without them.
    """
    if bit_depth not in ("auto", 8, 16):
        raise ValueError(f"bit_depth={bit_depth!r} is not a supported bit depth; pass 'auto', 8 or 16.")
    holds_16_bits = Path(path).suffix.lower() in _16_BIT_EXTENSIONS
    if bit_depth == 16 and not holds_16_bits:
        raise ImageWriteError(f"Cannot write {path} with 16 bits per sample; choose a .png or .tif output, or 8 bits.")
    if bit_depth == "auto":
        return source_bit_depth if holds_16_bits else 8
    return bit_depth


def write_image_file(
    path: str | os.PathLike,
    pixels: np.ndarray,
    metadata: ImageMetadata = ImageMetadata(),
    *,
    bit_depth: int | str = "auto",
) -> None:
    """Writes RGB pixels with `metadata`'s alpha, ICC profile and EXIF; the suffix picks the format.

    What the format holds is written (see the module docstring); an alpha channel for a JPEG is
    an error rather than dropped. Missing parent folders are created; JPEG and WebP are written
    at quality 95, 16-bit TIFF with lossless deflate compression.

    Args:
      path: the output file.
      pixels: (H, W, 3) RGB, any array `to_rgb` accepts: uint16 for 16-bit precision (floats
        are taken at 8 bits, as `to_rgb` does).
      metadata: what `read_image_file` returned for the input; `alpha`, when set, must have
        the pixels' height and width (resize it for an upscaled image).
      bit_depth: "auto", 8 or 16, see `output_bit_depth` (the source is `metadata.bit_depth`).

    Raises:
      ImageWriteError: unknown suffix, alpha for a JPEG, 16 bits for a format without them,
        or the file cannot be written.
      ValueError: the array is not an image, or the alpha does not match it.
    """
    path = Path(path)
    _check_suffix(path)
    suffix = path.suffix.lower()
    dtype = _DTYPE_OF_BIT_DEPTH[output_bit_depth(path, bit_depth, metadata.bit_depth)]
    rgb = quantize(to_rgb(pixels, name=f"the image for {path}"), dtype)
    if metadata.alpha is not None:
        if suffix in _OPAQUE_EXTENSIONS:
            raise ImageWriteError(f"Cannot write {path}: JPEG has no alpha channel for the input's; choose a .png output.")
        if metadata.alpha.shape != rgb.shape[:2]:
            raise ValueError(
                f"The alpha for {path} is {metadata.alpha.shape[1]}x{metadata.alpha.shape[0]} but the image is "
                f"{rgb.shape[1]}x{rgb.shape[0]}; resize the alpha to the image."
            )
        rgb = np.concatenate([rgb, quantize(metadata.alpha, dtype)[:, :, None]], axis=2)
    with _writing(path) as temporary:
        if dtype == np.uint16 and suffix in _TIFF_EXTENSIONS:
            import tifffile  # pylint: disable=import-outside-toplevel  # see _samples

            tifffile.imwrite(
                temporary, rgb, photometric="rgb", extrasamples=("unassalpha",) if rgb.shape[2] == 4 else None,
                iccprofile=metadata.icc_profile, compression="zlib",
            )
        elif dtype == np.uint16:
            with open(temporary, "wb") as file:
                _write_png_16_bit(file, rgb, metadata)
        else:
            options = _quality_options(path)
            if metadata.icc_profile:
                options["icc_profile"] = metadata.icc_profile  # formats without one ignore it
            if metadata.exif and suffix in _EXIF_EXTENSIONS:
                options["exif"] = metadata.exif
            Image.fromarray(rgb).save(temporary, **options)


def _write_png_16_bit(file, samples: np.ndarray, metadata: ImageMetadata) -> None:
    """Writes a 16-bit RGB or RGBA PNG (Pillow cannot write those) with the metadata's ICC and EXIF.

    The image is filtered and compressed a few MiB of rows at a time, each piece written as it
    comes (one IDAT chunk per piece), so no second copy of the image is held and a signal is
    handled within a fraction of a second.
    """
    height, width, channels = samples.shape

    def chunk(kind: bytes, payload: bytes) -> None:
        file.write(struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload)))

    file.write(b"\x89PNG\r\n\x1a\n")
    color_type = {3: 2, 4: 6}[channels]
    chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0))
    if metadata.icc_profile:
        # Profile name, its terminating zero, compression method 0 (zlib).
        chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(metadata.icc_profile))
    if metadata.exif:
        chunk(b"eXIf", metadata.exif.removeprefix(_EXIF_PREFIX))
    compressor = zlib.compressobj()
    rows_per_piece = max(1, _PNG_ROWS_PER_CHUNK_BYTES // (width * channels * 2))
    previous = np.zeros((1, width * channels * 2), np.uint8)
    for top in range(0, height, rows_per_piece):
        rows = samples[top : top + rows_per_piece].astype(">u2").view(np.uint8).reshape(-1, width * channels * 2)
        # PNG filter 2 ("up": each byte minus the one above, modulo 256) compresses photos about
        # 10% better than none and, unlike the adaptive filters, is one vectorized subtraction.
        filtered = np.diff(rows, axis=0, prepend=previous)
        previous = rows[-1:]
        scanlines = np.concatenate([np.full((len(rows), 1), 2, np.uint8), filtered], axis=1)
        compressed = compressor.compress(scanlines.tobytes())
        if compressed:
            chunk(b"IDAT", compressed)
    chunk(b"IDAT", compressor.flush())
    chunk(b"IEND", b"")


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
