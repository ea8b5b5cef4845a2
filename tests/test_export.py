"""kdjax.serving.export: the exported StableHLO and ONNX files compute what the model computes.

The released realtime student is exported and run on Set5 (skipped when ../shared/data is
absent) and on odd-sized crops of scikit-image's photos: the StableHLO round trip must equal
`model.apply` to float rounding, onnxruntime must match within 1/255. The ONNX tests skip
when onnx/onnxruntime (the `export` extra) are not installed.
"""

from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from PIL import Image

from kdjax import weights
from kdjax.models import build_model, model_config
from kdjax.models.layers import upscale_bicubic
from kdjax.serving.export import ONNX_INPUT, export_onnx, export_stablehlo, load_stablehlo

REPO = Path(__file__).resolve().parents[1]
SET5 = REPO.parent / "shared" / "data" / "Set5"
RELEASED = "realtime_kd_x2"
STABLEHLO_TOLERANCE = 1e-5
ONNX_TOLERANCE = 1 / 255


def _released_params_path() -> Path:
    for folder in (REPO / "pretrained", REPO / "kdjax" / "pretrained"):
        if (folder / RELEASED / "params.msgpack").exists():
            return folder / RELEASED / "params.msgpack"
    raise FileNotFoundError(f"{RELEASED} is in neither pretrained/ nor kdjax/pretrained/.")


def _abstract_params(model):
    """The "params" shapes, traced not run: eager `model.init` takes seconds on a busy CPU."""
    zeros = jnp.zeros((1, 16, 16, 3))
    return jax.eval_shape(lambda: model.init(jax.random.key(0), zeros)["params"])


@pytest.fixture(scope="module")
def realtime():
    """The released realtime student, its params and a jitted reference forward pass."""
    model = build_model(model_config("realtime"))
    template = _abstract_params(model)
    params = flax.serialization.from_bytes(template, _released_params_path().read_bytes())
    reference = jax.jit(lambda x: model.apply({"params": params}, x))
    return model, params, lambda x: np.asarray(reference(x))


@pytest.fixture(scope="module")
def set5():
    """Set5 images as float32 (1, H, W, 3) in [0, 1]; all their sizes are multiples of 4."""
    paths = sorted(SET5.glob("*.png"))
    if not paths:
        pytest.skip(f"Set5 is not in {SET5}.")
    return [np.asarray(Image.open(path).convert("RGB"), np.float32)[None] / 255 for path in paths]


@pytest.fixture(scope="module")
def odd_crops():
    """A batch of two 61x67 photo crops and one 93x5 crop: H, W not multiples of 4."""
    astronaut = np.asarray(skimage.data.astronaut(), np.float32) / 255
    chelsea = np.asarray(skimage.data.chelsea(), np.float32) / 255
    pair = np.stack([astronaut[100:161, 200:267], chelsea[50:111, 150:217]])
    return [pair, chelsea[None, :93, 7:12]]


@pytest.fixture(scope="module")
def stablehlo_file(realtime, tmp_path_factory):
    model, params, _ = realtime
    path = tmp_path_factory.mktemp("export") / "realtime.stablehlo"
    export_stablehlo(model, params, path)
    return path


def _max_difference(actual, expected) -> float:
    assert actual.shape == expected.shape and actual.dtype == np.float32
    return float(np.abs(actual - expected).max())


def test_the_released_model_changes_the_images_more_than_the_tolerances(realtime, set5):
    # Otherwise an exported identity would pass the comparisons below.
    _, _, reference = realtime
    assert max(_max_difference(reference(image), image) for image in set5) > 5 * ONNX_TOLERANCE


def test_stablehlo_round_trip_equals_model_apply_on_set5(realtime, set5, stablehlo_file):
    _, _, reference = realtime
    exported_forward = load_stablehlo(stablehlo_file)
    for image in set5:
        out = np.asarray(exported_forward(image))
        assert _max_difference(out, reference(image)) <= STABLEHLO_TOLERANCE


def test_stablehlo_export_is_dynamic_in_batch_height_and_width(realtime, odd_crops, stablehlo_file):
    _, _, reference = realtime
    exported_forward = load_stablehlo(stablehlo_file)
    for batch in odd_crops:
        out = np.asarray(exported_forward(batch))
        assert _max_difference(out, reference(batch)) <= STABLEHLO_TOLERANCE


def test_stablehlo_rejects_inputs_smaller_than_the_models_size_multiple(stablehlo_file):
    with pytest.raises(ValueError, match=r"Input float32\[1, 3, 8, 3\] does not fit"):
        load_stablehlo(stablehlo_file)(np.zeros((1, 3, 8, 3), np.float32))


def test_stablehlo_fixed_shape_export_for_several_platforms(realtime, odd_crops, tmp_path):
    model, params, reference = realtime
    batch = odd_crops[0]
    exported = export_stablehlo(
        model, params, tmp_path / "fixed", height=61, width=67, batch=2, platforms=("cpu", "cuda")
    )
    assert exported.platforms == ("cpu", "cuda")
    assert exported.in_avals[0].shape == (2, 61, 67, 3)
    exported_forward = load_stablehlo(tmp_path / "fixed")
    out = np.asarray(exported_forward(batch))
    assert _max_difference(out, reference(batch)) <= STABLEHLO_TOLERANCE
    with pytest.raises(ValueError, match="does not fit the exported float32"):
        exported_forward(batch[:1])


