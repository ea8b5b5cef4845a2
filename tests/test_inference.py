"""Tests for kdjax.serving: tile plans, tiled == untiled for convs, no seams for the Swin
teacher, sizes and channel layouts, compile caching, self-ensemble, and `sharpen_paths`."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from PIL import Image

from kdjax import checkpoints, serving, train_state, weights
from kdjax.serving import files, tiling
from kdjax.serving import sharpener as sharpener_lib
from kdjax import config as config_lib
from kdjax.images import ImageReadError
from kdjax.models import build_model, model_config
from kdjax.models.base import ImageModel

TINY_RESIDUAL = {"width": 8, "num_blocks": 2}
TINY_REALTIME = {"width": 8, "num_blocks": 1}


def _receptive_radius(name: str, fields: dict) -> int:
    """How far (pixels) an output pixel of a tiny student sees: one pixel per 3x3 conv."""
    convs = 1 + 2 * fields["num_blocks"] + 1  # head, two per residual block, tail
    if name == "residual":
        return convs
    factor = 4  # realtime: convs at 1/4 resolution, plus the position inside a 4x4 cell
    return factor * convs + factor - 1


def _init(model: nn.Module, output_gain: float = 0.1):
    """Initial parameters, except for the zero-initialised output conv: random with `output_gain`
    times fan-in scaling, so the model's residual is not trivially zero."""
    params = dict(model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"])
    kernel = params["conv_last"]["kernel"]
    noise = jax.random.normal(jax.random.key(1), kernel.shape) / np.sqrt(np.prod(kernel.shape[:-1]))
    params["conv_last"] = dict(params["conv_last"], kernel=output_gain * noise)
    return params


def _apply_fn(model: nn.Module):
    return lambda params, x: model.apply({"params": params}, x)


@functools.cache
def _residual():
    model = build_model(model_config("residual", **TINY_RESIDUAL))
    return model, _init(model)


class Identity(ImageModel):
    """Returns its input: equivariant to every flip and rotation."""

    @nn.compact
    def __call__(self, x, *, train=False, return_features=False):
        return x


class ColumnRamp(ImageModel):
    """Ignores the image and predicts column / (W - 1): not flip or rotation equivariant."""

    @nn.compact
    def __call__(self, x, *, train=False, return_features=False):
        ramp = jnp.linspace(0.0, 1.0, x.shape[2])[None, None, :, None]
        return jnp.broadcast_to(ramp, x.shape)


@pytest.mark.parametrize(
    "length, tile, overlap, multiple", [(150, 64, 24, 1), (1080, 512, 32, 8), (348, 160, 76, 4), (65, 64, 16, 1)]
)
def test_tile_plan_covers_the_axis_with_weights_summing_to_one(length, tile, overlap, multiple):
    plan = tiling.plan_axis(length, tile, overlap, multiple)
    starts = plan.starts
    assert starts[0] == 0 and starts[-1] + plan.size == length
    assert plan.size % multiple == 0 and np.all(starts % multiple == 0)
    shared = starts[:-1] + plan.size - starts[1:]
    assert np.all(shared >= overlap)
    coverage = np.zeros(length)
    for start, weights in zip(starts, plan.weights):
        coverage[start : start + plan.size] += weights
    np.testing.assert_allclose(coverage, 1.0, atol=1e-12)
    # Each tile ignores the quarter of every overlap next to its own inner edges.
    for index in range(len(starts) - 1):
        margin = shared[index] // 4
        assert np.all(plan.weights[index, plan.size - margin :] == 0)
        assert np.all(plan.weights[index + 1, :margin] == 0)
    assert np.all(plan.weights[0, : shared[0] // 4 + 1] > 0)  # no ramp at the image border


def test_tile_plan_is_one_tile_when_the_axis_fits():
    plan = tiling.plan_axis(40, 64, 16)
    assert plan.starts.tolist() == [0] and plan.size == 40 and np.all(plan.weights == 1)
    assert tiling.plan_axis(40, None, 16).size == 40


@pytest.mark.parametrize(
    "name, fields, shape",
    [("residual", TINY_RESIDUAL, (2, 150, 191)), ("realtime", TINY_REALTIME, (1, 203, 347))],
)
def test_tiled_equals_untiled_for_a_conv_whose_receptive_field_fits_the_overlap(name, fields, shape):
    model = build_model(model_config(name, **fields))
    params = _init(model)
    overlap = 4 * _receptive_radius(name, fields)  # the blend ignores a quarter of each overlap
    tile = 2 * overlap + 8
    images = jax.random.uniform(jax.random.key(1), (*shape, 3))
    tiled = jax.jit(
        functools.partial(
            tiling.predict,
            _apply_fn(model),
            tile=tile,
            overlap=overlap,
            tile_batch=3,
            multiple=model.size_multiple,
        )
    )(params, images)
    rows = tiling.plan_axis(shape[1] + (-shape[1] % 4), tile, overlap, 4)
    assert len(rows.starts) >= 2  # really tiled
    untiled = jax.jit(_apply_fn(model))(params, images)
    assert float(jnp.abs(untiled - images).max()) > 0.1  # the model changes the image
    np.testing.assert_allclose(np.asarray(tiled), np.asarray(untiled), atol=1e-5)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2)))


