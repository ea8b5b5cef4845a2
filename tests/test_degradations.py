"""Tests for kdjax.degradations: each op's effect, determinism, composition and config errors."""

import io
import pickle

import numpy as np
import pytest
import skimage.data
from PIL import Image

from kdjax import degradations
from kdjax.imresize import imresize


def _texture(height=64, width=64, seed=0):
    """Smooth gradients plus fine random detail, so blur has high frequencies to remove."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 128 + 60 * np.sin(x / 7.0)[:, :, None] * np.cos(y / 5.0)[:, :, None]
    return np.clip(base + rng.normal(0, 30, (height, width, 3)), 0, 255).astype(np.uint8)


def _op(name, *, train, **overrides):
    config = degradations.default_degradation_config(ops=(name,), **overrides)
    return degradations.build_degradation(config, train=train)


def _gradient_energy(image, axis):
    return float(np.mean(np.diff(image.astype(np.float64), axis=axis) ** 2))


def test_eval_ops_are_fixed_and_train_ops_follow_the_rng():
    image = _texture()
    config = degradations.default_degradation_config(ops=("gaussian_blur", "motion_blur", "bicubic", "noise", "jpeg"))
    evaluation = degradations.build_degradation(config, train=False)
    np.testing.assert_array_equal(evaluation(image, np.random.default_rng(3)), evaluation(image, np.random.default_rng(3)))
    train = degradations.build_degradation(config, train=True)
    first = train(image, np.random.default_rng(3))
    np.testing.assert_array_equal(first, degradations.build_degradation(config, train=True)(image, np.random.default_rng(3)))
    assert not np.array_equal(first, train(image, np.random.default_rng(4)))
    assert first.dtype == np.uint8 and first.shape == image.shape


def test_eval_blur_does_not_depend_on_the_rng():
    image = _texture()
    for name in ("gaussian_blur", "motion_blur", "bicubic", "jpeg"):
        op = _op(name, train=False)
        np.testing.assert_array_equal(op(image, np.random.default_rng(0)), op(image, np.random.default_rng(1)))


def test_gaussian_blur_removes_high_frequencies_along_its_axes():
    image = _texture()
    isotropic = _op("gaussian_blur", train=False)(image, np.random.default_rng(0))
    for axis in (0, 1):
        assert _gradient_energy(isotropic, axis) < 0.2 * _gradient_energy(image, axis)
    # Wide along x (angle 0), narrow along y: horizontal detail goes, vertical detail mostly stays.
    anisotropic = _op("gaussian_blur", train=False, gaussian_blur=dict(eval_sigma_x=3.0, eval_sigma_y=0.3))(
        image, np.random.default_rng(0)
    )
    assert _gradient_energy(anisotropic, 1) < 0.15 * _gradient_energy(anisotropic, 0)


def test_gaussian_kernel_has_the_requested_spread():
    kernel = degradations.gaussian_kernel(21, 2.0, 1.0, angle=0.0)
    offsets = np.arange(-10, 11)
    assert kernel.sum() == pytest.approx(1.0)
    assert (kernel.sum(axis=0) * offsets**2).sum() == pytest.approx(4.0, rel=1e-3)
    assert (kernel.sum(axis=1) * offsets**2).sum() == pytest.approx(1.0, rel=1e-3)
    np.testing.assert_allclose(degradations.gaussian_kernel(21, 2.0, 1.0, angle=90.0), kernel.T, atol=1e-12)


def test_motion_blur_smears_along_its_direction_only():
    kernel = degradations.motion_kernel(21, 9.0, 0.0)
    assert kernel.sum() == pytest.approx(1.0)
    assert np.count_nonzero(kernel.sum(axis=1)) == 1, "a horizontal motion stays on the centre row"
    values = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8)
    horizontal_stripes = np.broadcast_to(values[:, None, None], (64, 64, 3)).copy()
    vertical_stripes = np.ascontiguousarray(horizontal_stripes.transpose(1, 0, 2))
    op = _op("motion_blur", train=False, motion_blur=dict(eval_length=9.0, eval_angle=0.0))
    np.testing.assert_array_equal(op(horizontal_stripes, np.random.default_rng(0)), horizontal_stripes)
    smeared = op(vertical_stripes, np.random.default_rng(0))
    assert _gradient_energy(smeared, 1) < 0.1 * _gradient_energy(vertical_stripes, 1)


@pytest.mark.parametrize("scale, shape", [(2, (64, 64)), (3, (37, 50))])
def test_bicubic_is_matlab_down_then_up(scale, shape):
    image = _texture(*shape)
    out = _op("bicubic", train=False, scale=scale)(image, np.random.default_rng(0))
    expected = imresize(imresize(image, scale=1.0 / scale), output_shape=shape)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert _gradient_energy(out, 1) < 0.5 * _gradient_energy(image, 1)


def test_training_bicubic_draws_among_its_scales():
    image = _texture()
    op = _op("bicubic", train=True, bicubic=dict(train_scales=(2, 3, 4)))
    outputs = {op(image, np.random.default_rng(seed)).tobytes() for seed in range(12)}
    assert len(outputs) == 3


def test_context_and_grid_add_up_over_the_chain():
    default = degradations.build_degradation(degradations.default_degradation_config(), train=True)
    assert (default.context, default.grid) == (8, 2)  # x2 bicubic: 2 low-res pixels each way, twice
    config = degradations.default_degradation_config(
        ops=("gaussian_blur", "motion_blur", "bicubic", "noise", "jpeg"),
        motion_blur=dict(kernel_size=9, train_length=(3.0, 7.0), eval_length=5.0, train_prob=0.5),
        bicubic=dict(train_scales=(2, 3, 4)),
    )
    train = degradations.build_degradation(config, train=True)
    assert (train.context, train.grid) == (10 + 4 + 16, 12)
    evaluation = degradations.build_degradation(config, train=False)
    assert (evaluation.context, evaluation.grid) == (10 + 4 + 8, 2)


@pytest.mark.parametrize("scale", [2, 3])
def test_a_crop_with_context_degrades_like_the_whole_image(scale):
    """Bicubic down-up of an aligned crop equals the whole image's, ``context`` pixels in from its cut edges."""
    config = degradations.default_degradation_config(
        ops=("gaussian_blur", "bicubic"), scale=scale, gaussian_blur=dict(kernel_size=5)
    )
    degradation = degradations.build_degradation(config, train=False)
    context = degradation.context
    image = _texture(16 * scale, 60 * scale)
    whole = degradation(image, np.random.default_rng(0))
    left, right = 5 * scale, 55 * scale  # aligned cut edges, away from the image's own edges
    crop = degradation(image[:, left:right], np.random.default_rng(0))
    np.testing.assert_array_equal(crop[:, context:-context], whole[:, left + context : right - context])
    # At the cut itself the crop's degradation sees mirrored pixels instead of the image's.
    assert not np.array_equal(crop[:, :scale], whole[:, left : left + scale])