@pytest.fixture(scope="module")
def onnxruntime():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def _run_onnx(onnxruntime, path, images):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {ONNX_INPUT: images})[0]


@pytest.fixture(scope="module")
def onnx_file(realtime, onnxruntime, tmp_path_factory):
    model, params, _ = realtime
    path = tmp_path_factory.mktemp("export") / "realtime.onnx"
    export_onnx(model, params, path)
    return path


def test_onnx_matches_kdjax_on_set5(realtime, set5, onnxruntime, onnx_file):
    _, _, reference = realtime
    for image in set5:
        out = _run_onnx(onnxruntime, onnx_file, image)
        assert _max_difference(out, reference(image)) <= ONNX_TOLERANCE


def test_onnx_export_is_dynamic_in_batch_height_and_width(
    realtime, odd_crops, onnxruntime, onnx_file
):
    _, _, reference = realtime
    for batch in odd_crops:
        out = _run_onnx(onnxruntime, onnx_file, batch)
        assert _max_difference(out, reference(batch)) <= ONNX_TOLERANCE


def test_onnx_fixed_shape_export_pads_and_crops(realtime, odd_crops, onnxruntime, tmp_path):
    model, params, reference = realtime
    batch = odd_crops[0]
    export_onnx(model, params, tmp_path / "fixed.onnx", height=61, width=67)
    out = _run_onnx(onnxruntime, tmp_path / "fixed.onnx", batch)
    assert _max_difference(out, reference(batch)) <= ONNX_TOLERANCE


def test_onnx_exports_the_full_resolution_residual_student(onnxruntime, tmp_path):
    # Random non-zero parameters: a fresh student's zero-initialised last conv is the identity.
    model = build_model(model_config("residual", width=8, num_blocks=2))
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda leaf: 0.2 * rng.standard_normal(leaf.shape, np.float32), _abstract_params(model)
    )
    images = rng.random((2, 13, 9, 3), dtype=np.float32)
    expected = np.asarray(jax.jit(model.apply)({"params": params}, images))
    assert _max_difference(expected, images) > 0.1
    export_onnx(model, params, tmp_path / "residual.onnx")
    out = _run_onnx(onnxruntime, tmp_path / "residual.onnx", images)
    assert _max_difference(out, expected) <= 1e-5


def test_onnx_exports_the_released_rep_upscaler(odd_crops, onnxruntime, tmp_path):
    """x2 at the input's resolution, pixel-shuffled, plus the MATLAB-bicubic upscaled input."""
    config, params = weights.restore_params(REPO / "pretrained" / "rep_kd_x2")
    model = build_model(config.model)
    export_onnx(model, params, tmp_path / "rep_x2.onnx")
    forward = jax.jit(lambda x: model.apply({"params": params}, x))
    for batch in odd_crops:
        expected = np.asarray(forward(batch))
        out = _run_onnx(onnxruntime, tmp_path / "rep_x2.onnx", batch)
        assert out.shape == (batch.shape[0], 2 * batch.shape[1], 2 * batch.shape[2], 3)
        assert _max_difference(out, expected) <= 1e-5
        # The learned residual matters, so a graph missing the body would not pass.
        assert _max_difference(np.asarray(upscale_bicubic(batch, 2)), expected) > 0.01


def test_onnx_folds_an_unfolded_rep_sharpener(onnxruntime, tmp_path):
    model = build_model(model_config("rep", width=8, num_blocks=2))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda leaf: 0.2 * rng.standard_normal(leaf.shape, np.float32), _abstract_params(model))
    images = rng.random((2, 13, 9, 3), dtype=np.float32)
    expected = np.asarray(jax.jit(model.apply)({"params": params}, images))
    assert _max_difference(expected, images) > 0.1
    export_onnx(model, params, tmp_path / "rep.onnx", height=13, width=9)
    assert _max_difference(_run_onnx(onnxruntime, tmp_path / "rep.onnx", images), expected) <= 1e-5


def test_export_errors_name_the_input_and_the_fix(realtime, tmp_path):
    model, params, _ = realtime
    with pytest.raises(ValueError, match=r"pass variables\['params'\]"):
        export_stablehlo(model, {"params": params}, tmp_path / "a")
    narrow = build_model(model_config("realtime", width=16))
    with pytest.raises(ValueError, match=r"params do not match RealtimeCNN\(width=16"):
        export_stablehlo(narrow, params, tmp_path / "a")
    with pytest.raises(ValueError, match=r"height=3 is invalid; pass an int >= 4"):
        export_stablehlo(model, params, tmp_path / "a", height=3)
    with pytest.raises(ValueError, match="ONNX export supports the realtime, residual and rep students, not Plain"):
        export_onnx(build_model(model_config("plain3")), params, tmp_path / "a.onnx")
    (tmp_path / "junk").write_bytes(b"not a module")
    with pytest.raises(ValueError, match="is not a serialized jax.export module"):
        load_stablehlo(tmp_path / "junk")