def _tile_edges(plan: tiling.AxisTiles, length: int) -> list[int]:
    """Pixels where a tile begins or ends inside the image (where seams would show)."""
    edges = {int(s) for s in plan.starts[1:]} | {int(s) + plan.size - 1 for s in plan.starts[:-1]}
    return sorted(e for e in edges if e < length)


def _near(edges: list[int], length: int, radius: int = 2) -> np.ndarray:
    mask = np.zeros(length, bool)
    for edge in edges:
        mask[max(edge - radius, 0) : edge + radius + 1] = True
    return mask


def test_swin_teacher_tiled_matches_untiled_without_seams():
    model = build_model(model_config("swin_tiny", embed_dim=16, drop_path_rate=0.0))
    params = _init(model, output_gain=0.02)
    image = skimage.data.astronaut()[:300, :500].astype(np.float32)[None] / 255.0
    apply = jax.jit(_apply_fn(model))
    tile, overlap, multiple = 128, 32, model.size_multiple
    assert multiple == 8
    tiled = jax.jit(
        functools.partial(
            tiling.predict, _apply_fn(model), tile=tile, overlap=overlap, tile_batch=4, multiple=multiple
        )
    )(params, image)
    tiled, untiled = np.asarray(tiled)[0], np.asarray(apply(params, image))[0]

    psnr_untiled = _psnr(untiled, image[0])
    assert psnr_untiled < 40  # the teacher really changes the image
    assert abs(_psnr(tiled, image[0]) - psnr_untiled) < 0.5
    assert _psnr(tiled, untiled) > 50

    error = np.abs(tiled - untiled).max(-1)
    rows = tiling.plan_axis(304, tile, overlap, multiple)
    cols = tiling.plan_axis(504, tile, overlap, multiple)
    seams = _near(_tile_edges(rows, 300), 300)[:, None] | _near(_tile_edges(cols, 500), 500)[None, :]
    assert seams.any() and (~seams).any()
    assert error[seams].max() < 2 * error[~seams].max() + 1e-6

    # The check can fail: one raw tile, not blended, is much worse at its edges than inside.
    top, left = int(rows.starts[1]), int(cols.starts[1])
    raw = np.asarray(apply(params, image[:, top : top + tile, left : left + tile]))[0]
    raw_error = np.abs(raw - untiled[top : top + tile, left : left + tile]).max(-1)
    edge = np.ones((tile, tile), bool)
    edge[3:-3, 3:-3] = False
    assert raw_error[edge].max() > 2 * raw_error[~edge].max()


