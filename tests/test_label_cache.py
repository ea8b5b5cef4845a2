"""The per-image label cache: training images degraded whole once, the teacher's output on them
computed once, and patches cut from the (input, teacher output, target) triple at one place."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from kdjax import config as config_lib
from kdjax import data, degradations, distill, parallel, train, weights
from kdjax import train_state as train_state_lib
from kdjax.data import degraded, transforms
from kdjax.images import quantize, to_unit_float
from kdjax.imresize import imresize
from kdjax.models import build_model, model_config
from test_train import tiny_config


def _block_mean(image: np.ndarray) -> np.ndarray:
    """2x2 block means: a downscale that commutes with flips and quarter turns of aligned crops."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    return image[: 2 * h, : 2 * w].reshape(h, 2, w, 2, 3).astype(np.float64).mean(axis=(1, 3))


def test_stored_patches_cut_input_teacher_output_and_target_at_one_place():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    example = {
        "input": _block_mean(target),
        "target": target,
        "teacher_output": 255 - target,  # any image of the target's size, told apart from it
        "name": "random",
    }
    patch = transforms.TrainPatch(patch_size=16, degradation=None, min_size_policy="error", augment=True)
    positions = set()
    for seed in range(12):
        cut = patch(example, np.random.default_rng(seed))
        assert cut["input"].shape == (8, 8, 3) and cut["target"].shape == cut["teacher_output"].shape == (16, 16, 3)
        np.testing.assert_array_equal(cut["teacher_output"], 255 - cut["target"])
        np.testing.assert_allclose(cut["input"], _block_mean(cut["target"]))
        positions.add(cut["target"].tobytes())
    assert len(positions) == 12  # crops and symmetries do vary


def test_a_stored_image_smaller_than_the_patch_is_padded_or_named():
    target = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    example = {"input": _block_mean(target), "target": target, "name": "small"}
    padded = transforms.TrainPatch(patch_size=16, degradation=None, min_size_policy="pad", augment=False)
    cut = padded(example, np.random.default_rng(0))
    assert cut["input"].shape == (8, 8, 3) and cut["target"].shape == (16, 16, 3)
    np.testing.assert_allclose(cut["input"][:6], _block_mean(cut["target"][:12]))
    strict = transforms.TrainPatch(patch_size=16, degradation=None, min_size_policy="error", augment=False)
    with pytest.raises(transforms.ImageTooSmallError, match="small is 12x20 pixels"):
        strict(example, np.random.default_rng(0))


def _image_folder(root, sizes):
    folder = root / "train_images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for index, (height, width) in enumerate(sizes):
        smooth = np.cumsum(np.cumsum(rng.normal(0, 1, (height, width, 3)), axis=0), axis=1)
        smooth = (255 * (smooth - smooth.min()) / (smooth.max() - smooth.min())).astype(np.uint8)
        Image.fromarray(smooth).save(folder / f"{index}.png")
    return folder


def _upscale_data_config(tmp_path, variants=1):
    return _data_config(_image_folder(tmp_path, [(64, 96), (71, 51), (64, 64)]), tmp_path / "cache", variants)


def _data_config(images, cache_dir, variants):
    """Upscale x2 (bicubic) of the images in ``images``, each degraded ``variants`` times into ``cache_dir``."""
    data_cfg = data.default_data_config()
    data_cfg.train_source = data.folder_source_config(images)
    data_cfg.degradation = degradations.bicubic_only_config(scale=2, task="upscale")
    data_cfg.patch_size = 16
    data_cfg.cache_variants = variants
    data_cfg.cache_dir = str(cache_dir)
    return data_cfg


def _tiny_teacher(tmp_path):
    """A random x2 model folder standing in for an imported teacher."""
    config = config_lib.base_config()
    config.model = model_config("rep", width=4, num_blocks=1, scale=2, folded=True)
    model = build_model(config.model)
    params = model.init(jax.random.key(3), np.zeros((1, 8, 8, 3), np.float32))["params"]
    params = jax.tree.map(lambda leaf: leaf + 0.05, params)  # a non-zero residual
    return weights.write_model_folder(tmp_path / "teacher", config, params, {"model": "rep"})


def _load(folder, mesh):
    config = config_lib.base_config()
    config.data.degradation = degradations.bicubic_only_config(scale=2, task="upscale")
    config.teacher.workdir = str(folder)
    return distill.load_teacher(config, mesh)


