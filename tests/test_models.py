"""Tests for kdjax.models: shapes and feature taps, the shifted-window mask, relative
positions, trainability, preset sizes, bf16 compute and the registry's errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax.models import (
    MODEL_NAMES,
    build_model,
    count_params,
    feature_shapes,
    gflops_per_frame,
    model_config,
)
from kdjax.models.students import DepthwiseConv3x3
from kdjax.models.summary import abstract_params
from kdjax.models.teacher import SwinLayer, relative_position_index, shifted_window_mask

BATCH, HEIGHT, WIDTH = 2, 37, 53  # odd sizes: not multiples of any window or shuffle factor

# Tiny variants of every architecture (each is one jit compile below).
TINY_CONFIGS = {
    "swin_tiny": {},
    "swin_tiny_3conv_window4": {"window_size": 4, "resi_connection": "3conv", "depths": (2, 1, 2)},
    "swin_tiny_half": {"body_factor": 2},
    "plain3": {"features": (8, 4)},
    "residual": {"width": 8, "num_blocks": 2},
    "separable": {"width": 8, "num_blocks": 2},
    "realtime": {"width": 8, "num_blocks": 2},
    "rep": {"width": 8, "num_blocks": 2},
}


def _tiny_model(key: str, dtype: str = "float32"):
    name = "swin_tiny" if key.startswith("swin_tiny") else key
    overrides = dict(TINY_CONFIGS[key])
    if "depths" in overrides:
        overrides["num_heads"] = (2,) * len(overrides["depths"])
    return build_model({"name": name, "dtype": dtype, "overrides": overrides})


def _images(shape: tuple[int, ...], seed: int = 0, grain: float = 0.1) -> jax.Array:
    """Smooth random images in [0, 1] plus per-pixel grain of amplitude `grain`."""
    coarse = jax.random.uniform(jax.random.key(seed), (shape[0], 8, 8, 3))
    smooth = jax.image.resize(coarse, shape, "bicubic")
    fine = grain * jax.random.uniform(jax.random.key(seed + 1), shape)
    return jnp.clip(smooth + fine, 0.0, 1.0)


def _random_params(model, seed: int = 0):
    """Random parameters of realistic scale, drawn with numpy on the abstract shapes.

    Much cheaper than compiling `model.init` (its RNG code dominates compile time on
    CPU), and unlike a fresh init the zero-initialised output conv is not zero.
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        name = jax.tree_util.keystr(path)
        if leaf.ndim >= 2:  # kernels, bias table: fan-in scaling keeps activations O(1)
            # The output conv gets 0.1 of that: a sharpening residual of realistic size.
            gain = 0.1 if "conv_last" in name else 1.0
            return gain * noise / np.sqrt(np.prod(leaf.shape[:-1]))
        return (1.0 if name.endswith("['scale']") else 0.0) + 0.1 * noise

    return jax.tree_util.tree_map_with_path(draw, abstract_params(model))


