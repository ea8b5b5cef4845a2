"""Tests for faithful image files (kdjax.images.read_image_file / write_image_file and
kdjax.serving.files.sharpen_paths): alpha, 16 bits, EXIF orientation and ICC kept; bf16 loading."""

import functools
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import skimage.data
import tifffile
from PIL import Image, ImageCms

import kdjax
from kdjax import images
from kdjax.imresize import imresize
from kdjax.models import build_model, model_config
from kdjax.serving import Sharpener, files

REPO = Path(__file__).resolve().parents[1]
SET5_BIRD = REPO.parent / "shared" / "data" / "Set5" / "bird.png"
ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def released():
    """The released sharpening model (scale 1), whole images."""
    return kdjax.load("realtime_kd_x2", tile=None)


@pytest.fixture(scope="module")
def upscaler():
    """A tiny random x2 `realtime` student: only its output size matters here."""
    model = build_model(model_config("realtime", scale=2, width=8, num_blocks=1))
    params = model.init(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32), train=False)["params"]
    return Sharpener(model, params, tile=None)


def _photo(height=24, width=32):
    return np.ascontiguousarray(skimage.data.astronaut()[100 : 100 + height, 200 : 200 + width])


def _photo16(height=24, width=32, seed=0):
    """A 16-bit photo whose values use the low byte too (not multiples of 257)."""
    noise = np.random.default_rng(seed).integers(0, 257, (height, width, 3))
    return (_photo(height, width).astype(np.int64) * 256 + noise).clip(0, 65535).astype(np.uint16)


def _alpha(height=24, width=32, dtype=np.uint8):
    ramp = np.linspace(0, 1, width)[None] * np.linspace(1, 0.2, height)[:, None]
    return images.quantize(ramp, dtype)