def test_teacher_labels_are_its_output_on_each_whole_degraded_image(tmp_path):
    data_cfg = _upscale_data_config(tmp_path)
    folder = data.write_degraded_images(data_cfg)
    teacher = _load(_tiny_teacher(tmp_path), parallel.make_mesh(jax.devices()[:1]))
    labels = distill.label_degraded_images(folder, teacher)
    assert (labels / "COMPLETE").is_file() and labels.parent == folder
    stored = data.DegradedImages(folder, labels)
    assert len(stored) == 3
    for example in stored:
        low = example["input"]
        assert example["target"].shape == (2 * low.shape[0], 2 * low.shape[1], 3)
        expected = teacher.model.apply({"params": teacher.params}, to_unit_float(low)[None])[0]
        difference = np.abs(example["teacher_output"].astype(int) - np.asarray(quantize(expected, np.uint8), int))
        if low.shape[0] % 32 == 0 and low.shape[1] % 32 == 0:
            assert difference.max() <= 1  # no size padding: the whole image's output, rounded
        else:
            assert np.median(difference) <= 1  # mirrored padding touches the last rows only
    # Labelled once: a second call reuses the files.
    before = {path.name: path.stat().st_mtime_ns for path in labels.iterdir()}
    assert distill.label_degraded_images(folder, teacher) == labels
    assert {path.name: path.stat().st_mtime_ns for path in labels.iterdir()} == before


def test_runs_with_and_without_a_teacher_read_the_same_stream(tmp_path):
    data_cfg = _upscale_data_config(tmp_path, variants=2)
    folder = data.write_degraded_images(data_cfg)
    labels = distill.label_degraded_images(folder, _load(_tiny_teacher(tmp_path), parallel.make_mesh(jax.devices()[:1])))
    plain = iter(data.make_train_dataset(data_cfg, global_batch_size=4, seed=5, process_index=0, process_count=1))
    labelled = iter(
        data.make_train_dataset(data_cfg, global_batch_size=4, seed=5, process_index=0, process_count=1, teacher_labels=labels)
    )
    for _ in range(4):
        a, b = next(plain), next(labelled)
        assert "teacher_output" not in a and b["teacher_output"].shape == b["target"].shape == (4, 16, 16, 3)
        np.testing.assert_array_equal(a["input"], b["input"])
        np.testing.assert_array_equal(a["target"], b["target"])
    # The two variants of bicubic /2 are the same image: 2 x 3 stored examples.
    assert len(data.DegradedImages(folder)) == 6


def test_zoomed_views_are_labelled_by_the_teacher_and_cut_after_the_main_patch(tmp_path, monkeypatch):
    monkeypatch.setattr(degraded, "ZOOM_VIEW_SIZE", 20)
    data_cfg = _upscale_data_config(tmp_path)
    folder = data.write_degraded_images(data_cfg)
    teacher = _load(_tiny_teacher(tmp_path), parallel.make_mesh(jax.devices()[:1]))
    labels = distill.label_degraded_images(folder, teacher)
    distill.label_zoom_views(folder, labels, teacher)
    for example in data.DegradedImages(folder, labels, views=True):
        low, target = example["input"], example["target"]
        shrunk = imresize(low, output_shape=(low.shape[0] // 2, low.shape[1] // 2))
        # Zoomed in: a crop of the sharp target; zoomed out: of the input downscaled by 2 (MATLAB
        # bicubic); each at most ZOOM_VIEW_SIZE (here 20 px, so that both are crops) a side.
        for view, whole in (("zoom_in", target), ("zoom_out", shrunk)):
            crop = example[f"{view}_input"]
            assert crop.shape == (min(20, whole.shape[0]), min(20, whole.shape[1]), 3)
            assert any(
                np.array_equal(whole[top : top + crop.shape[0], left : left + crop.shape[1]], crop)
                for top in range(whole.shape[0] - crop.shape[0] + 1)
                for left in range(whole.shape[1] - crop.shape[1] + 1)
            )
        for view in ("zoom_in", "zoom_out"):
            image, label = example[f"{view}_input"], example[f"{view}_output"]
            expected = quantize(teacher.model.apply({"params": teacher.params}, to_unit_float(image)[None])[0], np.uint8)
            assert label.shape == expected.shape == (2 * image.shape[0], 2 * image.shape[1], 3)
            assert np.median(np.abs(label.astype(int) - np.asarray(expected, int))) <= 1

    plain = iter(data.make_train_dataset(data_cfg, global_batch_size=4, seed=5, process_index=0, process_count=1))
    with_views = iter(
        data.make_train_dataset(
            data_cfg, global_batch_size=4, seed=5, process_index=0, process_count=1, teacher_labels=labels,
            zoom_views=True,
        )
    )
    for _ in range(3):
        a, b = next(plain), next(with_views)
        np.testing.assert_array_equal(a["input"], b["input"])  # the main stream is unchanged
        np.testing.assert_array_equal(a["target"], b["target"])
        assert b["aux_input"].shape == (4, 8, 8, 3) and b["aux_teacher_output"].shape == (4, 16, 16, 3)
        assert not np.array_equal(b["aux_input"], b["input"])


def test_the_step_fits_the_student_to_the_teacher_on_the_auxiliary_views(tmp_path):
    config = tiny_config(tmp_path, model=model_config("rep", width=4, num_blocks=1, scale=2))
    config.loss.aux_kd_weight = 0.5
    model = build_model(config.model)
    tx = train_state_lib.make_optimizer(config)
    params = train_state_lib.init_params(config, model, jax.random.key(0))
    state = train_state_lib.create_train_state(params, tx)
    rng = np.random.default_rng(0)
    batch = {
        "input": rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
        "target": rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8),
        "aux_input": rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
        "aux_teacher_output": rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8),
    }
    _, metrics = jax.jit(train.make_train_step(config, model, tx))(state, batch, jax.random.key(1))
    student = model.apply({"params": params["model"]}, to_unit_float(batch["aux_input"]), train=True)
    expected = np.abs(np.asarray(student) - to_unit_float(batch["aux_teacher_output"])).mean()
    assert float(metrics["loss_aux_kd"]) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["loss"]) == pytest.approx(float(metrics["loss_pixel"]) + 0.5 * expected, rel=1e-5)