def test_noise_has_the_configured_standard_deviation():
    flat = np.full((128, 128, 3), 128, np.uint8)
    noisy = _op("noise", train=False, noise=dict(eval_sigma=5.0))(flat, np.random.default_rng(0))
    residual = noisy.astype(np.float64) - 128
    assert residual.std() == pytest.approx(5.0, rel=0.03)
    assert abs(residual.mean()) < 0.1
    trained = _op("noise", train=True, noise=dict(train_sigma=(2.0, 2.0)))(flat, np.random.default_rng(0))
    assert (trained.astype(np.float64) - 128).std() == pytest.approx(2.0, rel=0.05)


def test_jpeg_equals_a_pillow_round_trip():
    image = _texture()
    out = _op("jpeg", train=False, jpeg=dict(eval_quality=40))(image, np.random.default_rng(0))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=40)
    np.testing.assert_array_equal(out, np.asarray(Image.open(buffer)))
    assert not np.array_equal(out, image)


def test_train_prob_zero_skips_the_op_and_empty_ops_is_identity():
    image = _texture()
    skipped = _op("gaussian_blur", train=True, gaussian_blur=dict(train_prob=0.0))
    np.testing.assert_array_equal(skipped(image, np.random.default_rng(0)), image)
    nothing = degradations.build_degradation(degradations.default_degradation_config(ops=()), train=True)
    np.testing.assert_array_equal(nothing(image, np.random.default_rng(0)), image)