@functools.cache  # a new profile carries a new creation time
def _icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_rgba_png_keeps_its_alpha_when_sharpened(released, tmp_path):
    rgb, alpha = _photo(), _alpha()
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "in.png")
    files.sharpen_paths(released, tmp_path / "in.png", tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == "RGBA"
        written = np.asarray(out)
    np.testing.assert_array_equal(written[:, :, 3], alpha)
    np.testing.assert_array_equal(written[:, :, :3], released(rgb))  # the model saw the RGB alone


@pytest.mark.parametrize("mode", ["LA", "P"])
def test_gray_alpha_and_transparent_palette_alpha_are_read(mode, tmp_path):
    gray = _photo()[:, :, 0]
    if mode == "LA":
        Image.fromarray(np.dstack([gray, _alpha()]), "LA").save(tmp_path / "in.png")
        expected = _alpha()
    else:
        palette = Image.fromarray(gray).convert("P")
        palette.save(tmp_path / "in.png", transparency=int(np.asarray(palette)[0, 0]))
        expected = np.where(np.asarray(palette) == np.asarray(palette)[0, 0], 0, 255)
    pixels, metadata = images.read_image_file(tmp_path / "in.png")
    assert pixels.shape == (24, 32, 3) and metadata.bit_depth == 8
    np.testing.assert_array_equal(metadata.alpha, expected)


def test_upscaler_resizes_the_alpha_with_the_image(upscaler, tmp_path):
    alpha = _alpha()
    Image.fromarray(np.dstack([_photo(), alpha])).save(tmp_path / "in.png")
    files.sharpen_paths(upscaler, tmp_path / "in.png", tmp_path / "out.png")
    written = np.asarray(Image.open(tmp_path / "out.png"))
    assert written.shape == (48, 64, 4)
    expected = np.round(np.clip(imresize(alpha.astype(np.float64), output_shape=(48, 64)), 0, 255))
    np.testing.assert_array_equal(written[:, :, 3], expected)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_colour_round_trips_exactly_with_alpha_and_icc(suffix, tmp_path):
    rgb, alpha = _photo16(), _alpha(dtype=np.uint16)
    metadata = images.ImageMetadata(alpha=alpha, bit_depth=16, icc_profile=_icc())
    images.write_image_file(tmp_path / f"a{suffix}", rgb, metadata)
    pixels, read = images.read_image_file(tmp_path / f"a{suffix}")
    assert pixels.dtype == np.uint16 and read.bit_depth == 16 and read.icc_profile == _icc()
    np.testing.assert_array_equal(pixels, rgb)
    np.testing.assert_array_equal(read.alpha, alpha)


def _write_16_bit(path: Path, array: np.ndarray) -> None:
    """A 16-bit file written by others than kdjax: tifffile for TIFF, Pillow for gray PNG."""
    if path.suffix == ".tif":
        tifffile.imwrite(path, array, photometric="rgb")
    else:
        Image.fromarray(array).save(path)  # (H, W) uint16: Pillow's "I;16"


@pytest.mark.parametrize("name", ["rgb16.tif", "gray16.png"])
def test_16_bit_input_gives_16_bit_output_with_16_bit_precision(released, name, tmp_path):
    source = _photo16()[:, :, 1] if name.startswith("gray") else _photo16()
    _write_16_bit(tmp_path / name, source)
    files.sharpen_paths(released, tmp_path / name, tmp_path / "out.png")
    output, metadata = images.read_image_file(tmp_path / "out.png")
    assert output.dtype == np.uint16 and metadata.bit_depth == 16 and output.shape == (24, 32, 3)
    # An 8-bit path padded back to 16 bits would give only multiples of 257.
    assert np.mean(output % 257 != 0) > 0.5
    # The same picture as the 8-bit path, to within its rounding.
    rgb = np.repeat(source[:, :, None], 3, 2) if source.ndim == 2 else source
    eight_bit = released(images.quantize(rgb, np.uint8)).astype(np.float64) * 257
    assert np.abs(output - eight_bit).max() < 3 * 257


def test_16_bit_png_sharpened_from_the_api_matches_the_file_path(released, tmp_path):
    rgb = _photo16()
    images.write_image_file(tmp_path / "in.png", rgb, images.ImageMetadata(bit_depth=16))
    files.sharpen_paths(released, tmp_path / "in.png", tmp_path / "out.png")
    from_api = released(rgb)
    assert from_api.dtype == np.uint16
    np.testing.assert_array_equal(images.read_image_file(tmp_path / "out.png")[0], from_api)


def test_16_bit_images_in_tiles_and_batches(released):
    rgb = _photo16(40, 56)
    whole = released(rgb)
    tiler = Sharpener(released.model, released.params, tile=24, overlap=8)
    tiled = tiler(rgb)  # band by band
    assert tiled.dtype == np.uint16 and tiled.shape == whole.shape and np.mean(tiled % 257 != 0) > 0.5
    # The same tiles as from the 8-bit image, to within its rounding.
    assert np.abs(tiled - tiler(images.quantize(rgb, np.uint8)) * 257.0).max() < 3 * 257
    batch = released.sharpen_batch([rgb, _photo(40, 56), rgb])
    assert [image.dtype for image in batch] == [np.uint16, np.uint8, np.uint16]
    np.testing.assert_array_equal(batch[0], whole)
    assert released.sharpen_batch(np.zeros((0, 4, 4, 3), np.uint16)).dtype == np.uint16


def test_bit_depth_flag_and_dtype_from_the_command_line(tmp_path):
    images.write_image_file(tmp_path / "in.png", _photo16(), images.ImageMetadata(bit_depth=16))
    command = [sys.executable, str(REPO / "launch.py"), "sharpen", "--model=realtime_kd_x2", "--tile=0"]
    paths = [f"--input={tmp_path / 'in.png'}", f"--output={tmp_path / 'out.png'}"]
    result = subprocess.run([*command, *paths, "--bit_depth=8", "--dtype=bfloat16"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == "RGB" and out.size == (32, 24)  # 8 bits, from a 16-bit input
    video = subprocess.run(
        [*command, "--input=clip.mp4", "--output=out.mp4", "--bit_depth=16"], capture_output=True, text=True, timeout=300
    )
    last = video.stderr.strip().splitlines()[-1]
    assert video.returncode != 0 and last.startswith("error: --bit_depth=16 is for images"), last


def test_8_bit_input_asked_for_16_bits(released, tmp_path):
    Image.fromarray(_photo()).save(tmp_path / "in.png")
    files.sharpen_paths(released, tmp_path / "in.png", tmp_path / "out.png", bit_depth=16)
    output, metadata = images.read_image_file(tmp_path / "out.png")
    assert metadata.bit_depth == 16 and np.mean(output % 257 != 0) > 0.5  # the model's own precision
    files.sharpen_paths(released, tmp_path / "in.png", tmp_path / "out8.png", bit_depth=8)
    assert images.read_image_file(tmp_path / "out8.png")[1].bit_depth == 8


def test_jpeg_orientation_is_applied_and_icc_and_exif_kept(released, tmp_path):
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    exif[0x010F] = "kdjax test camera"  # Make
    photo = _photo()
    Image.fromarray(photo).save(tmp_path / "in.jpg", exif=exif, icc_profile=_icc(), quality=95)
    upright = images.read_image(tmp_path / "in.jpg")
    assert upright.shape == (32, 24, 3)
    for out in ("out.png", "out.jpg"):
        files.sharpen_paths(released, tmp_path / "in.jpg", tmp_path / out)
        with Image.open(tmp_path / out) as written:
            assert written.size == (24, 32)  # width, height: upright, and nothing rotates it again
            assert written.info.get("icc_profile") == _icc()
            assert written.getexif().get(ORIENTATION, 1) == 1
            assert written.getexif().get(0x010F) == "kdjax test camera"
            if out == "out.png":  # lossless: exactly the model's output for the upright pixels
                np.testing.assert_array_equal(np.asarray(written), released(upright))


def test_every_exif_orientation_matches_read_image(tmp_path):
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        Image.fromarray(_photo(6, 9)).save(tmp_path / f"{orientation}.png", exif=exif)
        pixels, metadata = images.read_image_file(tmp_path / f"{orientation}.png")
        np.testing.assert_array_equal(pixels, images.read_image(tmp_path / f"{orientation}.png"))
        written = Image.Exif()
        written.load(metadata.exif)
        assert written[ORIENTATION] == 1


def test_png_keeps_its_icc_profile(released, tmp_path):
    Image.fromarray(_photo()).save(tmp_path / "in.png", icc_profile=_icc())
    files.sharpen_paths(released, tmp_path / "in.png", tmp_path / "out")
    with Image.open(tmp_path / "out" / "in.png") as written:
        assert written.info.get("icc_profile") == _icc() and "exif" not in written.info


def test_formats_that_cannot_hold_alpha_or_16_bits_are_refused(tmp_path):
    rgb, alpha = _photo(), _alpha()
    with pytest.raises(images.ImageWriteError, match=r"JPEG has no alpha channel.*choose a \.png output\.$"):
        images.write_image_file(tmp_path / "a.jpg", rgb, images.ImageMetadata(alpha=alpha))
    with pytest.raises(images.ImageWriteError, match=r"a\.jpg with 16 bits per sample"):
        images.write_image_file(tmp_path / "a.jpg", rgb, bit_depth=16)
    with pytest.raises(ValueError, match=r"^bit_depth=12 is not a supported bit depth; pass 'auto', 8 or 16\.$"):
        images.write_image_file(tmp_path / "a.png", rgb, bit_depth=12)
    with pytest.raises(ValueError, match=r"resize the alpha to the image\.$"):
        images.write_image_file(tmp_path / "a.png", rgb, images.ImageMetadata(alpha=alpha[:-1]))
    # "auto" writes 16-bit input to an 8-bit-only format as 8 bits.
    images.write_image_file(tmp_path / "b.jpg", _photo16(), images.ImageMetadata(bit_depth=16))
    assert images.read_image_file(tmp_path / "b.jpg")[1].bit_depth == 8
    assert not (tmp_path / "a.jpg").exists()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse)) if mse else float("inf")


def test_bfloat16_load_is_close_to_float32(released):
    image = images.read_image(SET5_BIRD) if SET5_BIRD.exists() else _photo(128, 128)
    bf16 = kdjax.load("realtime_kd_x2", tile=None, dtype="bfloat16")
    assert bf16.model.dtype == jax.numpy.bfloat16
    assert jax.tree.leaves(bf16.params)[0].dtype == np.float32  # parameters stay float32
    float32, bfloat16 = released(image), bf16(image)
    assert not np.array_equal(float32, bfloat16)  # bf16 really ran
    assert _psnr(float32, bfloat16) > 40
    with pytest.raises(ValueError, match=r"^dtype='float16' is not .*; pass one of float32, bfloat16\.$"):
        kdjax.load("realtime_kd_x2", dtype="float16")
