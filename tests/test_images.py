"""Tests for kdjax.images: mode conversions, clear errors on bad files, writing, arrays and grids."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdjax import images


def _rgb(height=12, width=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _png16(array: np.ndarray) -> bytes:
    """A 16-bit RGB or RGBA PNG (Pillow cannot write those), encoded by hand."""
    height, width, channels = array.shape
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _assert_one_sentence_naming(error: pytest.ExceptionInfo, path: Path):
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message and message.endswith(".")


def test_rgb_png_and_jpeg_read_back(tmp_path):
    image = _rgb()
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(image).save(tmp_path / "a.jpg", quality=100)
    np.testing.assert_array_equal(images.read_image(tmp_path / "a.png"), image)
    jpeg = images.read_image(tmp_path / "a.jpg")
    assert jpeg.dtype == np.uint8 and jpeg.shape == (12, 16, 3)
    assert images.image_size(tmp_path / "a.jpg") == (12, 16)


def test_grayscale_rgba_and_palette_become_rgb(tmp_path):
    gray = _rgb()[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(images.read_image(tmp_path / "gray.png"), np.repeat(gray[:, :, None], 3, 2))

    rgba = np.concatenate([_rgb(), np.full((12, 16, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(images.read_image(tmp_path / "rgba.png"), rgba[:, :, :3])

    palette_image = Image.fromarray(_rgb()).quantize(colors=8)
    palette_image.save(tmp_path / "palette.png")
    expected = np.asarray(palette_image.convert("RGB"))
    np.testing.assert_array_equal(images.read_image(tmp_path / "palette.png"), expected)
    palette_image.save(tmp_path / "transparent.png", transparency=0)
    np.testing.assert_array_equal(images.read_image(tmp_path / "transparent.png"), expected)


def test_16_bit_images_are_scaled_to_8_bit(tmp_path):
    gray16 = np.array([[0, 257, 65535], [128 * 257, 1000, 30000]], np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    read = images.read_image(tmp_path / "gray16.png")
    np.testing.assert_array_equal(read[:, :, 1], np.round(gray16 / 257.0).astype(np.uint8))

    rgb16 = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 1111).astype(np.uint16)
    (tmp_path / "rgb16.png").write_bytes(_png16(rgb16))
    read = images.read_image(tmp_path / "rgb16.png")
    assert read.dtype == np.uint8 and read.shape == (4, 5, 3)
    assert np.abs(read.astype(int) - rgb16 / 257.0).max() <= 1.0


def test_exif_rotation_is_applied_consistently(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(_rgb(10, 20)).save(tmp_path / "rotated.jpg", exif=exif)
    assert images.read_image(tmp_path / "rotated.jpg").shape == (20, 10, 3)
    assert images.image_size(tmp_path / "rotated.jpg") == (20, 10)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file_is_one_sentence_naming_it(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    Image.fromarray(_rgb(64, 64)).save(path)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(images.ImageReadError, match="truncated or corrupt") as error:
        images.read_image(path)
    _assert_one_sentence_naming(error, path)


def test_non_image_and_missing_files_are_one_sentence(tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    for read in (images.read_image, images.image_size):
        with pytest.raises(images.ImageReadError, match="not a readable image") as error:
            read(fake)
        _assert_one_sentence_naming(error, fake)
    with pytest.raises(images.ImageReadError, match="does not exist") as error:
        images.read_image(tmp_path / "missing.png")
    _assert_one_sentence_naming(error, tmp_path / "missing.png")


def test_write_image_round_trips_and_reports_unwritable_paths(tmp_path):
    image = _rgb()
    images.write_image(tmp_path / "new" / "folder" / "out.png", image)
    np.testing.assert_array_equal(images.read_image(tmp_path / "new" / "folder" / "out.png"), image)
    images.write_image(tmp_path / "float.png", image / 255.0)
    np.testing.assert_array_equal(images.read_image(tmp_path / "float.png"), image)

    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(images.ImageWriteError, match="choose a writable location") as error:
        images.write_image(blocker / "out.png", image)
    _assert_one_sentence_naming(error, blocker / "out.png")
    with pytest.raises(images.ImageWriteError, match="suffix"):
        images.write_image(tmp_path / "out.xyz", image)


def test_to_rgb_uint8_accepts_user_arrays():
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for array in (gray, gray[:, :, None]):
        np.testing.assert_array_equal(images.to_rgb_uint8(array), np.repeat(gray[:, :, None], 3, 2))
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 3] = 255
    assert images.to_rgb_uint8(rgba).shape == (2, 3, 3) and images.to_rgb_uint8(rgba).max() == 0
    np.testing.assert_array_equal(images.to_rgb_uint8(np.array([[0, 65535]], np.uint16))[0, :, 0], [0, 255])
    floats = np.array([[-0.1, 0.5, 1.02]], np.float32)
    np.testing.assert_array_equal(images.to_rgb_uint8(floats)[0, :, 0], [0, 128, 255])


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 3, 2), np.uint8), "shape"),
        (np.zeros((2, 3), np.int64), "dtype"),
        (np.full((2, 3), 200.0), "divide by 255"),
        (np.full((2, 3), np.nan), "NaN"),
    ],
)
def test_to_rgb_uint8_rejects_bad_arrays_by_name(array, message):
    with pytest.raises(ValueError, match=message) as error:
        images.to_rgb_uint8(array, name="frame_7")
    assert "frame_7" in str(error.value)


def test_image_grid_places_cells_and_draws_labels():
    red = np.zeros((10, 20, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((14, 8, 3), np.uint8)
    blue[..., 2] = 255
    grid = images.image_grid([[red, blue], [blue, red]], ["input", "ground truth"], padding=4)
    label_height = 14 + 2 * 4
    assert grid.shape == (label_height + 14 + 14 + 3 * 4, 20 + 20 + 3 * 4, 3)
    top = label_height + 4
    np.testing.assert_array_equal(grid[top : top + 10, 4:24], red)
    np.testing.assert_array_equal(grid[top : top + 14, 28:36], blue)
    assert (grid[:label_height] < 128).any(), "labels should be drawn in dark ink"
    with pytest.raises(ValueError, match="one label per column"):
        images.image_grid([[red]], ["a", "b"])
