"""Tests for kdjax.imresize: MATLAB-exact weights, shapes, rounding, and the Set5 bicubic baseline."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdjax import metrics
from kdjax.imresize import imresize

SET5_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "Set5"

# Keys cubic (a = -0.5) at the distances an x2 upscale samples: |d| = 0.25, 0.75, 1.25, 1.75.
# All four are dyadic rationals, so float64 reproduces them exactly.
UP2_WEIGHTS = {0.25: 0.8671875, 0.75: 0.2265625, 1.25: -0.0703125, 1.75: -0.0234375}
# Antialiased x1/2 kernel 0.5 * cubic(d / 2) at |d| = 0.5, 1.5, 2.5, 3.5 (sums to exactly 1).
DOWN2_WEIGHTS = {0.5: 0.43359375, 1.5: 0.11328125, 2.5: -0.03515625, 3.5: -0.01171875}

# Published Set5 bicubic PSNR on Y (dB), e.g. the SRCNN/VDSR/SwinIR tables, and SSIM on Y.
PUBLISHED_SET5_BICUBIC = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}


def test_upscale_impulse_matches_analytic_cubic_weights():
    column = np.zeros((8, 1))
    column[4] = 1.0  # pixel 5 in MATLAB's 1-based indexing
    out = imresize(column, 2)
    assert out.shape == (16, 2)
    # Output row x (1-based) samples u = x / 2 + 0.25; its weight on pixel 5 is cubic(u - 5).
    distances = np.arange(1, 17) / 2 + 0.25 - 5
    expected = [UP2_WEIGHTS.get(abs(d), 0.0) for d in distances]
    assert np.count_nonzero(expected) == 8
    np.testing.assert_array_equal(out[:, 0], expected)
    np.testing.assert_array_equal(out[:, 1], expected)


def test_downscale_impulse_matches_antialiased_kernel():
    row = np.zeros((1, 16), dtype=np.float64)
    row[0, 7] = 1.0  # pixel 8, 1-based
    out = imresize(row, 0.5)
    assert out.shape == (1, 8)
    # Output column x samples u = 2x - 0.5, so its weight on pixel 8 is h(2x - 8.5).
    distances = 2 * np.arange(1, 9) - 8.5
    expected = [DOWN2_WEIGHTS.get(abs(d), 0.0) for d in distances]
    assert np.count_nonzero(expected) == 4
    np.testing.assert_array_equal(out[0], expected)


def test_output_shapes_follow_matlab_ceil_rule():
    image = np.zeros((7, 5, 3), dtype=np.uint8)
    assert imresize(image, 0.5).shape == (4, 3, 3)
    assert imresize(image, 3).shape == (21, 15, 3)
    assert imresize(image, output_shape=(5, 9)).shape == (5, 9, 3)
    assert imresize(np.zeros((7, 5), np.float32), 1 / 3).shape == (3, 2)
    # n * (1/k) may round to just above n / k; that must not bump the size by one.
    for k in (3, 6, 7):
        for multiple in range(1, 200):
            assert imresize(np.zeros((k * multiple, 1)), 1 / k).shape[0] == multiple


def test_constant_image_stays_constant():
    for value, dtype in ((137, np.uint8), (0.3, np.float32)):
        image = np.full((23, 17, 3), value, dtype=dtype)
        for scale in (0.25, 1 / 3, 0.5, 2, 3):
            out = imresize(image, scale)
            assert out.dtype == dtype
            np.testing.assert_allclose(out, value, rtol=1e-6)


def test_linear_ramp_is_preserved_away_from_borders():
    length = 64
    ramp = np.tile(np.arange(1, length + 1, dtype=np.float64)[:, None], (1, 4))  # value = 1-based index
    for scale in (2, 3, 0.5, 0.25):
        out = imresize(ramp, scale)[:, 0]
        positions = np.arange(1, out.shape[0] + 1)
        centers = positions / scale + 0.5 * (1 - 1 / scale)  # where MATLAB samples each output pixel
        half_support = 2.0 / min(scale, 1.0)
        # Pixels whose non-zero taps all fall inside 1..length: no mirrored sample involved.
        interior = (centers - half_support >= 0) & (centers + half_support <= length + 1)
        assert interior.sum() >= out.shape[0] // 2
        np.testing.assert_allclose(out[interior], centers[interior], atol=1e-9)
    # Near the border, symmetric padding bends the ramp: a plain linear extension would be wrong.
    assert not np.isclose(imresize(ramp, 0.25)[0, 0], 2.5)


def test_uint8_rounds_half_away_from_zero_and_clips():
    column = np.zeros((8, 1), dtype=np.uint8)
    column[4] = 64
    out = imresize(column, 2)[:, 0]
    # 64 * 0.2265625 = 14.5 -> 15 (numpy's half-to-even would give 14); 64 * 0.8671875 = 55.5 -> 56;
    # the negative lobes -4.5 and -1.5 clip to 0.
    np.testing.assert_array_equal(out[5:13], [0, 0, 15, 56, 56, 15, 0, 0])
    bright = np.full((8, 1), 255, dtype=np.uint8)
    bright[4] = 0
    assert imresize(bright, 2).max() == 255


def test_uint8_rounds_after_each_dimension_smaller_scale_first():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    # Columns shrink more (15/30 < 13/20), so MATLAB resizes them first; a scale-1 pass is exact.
    columns_first = imresize(imresize(image, output_shape=(20, 15)), output_shape=(13, 15))
    rows_first = imresize(imresize(image, output_shape=(13, 30)), output_shape=(13, 15))
    result = imresize(image, output_shape=(13, 15))
    np.testing.assert_array_equal(result, columns_first)
    assert np.any(result != rows_first)
    float_result = imresize(image.astype(np.float64), output_shape=(13, 15))
    assert np.abs(result.astype(np.float64) - float_result).max() <= 1.0


def test_float_output_is_not_clipped_and_keeps_dtype():
    step = np.zeros((16, 16), dtype=np.float32)
    step[:, 8:] = 1.0
    out = imresize(step, 2)
    assert out.dtype == np.float32
    assert out.min() < 0.0 and out.max() > 1.0  # cubic overshoot survives


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"scale": 2, "output_shape": (4, 4)}, "exactly one"),
        ({"scale": 0}, "positive"),
        ({"output_shape": (0, 4)}, "at least 1"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        imresize(np.zeros((4, 4)), **kwargs)


def test_bad_images_raise_clear_errors():
    with pytest.raises(ValueError, match="dtype"):
        imresize(np.zeros((4, 4), dtype=np.int32), 2)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        imresize(np.zeros((4,)), 2)


def _load_set5() -> list[np.ndarray]:
    if not SET5_DIR.is_dir():
        pytest.skip(f"Set5 benchmark images not found at {SET5_DIR}; place them there to run this check.")
    images = []
    for path in sorted(SET5_DIR.glob("*.png")):
        with Image.open(path) as image:
            # Grayscale benchmark files become RGB by repeating the channel.
            images.append(np.asarray(image.convert("RGB")))
    assert len(images) == 5
    return images


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_bicubic_baseline_matches_published(scale):
    psnrs, ssims = [], []
    for hr in _load_set5():
        height, width = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
        hr = hr[:height, :width]
        lr = imresize(hr, 1 / scale)
        upscaled = imresize(lr, scale)
        assert lr.dtype == upscaled.dtype == np.uint8
        assert upscaled.shape == hr.shape
        values = metrics.psnr_ssim(
            upscaled.astype(np.float32), hr.astype(np.float32), crop_border=scale, y_channel=True
        )
        psnrs.append(float(values["psnr"]))
        ssims.append(float(values["ssim"]))
    psnr_mean, ssim_mean = float(np.mean(psnrs)), float(np.mean(ssims))
    published_psnr, published_ssim = PUBLISHED_SET5_BICUBIC[scale]
    print(f"Set5 bicubic x{scale}: PSNR(Y) {psnr_mean:.4f} dB (published {published_psnr}), "
          f"SSIM(Y) {ssim_mean:.4f} (published {published_ssim})")
    assert abs(psnr_mean - published_psnr) < 0.05
    # Published SSIMs come from MATLAB on uint8-rounded Y; unrounded Y moves the 4th decimal.
    assert abs(ssim_mean - published_ssim) < 0.002