def test_sharpener_handles_odd_tiny_grayscale_and_rgba_images():
    model, params = _residual()
    # The overlap holds 4x the receptive-field radius: tiling does not change the output.
    overlap = 4 * _receptive_radius("residual", TINY_RESIDUAL)
    sharpener = serving.Sharpener(model, params, tile=2 * overlap, overlap=overlap, tile_batch=2)
    rng = np.random.default_rng(0)
    apply = jax.jit(_apply_fn(model))

    def expected(rgb: np.ndarray) -> np.ndarray:
        y = np.asarray(apply(params, rgb[None].astype(np.float32) / 255.0))[0]
        return np.round(np.clip(y, 0, 1) * 255).astype(np.uint8)

    rgb = rng.integers(0, 256, (37, 91, 3), dtype=np.uint8)  # odd, wider than a tile
    gray = rng.integers(0, 256, (5, 7), dtype=np.uint8)  # smaller than a tile
    rgba = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    single_channel = rng.integers(0, 256, (1, 1, 1), dtype=np.uint8)
    cases = [
        (rgb, rgb),
        (gray, np.repeat(gray[..., None], 3, -1)),
        (rgba, rgba[..., :3]),
        (single_channel, np.repeat(single_channel, 3, -1)),
    ]
    for image, as_rgb in cases:
        out = sharpener.sharpen(image)
        assert out.dtype == np.uint8 and out.shape == (*image.shape[:2], 3)
        # Off by one at most where a float lands on .5 and rounds either way.
        assert np.abs(out.astype(int) - expected(as_rgb)).max() <= 1
    assert np.abs(sharpener.sharpen(rgb).astype(int) - rgb).mean() > 1  # not an identity

    realtime = build_model(model_config("realtime", **TINY_REALTIME))  # pads to multiples of 4
    out = serving.Sharpener(realtime, _init(realtime), tile=16, overlap=4).sharpen(rgb[:3, :5])
    assert out.shape == (3, 5, 3)


def test_same_shape_compiles_once_and_batches_match_single_images():
    model, params = _residual()
    sharpener = serving.Sharpener(model, params, tile=32, overlap=8, tile_batch=4)
    frames = np.random.default_rng(1).integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    first = sharpener.sharpen(frames[0])
    assert sharpener.trace_count == 1
    np.testing.assert_array_equal(sharpener.sharpen(frames[0].copy()), first)
    sharpener.sharpen(frames[1])
    assert sharpener.trace_count == 1

    batch = sharpener.sharpen_batch(frames)
    assert sharpener.trace_count == 2  # a (3, 40, 50, 3) batch is a new shape
    assert isinstance(batch, np.ndarray) and batch.shape == frames.shape
    np.testing.assert_array_equal(batch[0], first)
    sharpener.sharpen_batch(frames[::-1].copy())
    assert sharpener.trace_count == 2

    mixed = sharpener.sharpen_batch([frames[0], frames[1, :20], frames[2]])
    assert [m.shape for m in mixed] == [(40, 50, 3), (20, 50, 3), (40, 50, 3)]
    np.testing.assert_array_equal(mixed[0], first)
    sharpener.tile = 16
    sharpener.sharpen(frames[0])
    assert sharpener.trace_count == 5  # (2, 40, 50), (1, 20, 50), then the new tile size
    with pytest.raises(ValueError, match="sharpen_batch"):
        sharpener.sharpen_batch(frames[0])


def test_auto_tile_runs_whole_images_only_within_the_memory_budget(monkeypatch):
    model, params = _residual()
    monkeypatch.setattr(sharpener_lib, "AUTO_TILE", 32)
    frame = np.random.default_rng(2).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    roomy = serving.Sharpener(model, params, overlap=8, memory_budget_mib=1e6)
    roomy.sharpen(frame)
    assert roomy.trace_count == 1  # the whole-image function fits: used as is
    tight = serving.Sharpener(model, params, overlap=8, memory_budget_mib=0)
    tight_out = tight.sharpen(frame)
    assert tight.trace_count == 2  # whole image planned, over budget, then tiles of 32
    tiled = serving.Sharpener(model, params, tile=32, overlap=8)
    np.testing.assert_array_equal(tight_out, tiled.sharpen(frame))
    assert tight.compiled((1, 64, 96, 3)).memory_analysis().temp_size_in_bytes < (
        roomy.compiled((1, 64, 96, 3)).memory_analysis().temp_size_in_bytes
    )


def test_invalid_settings_are_rejected():
    model, params = _residual()
    with pytest.raises(ValueError, match="overlap=40"):
        serving.Sharpener(model, params, tile=64, overlap=40)
    with pytest.raises(ValueError, match="tile_batch=0"):
        serving.Sharpener(model, params, tile_batch=0)


def test_self_ensemble_maps_predictions_back_before_averaging():
    image = np.random.default_rng(2).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    identity = serving.Sharpener(Identity(), {}, tile=16, overlap=4, self_ensemble=True)
    np.testing.assert_array_equal(identity.sharpen(image), image)

    # column / (W - 1), averaged over its flips and transposes, is 0.5 everywhere.
    floats = jnp.asarray(image[None], jnp.float32) / 255.0
    ramp = functools.partial(ColumnRamp().apply, {"params": {}})
    predict = functools.partial(tiling.predict, lambda p, x: ramp(x), {}, tile=None, overlap=0, tile_batch=1)
    np.testing.assert_allclose(np.asarray(predict(floats, self_ensemble=True)), 0.5, atol=1e-6)
    assert float(jnp.ptp(predict(floats, self_ensemble=False))) == pytest.approx(1.0)


