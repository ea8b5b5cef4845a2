"""Tests for kdjax.metrics against a float64 numpy reference (BasicSR's formulas) and scikit-image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from numpy.lib.stride_tricks import sliding_window_view
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from kdjax import metrics
from kdjax.imresize import imresize

PSNR_TOLERANCE_DB = 1e-3
SSIM_TOLERANCE = 1e-4


def reference_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 Y (16..235) of 0..255 RGB in float64, as BasicSR's ``to_y_channel``."""
    rgb = rgb.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def _prepare_reference(pred, target, crop_border, y_channel):
    pred, target = pred.astype(np.float64), target.astype(np.float64)
    if crop_border:
        pred = pred[crop_border:-crop_border, crop_border:-crop_border]
        target = target[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        pred, target = reference_y(pred)[..., None], reference_y(target)[..., None]
    return pred, target


def reference_psnr(pred, target, *, crop_border, y_channel):
    pred, target = _prepare_reference(pred, target, crop_border, y_channel)
    return 10.0 * np.log10(255.0**2 / np.mean((pred - target) ** 2))


def _gaussian_valid_filter(channel: np.ndarray) -> np.ndarray:
    taps = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    window = np.outer(taps, taps) / taps.sum() ** 2
    return np.einsum("ijkl,kl->ij", sliding_window_view(channel, (11, 11)), window)


def reference_ssim(pred, target, *, crop_border, y_channel):
    """BasicSR's ``_ssim`` per channel in float64 ('valid' 11x11 Gaussian), averaged over channels."""
    pred, target = _prepare_reference(pred, target, crop_border, y_channel)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    per_channel = []
    for a, b in zip(np.moveaxis(pred, -1, 0), np.moveaxis(target, -1, 0)):
        mu_a, mu_b = _gaussian_valid_filter(a), _gaussian_valid_filter(b)
        var_a = _gaussian_valid_filter(a * a) - mu_a**2
        var_b = _gaussian_valid_filter(b * b) - mu_b**2
        cov = _gaussian_valid_filter(a * b) - mu_a * mu_b
        numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
        denominator = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        per_channel.append(np.mean(numerator / denominator))
    return float(np.mean(per_channel))


@pytest.fixture(scope="module")
def image_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Three natural 48x64 crops (targets) and their bicubic-x2 + noise degradations (8-bit)."""
    rng = np.random.default_rng(0)
    crops = [skimage.data.astronaut()[100:148, 180:244], skimage.data.chelsea()[80:128, 150:214],
             skimage.data.coffee()[150:198, 300:364]]
    targets, preds = [], []
    for crop in crops:
        blurred = imresize(imresize(crop, 0.5), 2).astype(np.float64)
        noisy = np.clip(np.round(blurred + rng.normal(0.0, 4.0, blurred.shape)), 0, 255)
        targets.append(crop.astype(np.float32))
        preds.append(noisy.astype(np.float32))
    return np.stack(preds), np.stack(targets)


@pytest.mark.parametrize(("crop_border", "y_channel"), [(0, False), (0, True), (4, False), (4, True)])
def test_batched_metrics_match_float64_reference(image_pairs, crop_border, y_channel):
    preds, targets = image_pairs
    values = metrics.psnr_ssim(preds, targets, crop_border=crop_border, y_channel=y_channel)
    assert values["psnr"].shape == values["ssim"].shape == (3,)
    options = dict(crop_border=crop_border, y_channel=y_channel)
    for index in range(3):
        expected_psnr = reference_psnr(preds[index], targets[index], **options)
        expected_ssim = reference_ssim(preds[index], targets[index], **options)
        assert abs(float(values["psnr"][index]) - expected_psnr) < PSNR_TOLERANCE_DB
        assert abs(float(values["ssim"][index]) - expected_ssim) < SSIM_TOLERANCE
        assert 0.3 < expected_ssim < 0.99  # a degraded pair, not a trivial one


def test_metrics_match_scikit_image(image_pairs):
    preds, targets = image_pairs
    crop_border = 3
    inner = (slice(crop_border, -crop_border), slice(crop_border, -crop_border))
    # skimage filters the whole image (reflect padding) and then drops a (win_size - 1) / 2 = 5
    # pixel strip; with sigma 1.5 and truncate 3.5 the Gaussian radius is int(3.5 * 1.5 + 0.5) = 5,
    # i.e. the same 11x11 window, so the kept pixels are exactly BasicSR's 'valid' SSIM map.
    skimage_ssim = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    ours_rgb = metrics.psnr_ssim(preds, targets, crop_border=crop_border, y_channel=False)
    ours_y = metrics.psnr_ssim(preds, targets, crop_border=crop_border, y_channel=True)
    for index in range(3):
        pred = preds[index][inner].astype(np.float64)
        target = targets[index][inner].astype(np.float64)
        sk_ssim_rgb = structural_similarity(target, pred, channel_axis=-1, **skimage_ssim)
        # The reference is an independent implementation of the same convention, to round-off.
        assert sk_ssim_rgb == pytest.approx(
            reference_ssim(preds[index], targets[index], crop_border=crop_border, y_channel=False), abs=1e-12
        )
        assert abs(float(ours_rgb["ssim"][index]) - sk_ssim_rgb) < SSIM_TOLERANCE
        sk_psnr_rgb = peak_signal_noise_ratio(target, pred, data_range=255)
        assert abs(float(ours_rgb["psnr"][index]) - sk_psnr_rgb) < PSNR_TOLERANCE_DB

        pred_y, target_y = reference_y(pred), reference_y(target)
        sk_ssim_y = structural_similarity(target_y, pred_y, **skimage_ssim)
        assert abs(float(ours_y["ssim"][index]) - sk_ssim_y) < SSIM_TOLERANCE
        sk_psnr_y = peak_signal_noise_ratio(target_y, pred_y, data_range=255)
        assert abs(float(ours_y["psnr"][index]) - sk_psnr_y) < PSNR_TOLERANCE_DB


def test_single_image_jit_and_vmap_agree_with_batch(image_pairs):
    preds, targets = image_pairs
    batched = metrics.psnr_ssim(preds, targets, crop_border=2, y_channel=True)
    singles = [metrics.psnr_ssim(preds[i], targets[i], crop_border=2, y_channel=True) for i in range(3)]
    assert singles[0]["psnr"].shape == singles[0]["ssim"].shape == ()
    for key in ("psnr", "ssim"):
        np.testing.assert_allclose(batched[key], [float(single[key]) for single in singles], rtol=1e-6)

    @jax.jit
    def evaluate(pred01, target01):
        pred, target = metrics.quantize(pred01), metrics.quantize(target01)
        return (metrics.psnr(pred, target, crop_border=2, y_channel=True),
                metrics.ssim(pred, target, crop_border=2, y_channel=True))

    mapped_psnr, mapped_ssim = jax.vmap(evaluate)(jnp.asarray(preds / 255.0), jnp.asarray(targets / 255.0))
    np.testing.assert_allclose(mapped_psnr, batched["psnr"], rtol=1e-6)
    np.testing.assert_allclose(mapped_ssim, batched["ssim"], rtol=1e-6)


def test_identical_images_are_perfect(image_pairs):
    _, targets = image_pairs
    values = metrics.psnr_ssim(targets[0], targets[0], crop_border=0, y_channel=False)
    assert np.isposinf(float(values["psnr"]))
    assert float(values["ssim"]) == pytest.approx(1.0, abs=1e-6)


def test_psnr_of_known_error():
    target = np.full((16, 16, 3), 100.0, np.float32)
    pred = target + 255.0 / 100.0  # MSE = (255 / 100)^2, so PSNR = 20 log10(100) = 40 dB
    assert float(metrics.psnr(pred, target)) == pytest.approx(40.0, abs=1e-4)


def test_rgb_to_y_golden_values():
    colors = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.float32)
    expected = [16.0, 235.0, 16.0 + 65.481, 16.0 + 128.553, 16.0 + 24.966]
    y = metrics.rgb_to_y(colors)
    assert y.shape == (5, 1)
    np.testing.assert_allclose(y[:, 0], expected, atol=1e-4)


def test_quantize_clips_scales_and_rounds():
    values = jnp.array([-0.2, 0.0, 0.2, 0.5 / 255.0 + 0.3 / 255.0, 1.0, 1.7])
    out = metrics.quantize(values)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, [0.0, 0.0, 51.0, 1.0, 255.0, 255.0])


def test_invalid_inputs_raise_clear_errors():
    image = np.zeros((16, 16, 3), np.float32)
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(image, np.zeros((16, 15, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        metrics.psnr(image[..., :1], image[..., :1])
    with pytest.raises(ValueError, match="crop_border"):
        metrics.psnr(image, image, crop_border=8)
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(image, image, crop_border=3)