def _expected_feature_shapes(model, key: str) -> dict[str, tuple[int, ...]]:
    """The shapes the module docstrings promise for a (BATCH, HEIGHT, WIDTH, 3) input."""
    if key.startswith("swin"):
        factor = model.body_factor
        body = (BATCH, -(-HEIGHT // factor), -(-WIDTH // factor), model.embed_dim)
        return {name: body for name in model.feature_names}
    if key == "plain3":
        return {f"block_{i}": (BATCH, HEIGHT, WIDTH, c) for i, c in enumerate(model.features)}
    if key == "residual":
        return {name: (BATCH, HEIGHT, WIDTH, model.width) for name in model.feature_names}
    if key == "separable":
        low = (BATCH, -(-HEIGHT // 2), -(-WIDTH // 2), 2 * model.width)
        return {name: low for name in model.feature_names}
    factor = model.shuffle_factor
    low = (BATCH, -(-HEIGHT // factor), -(-WIDTH // factor), model.width)
    return {name: low for name in model.feature_names}


@pytest.mark.parametrize("key", list(TINY_CONFIGS))
def test_output_and_features_have_documented_shapes(key):
    model = _tiny_model(key)
    x = _images((BATCH, HEIGHT, WIDTH, 3))
    forward = jax.jit(lambda params, x: model.apply({"params": params}, x, return_features=True))
    y, features = forward(_random_params(model), x)
    assert y.shape == x.shape and y.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(y)))
    assert float(jnp.max(jnp.abs(y - x))) > 1e-3  # random params: not the identity
    assert list(features) == list(model.feature_names)
    shapes = {name: tuple(feature.shape) for name, feature in features.items()}
    assert shapes == _expected_feature_shapes(model, key)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_full_size_presets_give_scale_times_the_input(name):
    model = build_model({"name": name})
    spec = jax.ShapeDtypeStruct((BATCH, HEIGHT, WIDTH, 3), jnp.float32)
    out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], spec)
    assert out.shape == (BATCH, HEIGHT * model.scale, WIDTH * model.scale, 3) and out.dtype == jnp.float32
    assert list(feature_shapes(model, spec.shape)) == list(model.feature_names)


def test_relative_position_index_covers_bias_table():
    window = 8
    index = relative_position_index(window)
    assert index.shape == (window**2, window**2)
    np.testing.assert_array_equal(np.unique(index), np.arange((2 * window - 1) ** 2))
    # Same offset -> same entry: token pairs (0 -> 1) and (8 -> 9) are both one column apart.
    assert index[0, 1] == index[8, 9] and index[0, 0] == index[5, 5] == (2 * window - 1) ** 2 // 2


def test_shifted_window_mask_regions():
    mask = np.asarray(shifted_window_mask(16, 16, 8, 4))
    assert mask.shape == (4, 64, 64)
    # Windows in row-major order. The top-left one holds no wrapped pixels; the top-right
    # and bottom-left ones are split in two halves of 32 tokens; the bottom-right one in
    # four 4x4 regions of 16.
    assert mask[0].all()
    for window, region_size in ((1, 32), (2, 32), (3, 16)):
        np.testing.assert_array_equal(mask[window].sum(axis=1), np.full(64, region_size))
    np.testing.assert_array_equal(mask[3], mask[3].T)


def test_shifted_layer_never_mixes_wrapped_regions():
    window, shift, size = 8, 4, 16
    layer = SwinLayer(
        num_heads=2, window_size=window, shift_size=shift, mlp_ratio=2.0, drop_path_rate=0.0
    )
    x = jax.random.normal(jax.random.key(0), (1, size, size, 8))
    # One channel only: LayerNorm would cancel a shift of all channels.
    perturbed = x.at[0, 0, 0, 0].add(3.0)
    variables = layer.init(jax.random.key(1), x, train=False)
    apply = jax.jit(lambda x: layer.apply(variables, x, train=False))
    changed = np.abs(np.asarray(apply(perturbed) - apply(x)))[0].max(axis=-1) > 1e-6
    # Pixel (0, 0) is rolled to (12, 12), into the bottom-right window, whose other
    # regions hold original rows/cols 12..15. Only its own region (original 0..3) may change;
    # without the mask the whole 8x8 window {12..15, 0..3}^2 would.
    expected = np.zeros((size, size), bool)
    expected[:shift, :shift] = True
    np.testing.assert_array_equal(changed, expected)


def test_drop_path_is_stochastic_only_in_training():
    layer = SwinLayer(num_heads=2, window_size=4, shift_size=0, mlp_ratio=2.0, drop_path_rate=0.5)
    x = jax.random.normal(jax.random.key(0), (8, 4, 4, 8))
    variables = layer.init(jax.random.key(1), x, train=False)
    apply = jax.jit(lambda x, rng: layer.apply(variables, x, train=True, rngs={"dropout": rng}))
    first, second = apply(x, jax.random.key(2)), apply(x, jax.random.key(3))
    assert float(jnp.max(jnp.abs(first - second))) > 1e-3
    # Each sample either keeps or drops a whole branch: some samples pass through untouched.
    untouched = jnp.all(first == x, axis=(1, 2, 3))
    assert 0 < int(untouched.sum()) < x.shape[0]
    np.testing.assert_array_equal(
        layer.apply(variables, x, train=False), layer.apply(variables, x, train=False)
    )


@pytest.mark.parametrize("strides", [1, 2])
def test_depthwise_conv_matches_grouped_convolution(strides):
    x = jax.random.normal(jax.random.key(0), (2, 7, 10, 4))
    layer = DepthwiseConv3x3(strides=strides)
    params = {
        "kernel": jax.random.normal(jax.random.key(1), (3, 3, 1, 4)),
        "bias": jax.random.normal(jax.random.key(2), (4,)),
    }
    reference = jax.lax.conv_general_dilated(
        x,
        params["kernel"],
        (strides, strides),
        ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=4,
    )
    output = layer.apply({"params": params}, x)
    np.testing.assert_allclose(output, reference + params["bias"], atol=1e-5)


def test_swin_tiny_fits_a_fixed_batch():
    model = build_model({"name": "swin_tiny"})
    # Grain-free targets: everything the degradation removed is recoverable.
    target = _images((2, 64, 64, 3), seed=3, grain=0.0)
    small = jax.image.resize(target, (2, 16, 16, 3), "linear")
    blurred = jax.image.resize(small, target.shape, "linear")
    degraded = 0.7 * blurred + 0.2  # blur plus lost contrast
    params = jax.jit(model.init)(jax.random.key(0), degraded)["params"]
    optimizer = optax.adam(5e-4)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, rng):
        def loss_fn(params):
            y = model.apply({"params": params}, degraded, train=True, rngs={"dropout": rng})
            return jnp.mean(jnp.abs(y - target))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for index in range(10):
        params, opt_state, loss = step(params, opt_state, jax.random.key(index))
        losses.append(float(loss))
    # A fresh model is the identity (zero-initialised output conv), so the first loss is
    # exactly the degraded input's.
    np.testing.assert_allclose(losses[0], float(jnp.mean(jnp.abs(degraded - target))), rtol=1e-5)
    assert losses[-1] < 0.75 * losses[0], losses


def test_presets_match_swinir_sizes():
    light = count_params(abstract_params(build_model({"name": "swin_light"})))
    base = count_params(abstract_params(build_model({"name": "swin_base"})))
    # SwinIR's published 0.9M / 11.9M include an upsampler this sharpening network lacks.
    assert light == 905_283 and abs(light / 0.9e6 - 1) < 0.1
    assert base == 11_504_163 and abs(base / 11.9e6 - 1) < 0.1


@pytest.mark.parametrize("key", ["swin_tiny", "realtime"])
def test_bfloat16_forward_stays_close_to_float32(key):
    x = _images((1, 32, 40, 3), seed=5)
    model32, model16 = _tiny_model(key, "float32"), _tiny_model(key, "bfloat16")
    variables = {"params": _random_params(model32)}
    y32 = jax.jit(model32.apply)(variables, x)
    y16 = jax.jit(model16.apply)(variables, x)
    assert y16.dtype == jnp.float32
    diff = float(jnp.max(jnp.abs(y16 - y32)))
    assert 0 < diff < 2e-2


@pytest.mark.parametrize("name", ["realtime", "rep", "rep_x2"])
def test_real_time_students_fit_the_1080p_output_budget(name):
    model = build_model({"name": name, "overrides": {"folded": True}} if name.startswith("rep") else {"name": name})
    frame = (1080 // model.scale, 1920 // model.scale)  # a 1080p *output*
    gflops = gflops_per_frame(model, height=frame[0], width=frame[1])
    assert 10 < gflops <= 20


def test_the_half_resolution_swin_body_costs_about_a_quarter():
    full = gflops_per_frame(build_model({"name": "swin_tiny"}), height=64, width=64)
    half = gflops_per_frame(build_model({"name": "swin_tiny", "overrides": {"body_factor": 2}}), height=64, width=64)
    assert 0.2 < half / full < 0.35


def test_registry_builds_from_json_like_config():
    cfg = model_config("swin_tiny", dtype="bfloat16", depths=[1, 1], num_heads=[2, 2])
    model = build_model(cfg.to_dict())
    assert model.depths == (1, 1) and model.dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "swin_huge"}, "valid names are: swin_tiny, swin_light"),
        ({"name": "realtime", "overrides": {"depth": 3}}, "valid fields are: width, num_blocks"),
        ({"name": "realtime", "dtype": "float16"}, "use one of: float32, bfloat16"),
        ({"name": "realtime", "size": 3}, "valid keys are: name, dtype, overrides"),
        ({"name": "swin_tiny", "overrides": {"num_heads": (5, 2)}}, "must be divisible"),
    ],
)
def test_registry_rejects_bad_configs_with_one_sentence(cfg, message):
    with pytest.raises(ValueError, match=message):
        build_model(cfg)