def _save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def identity_sharpener():
    return serving.Sharpener(Identity(), {}, tile=None)


def test_sharpen_paths_mirrors_a_folder_and_counts_skipped_and_failed_files(tmp_path):
    model, params = _residual()
    sharpener = serving.Sharpener(model, params, tile=None)
    rng = np.random.default_rng(3)
    images = {name: rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for name in ("a.png", "sub/deeper/b.bmp")}
    for name, image in images.items():
        _save_png(tmp_path / "in" / name, image)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "in" / "notes.txt").write_text("ignored")

    report = files.sharpen_paths(sharpener, tmp_path / "in", tmp_path / "out", progress=False)
    assert sorted(report.outputs) == [tmp_path / "out" / "a.png", tmp_path / "out" / "sub" / "deeper" / "b.png"]
    assert report.skipped == [(tmp_path / "in" / "notes.txt", files.NOT_AN_IMAGE_OR_VIDEO)]
    assert [src for src, _ in report.failed] == [tmp_path / "in" / "broken.png"]
    summary = report.summary().splitlines()
    assert summary[0] == f"skipped {tmp_path / 'in' / 'notes.txt'}: not an image or video file"
    assert summary[1].startswith(f"failed {tmp_path / 'in' / 'broken.png'}: ")
    assert re.fullmatch(
        rf"Wrote 2 images \(x1\) under {re.escape(str(tmp_path / 'out'))} in [0-9.]+ s; skipped 1 \(1 not images or "
        r"videos\); 1 failed\.", summary[2]
    ), summary[2]
    for name, image in images.items():
        out = np.asarray(Image.open((tmp_path / "out" / name).with_suffix(".png")))
        np.testing.assert_array_equal(out, sharpener.sharpen(image))
    assert not (tmp_path / "out" / "broken.png").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "sub"]

    again = files.sharpen_paths(sharpener, tmp_path / "in", tmp_path / "out", progress=False)
    assert again.outputs == [] and sorted(again.skipped)[0] == (tmp_path / "in" / "a.png", files.OUTPUT_EXISTS)
    assert "skipped 3 (1 not images or videos; 2 with an existing output, pass --overwrite)" in again.summary()
    assert len(files.sharpen_paths(sharpener, tmp_path / "in", tmp_path / "out", overwrite=True).outputs) == 2


