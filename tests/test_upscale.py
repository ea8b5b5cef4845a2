"""The upscale task end to end: low-resolution patches, models that upscale, seamless tiles in
output coordinates, the bicubic baseline in evaluation, a tiny run that learns."""

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import data, degradations, serving, torch_import, train
from kdjax.data import transforms
from kdjax.imresize import imresize
from kdjax.models import build_model, layers, model_config
from kdjax.serving import tiling
from test_inference import _apply_fn, _init
from test_train import TINY_TEACHER, tiny_config

REPO = Path(__file__).resolve().parents[1]


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.normal(0, 1, (height, width, 3)), axis=0), axis=1)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (255 * smooth).astype(np.uint8)


def test_upscale_patches_are_the_whole_images_downscale_cut_where_the_target_is():
    config = degradations.bicubic_only_config(scale=2, task="upscale")
    degradation = degradations.build_degradation(config, train=True)
    image = _texture(64, 80, 0)
    low = imresize(image, scale=0.5)  # what evaluation sees: the whole image downscaled
    patch = transforms.TrainPatch(patch_size=16, degradation=degradation, min_size_policy="error", augment=False)
    for seed in range(6):
        example = patch({"image": image, "name": "texture"}, np.random.default_rng(seed))
        assert example["input"].shape == (8, 8, 3) and example["target"].shape == (16, 16, 3)
        matches = [
            (top, left)
            for top in range(0, 64 - 15, 2)
            for left in range(0, 80 - 15, 2)
            if np.array_equal(image[top : top + 16, left : left + 16], example["target"])
        ]
        (top, left) = matches[0]
        np.testing.assert_array_equal(example["input"], low[top // 2 : top // 2 + 8, left // 2 : left // 2 + 8])


def test_upscale_needs_bicubic_and_a_patch_on_the_scale():
    with pytest.raises(ValueError, match="add 'bicubic' to degradation.ops"):
        degradations.build_degradation(
            degradations.default_degradation_config(ops=("noise",), task="upscale"), train=True
        )
    config = data.default_data_config()
    config.degradation = degradations.bicubic_only_config(scale=3, task="upscale")
    config.patch_size = 16
    with pytest.raises(ValueError, match="multiple of data.degradation.scale=3"):
        data.make_train_dataset(config, global_batch_size=2, seed=0, process_index=0, process_count=1)


@pytest.mark.parametrize(
    "name, fields",
    [
        ("plain3", {"features": (8,), "kernel_sizes": (3, 3), "scale": 3}),
        ("residual", {"width": 4, "num_blocks": 1, "scale": 2}),
        ("separable", {"width": 4, "num_blocks": 1, "scale": 2}),
        ("realtime", {"width": 4, "num_blocks": 1, "scale": 2, "shuffle_factor": 2}),
        ("rep", {"width": 4, "num_blocks": 1, "scale": 3}),
        ("swin_tiny", {**TINY_TEACHER, "scale": 4}),
        # rlfn and bsrn: tests/test_torch_import.py::test_modules_keep_the_model_contract
    ],
)
def test_every_model_upscales_odd_sizes_to_scale_times_the_input(name, fields):
    model = build_model(model_config(name, **fields))
    x = jax.random.uniform(jax.random.key(0), (2, 13, 7, 3))
    params = model.init(jax.random.key(1), x)
    out, features = model.apply(params, x, return_features=True)
    assert out.shape == (2, 13 * model.scale, 7 * model.scale, 3) and out.dtype == jnp.float32
    assert set(features) == set(model.feature_names)


@pytest.mark.parametrize("name", ["realtime", "rep"])
def test_a_fresh_upscaling_student_is_matlab_bicubic_upscaling(name):
    model = build_model(model_config(name, scale=2))
    x = jax.random.uniform(jax.random.key(0), (1, 12, 8, 3))  # a multiple of its factor 4: no padding
    out = model.apply(model.init(jax.random.key(1), x), x)
    np.testing.assert_allclose(out[0], imresize(np.asarray(x[0], np.float64), scale=2), atol=1e-5)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_upscaling_is_matlabs_imresize_borders_included(scale):
    image = np.random.default_rng(scale).random((13, 6, 3))
    upscaled = layers.upscale_bicubic(jnp.asarray(image[None], jnp.float32), scale)[0]
    np.testing.assert_allclose(upscaled, imresize(image, scale=scale), atol=1e-5)


@pytest.mark.parametrize(
    "name, fields, radius",
    [
        # LR pixels an output pixel sees: one per 3x3 conv (head, 2 per block, tail), or the
        # 2-pixel support of the bicubic residual, whichever is larger.
        ("residual", {"width": 8, "num_blocks": 2, "scale": 2}, 6),
        # convs at half the LR resolution, plus the position inside a 2x2 cell
        ("realtime", {"width": 8, "num_blocks": 1, "scale": 2, "shuffle_factor": 2}, 2 * 4 + 1),
    ],
)
def test_upscale_tiles_cut_in_input_and_blended_in_output_coordinates_are_seamless(name, fields, radius):
    model = build_model(model_config(name, **fields))
    params = _init(model)
    overlap = 4 * radius  # the blend ignores a quarter of each overlap
    tile = 2 * overlap + 8
    images = jax.random.uniform(jax.random.key(1), (1, 93, 131, 3))
    predict = functools.partial(
        tiling.predict, _apply_fn(model), tile=tile, overlap=overlap, tile_batch=3,
        multiple=model.size_multiple, scale=model.scale,
    )
    tiled = jax.jit(predict)(params, images)
    assert len(tiling.plan_axis(131 + (-131 % model.size_multiple), tile, overlap, model.size_multiple).starts) >= 3
    untiled = jax.jit(_apply_fn(model))(params, images)
    assert tiled.shape == untiled.shape == (1, 186, 262, 3)
    np.testing.assert_allclose(np.asarray(tiled), np.asarray(untiled), atol=1e-5)


def test_sharpener_upscales_and_says_so():
    model = build_model(model_config("realtime", width=4, num_blocks=1, scale=2, shuffle_factor=2))
    sharpener = serving.Sharpener(model, _init(model), tile=16, overlap=4)
    image = np.asarray(jax.random.randint(jax.random.key(0), (21, 34, 3), 0, 256), np.uint8)
    assert sharpener.scale == 2
    out = sharpener(image)
    assert out.shape == (42, 68, 3) and out.dtype == np.uint8
    batch = sharpener.sharpen_batch(np.stack([image, image]))
    np.testing.assert_array_equal(batch[1], out)


def test_a_tiny_upscale_run_learns_and_beats_bicubic(tmp_path):
    student = model_config("realtime", width=8, num_blocks=2, scale=2, shuffle_factor=2)
    config = tiny_config(tmp_path, model=student, steps=250)
    config.data.degradation = degradations.bicubic_only_config(scale=2, task="upscale")
    config.data.patch_size = 32
    # Photographs (the tiny config's noisy gradients have nothing to learn beyond bicubic).
    config.data.eval_source = data.skimage_source_config("eval")
    config.optim.learning_rate = 3e-3
    config.eval.every_steps = 250
    config.checkpoint.every_steps = 250
    report = train.train_and_evaluate(config, tmp_path / "run", devices=jax.devices()[:1])
    results = report["results"]
    # The "input" row is the bicubic baseline: MATLAB bicubic of the low-resolution input.
    examples = list(data.make_eval_dataset(config.data))
    assert examples[0]["input"].shape[0] * 2 == examples[0]["target"].shape[0]
    assert results["model"]["psnr_y"] > results["input"]["psnr_y"] + 0.1
    saved = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert saved["results"]["model"]["psnr_y"] == pytest.approx(results["model"]["psnr_y"])
    # The trained workdir serves an upscaler.
    upscaler = serving.load(tmp_path / "run")
    assert upscaler.scale == 2 and upscaler(examples[0]["input"]).shape == examples[0]["target"].shape


def test_a_model_whose_scale_does_not_fit_the_task_is_one_sentence(tmp_path):
    config = tiny_config(tmp_path)  # realtime at scale 1
    config.data.degradation = degradations.bicubic_only_config(scale=2, task="upscale")
    with pytest.raises(ValueError, match=r"overrides.scale=2"):
        train.train_and_evaluate(config, tmp_path / "run", devices=jax.devices()[:1])


def test_a_student_distils_from_an_imported_teacher(tmp_path):
    """An imported model folder is a teacher like any other: run inside the step, frozen."""
    checkpoint = REPO / ".." / "shared" / "weights" / "rlfn_s_x2.pth"
    if not checkpoint.is_file():
        pytest.skip(f"{checkpoint} is not available")
    teacher = torch_import.import_to_folder("rlfn_s", checkpoint, tmp_path / "rlfn_s_x2")
    student = model_config("realtime", width=4, num_blocks=2, scale=2, shuffle_factor=2)
    config = tiny_config(tmp_path, model=student, steps=3)
    config.data.degradation = degradations.bicubic_only_config(scale=2, task="upscale")
    config.teacher.workdir = str(teacher)
    config.loss.output_kd_weight = 0.5
    config.loss.feature_kd_weight = 0.1
    config.loss.feature_pairs = "block_1:block_5"
    before = (teacher / "params.msgpack").read_bytes()
    report = train.train_and_evaluate(config, tmp_path / "student", devices=jax.devices()[:1])
    assert report["step"] == 3 and "teacher" in report["results"]
    assert report["results"]["teacher"]["psnr_y"] > report["results"]["input"]["psnr_y"]
    assert (teacher / "params.msgpack").read_bytes() == before
    assert json.loads((tmp_path / "student" / "config.json").read_text())["teacher"]["model"]["name"] == "rlfn_s"
