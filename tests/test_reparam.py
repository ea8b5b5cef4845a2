"""Re-parameterisable convolutions: trained as branches, folded into one convolution with the
same outputs, and the folded form is what serving and export run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from kdjax import config as config_lib
from kdjax import serving, weights
from kdjax.serving import export
from kdjax.images import to_unit_float
from kdjax.models import build_model, forward_cost, inference_form, model_config
from kdjax.models.reparam import RepConv, fold_branches, is_unfolded


def _photo(height: int = 48, width: int = 40) -> jax.Array:
    """A crop of a real photograph (scikit-image's cat), (1, H, W, 3) in [0, 1]."""
    return jnp.asarray(to_unit_float(skimage.data.chelsea()[100 : 100 + height, 150 : 150 + width]))[None]


def _trained_like(params, seed: int = 0):
    """Every parameter moved by noise of its own scale, as training would: zero-initialised
    branches become non-zero, so every branch contributes to the fold."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    moved = [leaf + 0.1 * jax.random.normal(key, leaf.shape) for leaf, key in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, moved)


@pytest.mark.parametrize(
    "fields",
    [
        dict(features=8, expand=2, identity=True),
        dict(features=5, expand=3, identity=False, kernel_size=5),
    ],
)
def test_a_folded_repconv_equals_its_branches_on_a_photo(fields):
    x = _photo()
    branches = RepConv(**fields)
    # A first layer reads RGB; to test the identity branch the input needs the output's channels.
    channels = fields["features"] if fields["identity"] else 3
    x = jnp.tile(x, (1, 1, 1, 3))[..., :channels]
    params = _trained_like(branches.init(jax.random.key(0), x)["params"])
    folded = fold_branches(params, identity=fields["identity"])
    assert is_unfolded(params) and set(folded) == {"conv"}
    expected = branches.apply({"params": params}, x)
    actual = RepConv(**fields, folded=True).apply({"params": folded}, x)
    np.testing.assert_allclose(actual, expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("fields", [dict(scale=3, expand=2), dict(scale=1, shuffle_factor=2)])
def test_the_folded_student_equals_the_trained_one_on_a_photo(fields):
    config = model_config("rep", width=8, num_blocks=3, **fields)
    model = build_model(config)
    photo = _photo(45, 37)  # odd sizes: the sharpen form pads to its factor
    params = _trained_like(model.init(jax.random.key(0), photo)["params"])
    folded_config, folded_params = inference_form(config, params)
    folded_model = build_model(folded_config)
    assert folded_model.folded and not any(is_unfolded(value) for value in folded_params.values())
    np.testing.assert_allclose(
        folded_model.apply({"params": folded_params}, photo), model.apply({"params": params}, photo), atol=1e-4
    )
    # Folding twice changes nothing; inference costs what the plain network costs.
    again_config, again_params = inference_form(folded_config, folded_params)
    assert again_config.to_dict() == folded_config.to_dict() and again_params is folded_params
    plain = forward_cost(folded_model, folded_params, height=64, width=64).flops
    assert plain < forward_cost(model, params, height=64, width=64).flops / (2 if model.expand else 1.1)  # the 1x1 branch alone adds 1/9


def test_serving_and_export_run_the_folded_network(tmp_path):
    config = model_config("rep", width=8, num_blocks=2, scale=2)
    model = build_model(config)
    params = _trained_like(model.init(jax.random.key(0), _photo())["params"])
    full = config_lib.base_config()
    full.model = config
    folder = weights.write_model_folder(tmp_path / "rep", full, params, {"model": "rep"})
    upscaler = serving.load(folder, tile=None)
    assert upscaler.model.folded
    image = (255 * np.asarray(_photo()[0])).round().astype(np.uint8)
    expected = np.asarray(model.apply({"params": params}, to_unit_float(image)[None])[0])
    expected = (np.clip(expected, 0, 1) * 255).round().astype(np.uint8)
    difference = np.abs(upscaler(image).astype(int) - expected.astype(int))
    assert difference.max() <= 1  # float32 rounding can move a value across a .5 boundary


def test_the_folded_upscaler_exports_to_stablehlo(tmp_path):
    config = model_config("rep_x2", width=8, num_blocks=2)
    model = build_model(config)
    params = _trained_like(model.init(jax.random.key(0), _photo())["params"])
    folded_config, folded_params = inference_form(config, params)
    export.export_stablehlo(build_model(folded_config), folded_params, tmp_path / "rep.stablehlo")
    photo = _photo(21, 30)
    exported = export.load_stablehlo(tmp_path / "rep.stablehlo")(photo)
    np.testing.assert_allclose(exported, model.apply({"params": params}, photo), atol=1e-4)