def test_sharpen_paths_single_file(tmp_path, identity_sharpener):
    image = np.random.default_rng(4).integers(0, 256, (9, 8, 3), dtype=np.uint8)
    _save_png(tmp_path / "photo.png", image)
    assert files.sharpen_paths(identity_sharpener, tmp_path / "photo.png", tmp_path / "out").outputs == [
        tmp_path / "out" / "photo.png"
    ]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "photo.png")), image)
    with pytest.raises(ValueError, match="already exists"):
        files.sharpen_paths(identity_sharpener, tmp_path / "photo.png", tmp_path / "out" / "photo.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(ImageReadError, match="broken.png"):
        files.sharpen_paths(identity_sharpener, tmp_path / "broken.png", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        files.sharpen_paths(identity_sharpener, tmp_path / "missing.png", tmp_path / "out")


def test_sharpen_paths_never_overwrites_inputs(tmp_path, identity_sharpener):
    image = np.zeros((4, 4, 3), np.uint8)
    _save_png(tmp_path / "in" / "a.png", image)
    before = (tmp_path / "in" / "a.png").read_bytes()
    with pytest.raises(ValueError, match="input folder"):
        files.sharpen_paths(identity_sharpener, tmp_path / "in", tmp_path / "in" / ".." / "in", overwrite=True)
    with pytest.raises(ValueError, match="overwrite input"):
        files.sharpen_paths(identity_sharpener, tmp_path / "in" / "a.png", tmp_path / "in", overwrite=True)
    assert (tmp_path / "in" / "a.png").read_bytes() == before

    # An output folder inside the input folder is not read back as input on a second run.
    files.sharpen_paths(identity_sharpener, tmp_path / "in", tmp_path / "in" / "sharp")
    assert files.sharpen_paths(identity_sharpener, tmp_path / "in", tmp_path / "in" / "sharp", overwrite=True).outputs == [
        tmp_path / "in" / "sharp" / "a.png"
    ]


def test_sharpen_paths_reports_an_unwritable_output(tmp_path, identity_sharpener):
    _save_png(tmp_path / "in" / "a.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "blocker").write_text("a file where the output folder should go")
    with pytest.raises((OSError, ValueError), match="blocker"):
        files.sharpen_paths(identity_sharpener, tmp_path / "in" / "a.png", tmp_path / "blocker" / "a.png")


def test_load_restores_the_ema_parameters_of_a_training_workdir(tmp_path):
    config = config_lib.base_config()
    config.model = model_config("residual", **TINY_RESIDUAL)
    config.checkpoint.async_save = False
    weights.save_config(tmp_path, config)
    model = build_model(config.model)
    state = train_state.create_train_state(
        {"model": _init(model), "adapters": {}}, train_state.make_optimizer(config)
    )
    ema = jax.tree.map(lambda leaf: leaf + 0.01, state.params)
    manager = checkpoints.make_manager(tmp_path, config)
    data_iter = iter(grain.MapDataset.range(4).to_iter_dataset())
    checkpoints.save(manager, state.replace(ema_params=ema), data_iter, metrics={"psnr_y": 20.0})
    manager.close()

    sharpener = serving.load(tmp_path, which="latest", tile=None)
    assert isinstance(sharpener.model, type(model)) and sharpener.tile is None
    jax.tree.map(np.testing.assert_array_equal, sharpener.params, ema["model"])
    raw = serving.load(tmp_path, which="best", ema=False)
    jax.tree.map(np.testing.assert_array_equal, raw.params, state.params["model"])

    # An exported folder loads like the workdir it came from, without Orbax.
    exported = weights.export_params(tmp_path, tmp_path / "exported", which="latest")
    assert sorted(p.name for p in exported.iterdir()) == ["config.json", "export.json", "params.msgpack"]
    assert json.loads((exported / "export.json").read_text())["step"] == 0
    jax.tree.map(np.testing.assert_array_equal, serving.load(exported).params, ema["model"])
    wrong = exported.parent / "wrong"
    wrong.mkdir()
    config.model = model_config("residual", **{**TINY_RESIDUAL, "width": TINY_RESIDUAL["width"] + 1})
    weights.save_config(wrong, config)
    (wrong / "params.msgpack").write_bytes((exported / "params.msgpack").read_bytes())
    with pytest.raises(ValueError, match="wrong shape for residual"):
        serving.load(wrong)

    with pytest.raises(FileNotFoundError, match="neither a folder nor a released model"):
        serving.load(tmp_path / "nowhere")


def test_loading_a_distillation_workdir_builds_no_optimizer_and_no_teacher(tmp_path):
    """Serving reads only the student's parameters: a process that loads a distilled student's
    workdir never imports the optimizer library or training code, and never opens the teacher
    (its folder here does not exist, and feature adapters are configured)."""
    config = config_lib.base_config()
    config.model = model_config("residual", **TINY_RESIDUAL)
    config.teacher.workdir = str(tmp_path / "teacher_that_is_gone")
    config.teacher.model = model_config("swin_tiny")
    config.loss.output_kd_weight = 0.5
    config.loss.feature_kd_weight = 0.1
    config.loss.feature_pairs = "block_0:group_0"
    config.checkpoint.async_save = False
    weights.save_config(tmp_path / "student", config)
    model = build_model(config.model)
    adapters = {"block_0_to_group_0": {"kernel": np.zeros((1, 1, TINY_RESIDUAL["width"], 24)), "bias": np.zeros(24)}}
    state = train_state.create_train_state(
        {"model": _init(model), "adapters": adapters}, train_state.make_optimizer(config)
    )
    manager = checkpoints.make_manager(tmp_path / "student", config)
    checkpoints.save(manager, state, iter(grain.MapDataset.range(4).to_iter_dataset()))
    manager.close()
    script = (
        "import sys, kdjax; "
        f"sharpener = kdjax.load({str(tmp_path / 'student')!r}); "
        "loaded = [m for m in ('optax', 'kdjax.train_state', 'kdjax.distill', 'kdjax.train', 'kdjax.data') "
        "if m in sys.modules]; "
        "assert sharpener.params; "
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