def test_a_student_distils_from_cached_labels_without_running_the_teacher_in_its_step(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, model=model_config("rep", width=4, num_blocks=1, scale=2), steps=3)
    data_cfg = _upscale_data_config(tmp_path)
    data_cfg.eval_source = config.data.eval_source
    config.data = data_cfg
    config.teacher.workdir = str(_tiny_teacher(tmp_path))
    config.loss.output_kd_weight = 1.0
    steps_with_teacher = []
    original = train.make_train_step

    def spy(config, model, tx, teacher_model=None, adapters=None):
        steps_with_teacher.append(teacher_model is not None)
        return original(config, model, tx, teacher_model, adapters)

    monkeypatch.setattr(train, "make_train_step", spy)
    report = train.train_and_evaluate(config, tmp_path / "student", devices=jax.devices()[:1])
    assert report["step"] == 3 and steps_with_teacher == [False]
    assert list((tmp_path / "cache").glob("*/teacher-*/COMPLETE"))
    assert json.loads((tmp_path / "student" / "config.json").read_text())["data"]["cache_variants"] == 1


def test_an_upscaling_teacher_labels_a_sharpen_run_from_the_targets_low_resolution_view(tmp_path):
    config = tiny_config(tmp_path, model=model_config("rep", width=4, num_blocks=1), steps=2)
    data_cfg = _upscale_data_config(tmp_path)
    data_cfg.degradation = degradations.bicubic_only_config(scale=2)  # sharpen: x2 down-up
    data_cfg.eval_source = config.data.eval_source
    config.data = data_cfg
    config.teacher.workdir = str(_tiny_teacher(tmp_path))
    config.loss.output_kd_weight = 1.0
    report = train.train_and_evaluate(config, tmp_path / "student", devices=jax.devices()[:1])
    assert report["step"] == 2 and "teacher" in report["results"]
    (labels,) = (tmp_path / "cache").glob("*/teacher-*")
    assert labels.name.endswith("-lr")  # never mistaken for labels of the input
    # Sharpen targets keep odd sizes (here 71x51), which the teacher's labels must cover too.
    assert {example["target"].shape for example in data.DegradedImages(labels.parent)} == {
        (64, 96, 3), (71, 51, 3), (64, 64, 3)
    }
    for example in data.DegradedImages(labels.parent, labels):
        assert example["input"].shape == example["target"].shape == example["teacher_output"].shape
    stored = data.DegradedImages(labels.parent, labels)[0]
    teacher = _load(config.teacher.workdir, parallel.make_mesh(jax.devices()[:1]))
    # The teacher saw the target's low-resolution view: for bicubic down-up inputs, the image
    # the input was made from (not the input downscaled again, which antialiasing blurs).
    low = distill.low_resolution_view(stored["target"], 2)
    np.testing.assert_array_equal(low, imresize(stored["target"], output_shape=(32, 48)))
    expected = quantize(teacher.model.apply({"params": teacher.params}, to_unit_float(low)[None])[0], np.uint8)
    difference = np.abs(stored["teacher_output"].astype(int) - np.asarray(expected, int))
    assert np.median(difference) <= 1
    # Without the cache the teacher would have to run in the step on same-size inputs: refused.
    config.data.cache_variants = 0
    with pytest.raises(ValueError, match="can teach the sharpen task through the per-image label cache"):
        train.train_and_evaluate(config, tmp_path / "in_step", devices=jax.devices()[:1])


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(feature_kd_weight=0.1, feature_pairs="block_0:block_0"), "Feature KD needs the teacher's features"),
        (dict(pool=4), "both replace the data stream"),
        (dict(aux_kd_weight=1.0), "loss.aux_kd_weight labels zoomed views of upscale examples"),
    ],
)
def test_settings_the_label_cache_cannot_serve_are_one_sentence(tmp_path, change, message):
    config = tiny_config(tmp_path)
    config.data.cache_variants = 1
    config.teacher.workdir = str(tmp_path / "teacher")
    config.loss.output_kd_weight = 1.0
    if "pool" in change:
        config.pool_batches = change["pool"]
    elif "aux_kd_weight" in change:
        config.loss.aux_kd_weight = change["aux_kd_weight"]  # the tiny config is a sharpen run
    else:
        config.loss.feature_kd_weight = change["feature_kd_weight"]
        config.loss.feature_pairs = change["feature_pairs"]
    with pytest.raises(ValueError, match=message):
        config_lib.validate(config)