def test_degradations_pickle_for_worker_processes():
    config = degradations.default_degradation_config(ops=("gaussian_blur", "bicubic", "noise", "jpeg"))
    op = degradations.build_degradation(config, train=True)
    image = _texture()
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(op))(image, np.random.default_rng(5)), op(image, np.random.default_rng(5))
    )


def test_config_helpers_keep_scales_consistent():
    config = degradations.default_degradation_config(scale=3, noise=dict(eval_sigma=7.0))
    assert config.scale == 3 and tuple(config.bicubic.train_scales) == (3,)
    assert config.noise.eval_sigma == 7.0 and config.noise.train_sigma == (1.0, 10.0)
    bicubic = degradations.bicubic_only_config(scale=4)
    assert tuple(bicubic.ops) == ("bicubic",) and bicubic.scale == 4


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(ops=("blurr",)), "blurr"),
        (dict(ops=("gaussian_blur",), gaussian_blur=dict(train_sigma=(3.0, 1.0))), "degradation.gaussian_blur.train_sigma"),
        (dict(ops=("gaussian_blur",), gaussian_blur=dict(kernel_size=20)), "degradation.gaussian_blur.kernel_size"),
        (dict(ops=("motion_blur",), motion_blur=dict(train_length=(3.0, 40.0))), "degradation.motion_blur.train_length"),
        (dict(ops=("jpeg",), jpeg=dict(train_quality=(0, 90))), "degradation.jpeg.train_quality"),
        (dict(ops=("noise",), noise=dict(train_prob=1.5)), "degradation.noise.train_prob"),
        (dict(scale=4, bicubic=dict(train_scales=(2,))), "degradation.bicubic.train_scales"),
    ],
)
def test_bad_configs_name_their_key(overrides, key):
    config = degradations.default_degradation_config(**overrides)
    with pytest.raises(ValueError) as error:
        degradations.build_degradation(config, train=True)
    assert key in str(error.value) and "\n" not in str(error.value)


def _psnr(a, b):
    return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def test_h264_is_deterministic_per_generator_and_keeps_odd_sizes():
    image = _texture(37, 51)
    op = _op("h264", train=True)
    first = op(image, np.random.default_rng([5, 1]))
    assert first.shape == image.shape and first.dtype == np.uint8
    assert first.tobytes() == _op("h264", train=True)(image, np.random.default_rng([5, 1])).tobytes()
    assert any(not np.array_equal(first, op(image, np.random.default_rng([5, k]))) for k in range(2, 6))


def test_h264_quality_falls_with_the_crf_and_predicted_frames_differ_from_intra_ones():
    image = np.asarray(skimage.data.astronaut())[:96, :128]  # a photo: H.264 is made for them
    quality = [
        _psnr(_op("h264", train=False, h264=dict(eval_crf=crf))(image, np.random.default_rng(0)), image)
        for crf in (12, 28, 44)
    ]
    assert quality[0] > quality[1] + 2 > quality[2] + 4
    intra = _op("h264", train=False, h264=dict(eval_predicted=False))(image, np.random.default_rng(0))
    predicted = _op("h264", train=False)(image, np.random.default_rng(0))
    assert not np.array_equal(intra, predicted)


def test_h264_eval_frames_do_not_depend_on_the_rng():
    image = _texture(48, 64)
    op = _op("h264", train=False)
    np.testing.assert_array_equal(op(image, np.random.default_rng(0)), op(image, np.random.default_rng(1)))


def test_h264_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"degradation\.h264\.train_crf=\(30, 60\) must be a pair"):
        _op("h264", train=True, h264=dict(train_crf=(30, 60)))
    with pytest.raises(ValueError, match=r"degradation\.h264\.preset='warp' is not an x264 preset"):
        _op("h264", train=True, h264=dict(preset="warp"))