def _files(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_damaged_cache_is_found_and_repaired_with_a_warning_naming_each_file(tmp_path, caplog):
    data_cfg = _upscale_data_config(tmp_path, variants=2)
    folder = data.write_degraded_images(data_cfg)
    teacher = _load(_tiny_teacher(tmp_path), parallel.make_mesh(jax.devices()[:1]))
    labels = distill.label_degraded_images(folder, teacher)
    intact = _files(folder)
    truncated, deleted, garbage = folder / "images" / "00001_0.npz", folder / "images" / "00002_1.npz", labels / "00000_1.npy"
    truncated.write_bytes(truncated.read_bytes()[:100])
    deleted.unlink()
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, garbage.stat().st_size, dtype=np.uint8).tobytes())

    with caplog.at_level("WARNING"):
        assert data.write_degraded_images(data_cfg) == folder
        assert distill.label_degraded_images(folder, teacher) == labels
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert sorted(warnings) == sorted([
        f"Cache file {truncated} is damaged (100 bytes where {len(intact[truncated.relative_to(folder)])} were "
        "written); re-degrading it.",
        f"Cache file {deleted} is damaged (it is missing); re-degrading it.",
        f"Cache file {garbage} is damaged (its checksum differs from the one recorded when it was written); "
        "labelling it again with the teacher.",
    ]), warnings
    assert _files(folder) == intact  # the same bytes again: variant k of image i is drawn from [i, k]
    caplog.clear()
    data.write_degraded_images(data_cfg)  # whole now: nothing to say
    assert not [record for record in caplog.records if record.levelname == "WARNING"]


_FILL_THE_CACHE = """
import sys
from pathlib import Path
import jax
sys.path.insert(0, sys.argv[1])
from kdjax import data, distill, parallel
import test_label_cache as t
tmp = Path(sys.argv[2])
folder = data.write_degraded_images(t._data_config(tmp / "train_images", tmp / "shared", variants=2))
distill.label_degraded_images(folder, t._load(tmp / "teacher", parallel.make_mesh(jax.devices()[:1])))
"""


def test_two_processes_filling_one_fresh_cache_both_finish_with_identical_complete_files(tmp_path):
    _image_folder(tmp_path, [(64, 96), (71, 51), (64, 64), (48, 80), (80, 48), (56, 56)])
    teacher = _load(_tiny_teacher(tmp_path), parallel.make_mesh(jax.devices()[:1]))
    reference = data.write_degraded_images(_data_config(tmp_path / "train_images", tmp_path / "reference", variants=2))
    distill.label_degraded_images(reference, teacher)
    command = [sys.executable, "-c", _FILL_THE_CACHE, str(Path(__file__).parent), str(tmp_path)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    (shared,) = (tmp_path / "shared").iterdir()
    assert shared.name == reference.name
    files, expected = _files(shared), _files(reference)
    # Complete and identical, manifests included; the image folder's marker records its cache_dir.
    marker = Path("images/COMPLETE")
    assert files.pop(marker).replace(b"/shared", b"/reference") == expected.pop(marker)
    assert files == expected
    assert len([name for name in files if name.suffix == ".npy"]) == 12
    assert not [name for name in files if ".kdjax-" in name.name or name.name.endswith(".partial")]
