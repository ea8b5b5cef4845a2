"""Tests for kdjax.data: sources, clear errors on bad input, and the Grain training/evaluation pipelines."""

import collections
import json
import logging
import pickle
import sys
from pathlib import Path

import grain
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from kdjax import data, degradations
from kdjax.data import transforms
from kdjax.images import ImageReadError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Eight distinct colours: a patch of a solid image tells which image it came from.
COLOURS = [(r, g, b) for r in (0, 255) for g in (0, 255) for b in (40, 200)]


def _save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def _texture(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _colour_folder(root: Path, size=(24, 20)) -> Path:
    for index, colour in enumerate(COLOURS):
        _save(root / f"img_{index}.png", np.full(size + (3,), colour, np.uint8))
    return root


def _config(train_source, *, patch_size=16, ops=("bicubic",), **fields) -> ml_collections.ConfigDict:
    config = data.default_data_config()
    config.train_source = train_source
    config.patch_size = patch_size
    config.degradation = degradations.default_degradation_config(ops=ops)
    config.update(fields)
    return config


def _batches(config, count, *, seed=0, **kwargs):
    kwargs.setdefault("global_batch_size", 4)
    iterator = iter(data.make_train_dataset(config, seed=seed, process_index=0, process_count=1, **kwargs))
    batches = [next(iterator) for _ in range(count)]
    iterator.close()  # stops worker processes now rather than at garbage collection
    return batches


def _assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def _colour_indices(patches: np.ndarray) -> list[int]:
    """Which of COLOURS each solid patch shows."""
    return [COLOURS.index(tuple(int(c) for c in patch[0, 0])) for patch in patches]


def _find(image: np.ndarray, patch: np.ndarray) -> tuple[int, int] | None:
    """(top, left) where ``patch`` occurs in ``image`` (a random texture: at most one place), or None."""
    windows = np.lib.stride_tricks.sliding_window_view(image, patch.shape)[:, :, 0]
    found = np.argwhere((windows == patch).all(axis=(2, 3, 4)))
    return (int(found[0][0]), int(found[0][1])) if len(found) else None


def _symmetries(image: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of ``image``, numbered like the pipeline's (quarter turns, then flip)."""
    return [np.rot90(image, k)[:, ::-1] if flip else np.rot90(image, k) for flip in (False, True) for k in range(4)]


class _CountingSource:
    """Solid images of ``heights[i]`` x 10 pixels that count how often each is read."""

    def __init__(self, heights):
        self.heights = heights
        self.reads = collections.Counter()

    def __len__(self):
        return len(self.heights)

    def __getitem__(self, index):
        self.reads[index] += 1
        return {"image": np.full((self.heights[index], 10, 3), index, np.uint8), "name": str(index)}


def _one_sentence(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.endswith("."), message
    return message


# ------------------------------------------------------------------------------------------ sources


def test_skimage_photos_split_is_deterministic_and_disjoint():
    train, evaluation, every = data.SkimagePhotos("train"), data.SkimagePhotos("eval"), data.SkimagePhotos("all")
    assert evaluation.names == ("chelsea", "coffee")
    assert len(train) == 7 and set(train.names).isdisjoint(evaluation.names)
    assert set(every.names) == set(train.names) | set(evaluation.names)
    example = evaluation[0]
    assert example["name"] == "chelsea" and example["image"].shape == (300, 451, 3)
    assert example["image"].dtype == np.uint8
    with pytest.raises(data.DataSourceError, match="split"):
        data.SkimagePhotos("test")


def test_image_folder_is_recursive_sorted_and_skips_non_images(tmp_path, caplog):
    root = tmp_path / "bsd"
    for index, suffix in enumerate((".png", ".jpg", ".bmp", ".tif", ".webp")):
        _save(root / ("nested" if index % 2 else "") / f"{index}{suffix}", _texture(20, 30, index))
    (root / "README.txt").write_text("not an image")
    (root / "._0.png").write_bytes(b"macOS resource fork")
    with caplog.at_level(logging.INFO):
        folder = data.ImageFolder(root)
    assert folder.names == ("0.png", "2.bmp", "4.webp", "nested/1.jpg", "nested/3.tif")
    assert any("Skipped 2 non-image files" in record.getMessage() for record in caplog.records)
    assert folder.sizes == ((20, 30),) * 5
    np.testing.assert_array_equal(folder[0]["image"], _texture(20, 30, 0))

    other = _save(tmp_path / "other" / "x.png", _texture(20, 30, 9)).parent
    both = data.ImageFolder([root, other])
    assert len(both) == 6 and both.names[-1] == "other/x.png" and both.names[0] == "bsd/0.png"


def test_image_folder_converts_odd_modes(tmp_path):
    Image.fromarray(_texture(20, 30, 0)[:, :, 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([_texture(20, 30, 1), np.full((20, 30), 9, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(_texture(20, 30, 2)).quantize(16).save(tmp_path / "palette.png")
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(tmp_path / "deep.png")
    folder = data.ImageFolder(tmp_path)
    for index in range(len(folder)):
        image = folder[index]["image"]
        assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    assert folder[0]["image"][0, 0, 0] == round(40000 / 257)


def test_real_bsd68_folder_loads():
    if not (SHARED_DATA / "BSD68").is_dir():
        pytest.skip(f"{SHARED_DATA / 'BSD68'} is absent; it ships beside the repository, not in it.")
    folder = data.ImageFolder(SHARED_DATA / "BSD68")
    assert len(folder) == 68 and set(folder.sizes) <= {(321, 481), (481, 321)}


def test_bad_folders_are_one_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.ImageFolder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataSourceError, match="No image files") as error:
        data.ImageFolder(tmp_path / "empty")
    assert str(tmp_path / "empty") in _one_sentence(error)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("hello")
    with pytest.raises(data.DataSourceError, match="No image files"):
        data.ImageFolder(tmp_path / "text")
    fake = tmp_path / "bad" / "fake.jpg"
    fake.parent.mkdir()
    fake.write_text("this is no jpeg")
    with pytest.raises(ImageReadError) as error:
        data.ImageFolder(tmp_path / "bad")
    assert str(fake) in _one_sentence(error)


def test_paired_folder_reads_both_layouts(tmp_path):
    per_id = tmp_path / "per_id"
    for index in range(2):
        _save(per_id / f"scene_{index}" / "blurry.png", _texture(20, 24, index))
        _save(per_id / f"scene_{index}" / "sharp.jpg", _texture(20, 24, 10 + index))
    pairs = data.PairedFolder(per_id)
    assert pairs.names == ("scene_0", "scene_1")
    example = pairs[1]
    np.testing.assert_array_equal(example["input"], _texture(20, 24, 1))
    assert example["target"].shape == (20, 24, 3) and example["name"] == "scene_1"

    gopro = tmp_path / "gopro"
    for sequence in ("seq_a", "seq_b"):
        for frame in ("000001.png", "000002.png"):
            _save(gopro / sequence / "blur" / frame, _texture(16, 16, 0))
            _save(gopro / sequence / "sharp" / frame, _texture(16, 16, 1))
    assert data.PairedFolder(gopro).names == (
        "seq_a/000001.png", "seq_a/000002.png", "seq_b/000001.png", "seq_b/000002.png"
    )
    flat = tmp_path / "flat"
    _save(flat / "blur" / "a.png", _texture(16, 16, 0))
    _save(flat / "sharp" / "a.png", _texture(16, 16, 1))
    assert data.PairedFolder(flat).names == ("a.png",)


def test_paired_folder_errors_name_the_file(tmp_path):
    _save(tmp_path / "ids" / "scene" / "blurry.png", _texture(16, 16, 0))
    with pytest.raises(data.DataSourceError, match="no partner") as error:
        data.PairedFolder(tmp_path / "ids")
    assert str(tmp_path / "ids" / "scene" / "blurry.png") in _one_sentence(error)

    _save(tmp_path / "gopro" / "blur" / "a.png", _texture(16, 16, 0))
    _save(tmp_path / "gopro" / "sharp" / "a.png", _texture(16, 16, 0))
    _save(tmp_path / "gopro" / "sharp" / "b.png", _texture(16, 16, 0))
    with pytest.raises(data.DataSourceError, match="no partner") as error:
        data.PairedFolder(tmp_path / "gopro")
    assert str(tmp_path / "gopro" / "blur" / "b.png") in _one_sentence(error)

    _save(tmp_path / "sizes" / "x" / "blurry.png", _texture(16, 16, 0))
    _save(tmp_path / "sizes" / "x" / "sharp.png", _texture(16, 18, 0))
    with pytest.raises(data.DataSourceError, match="same size"):
        data.PairedFolder(tmp_path / "sizes")
    _save(tmp_path / "loose" / "a.png", _texture(16, 16, 0))
    with pytest.raises(data.DataSourceError, match="blurry,sharp"):
        data.PairedFolder(tmp_path / "loose")


def test_tfds_source_reads_mock_data_and_trains():
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        source = data.TfdsImages("div2k/bicubic_x2", "train", feature="hr")
        assert len(source) == 6
        example = source[2]
        assert example["name"] == "div2k/bicubic_x2/train/2"
        assert example["image"].dtype == np.uint8 and example["image"].shape[2] == 3
        with pytest.raises(data.DataSourceError, match="no feature 'image'"):
            data.TfdsImages("div2k/bicubic_x2", "train")
        # Mock images have random small sizes, hence padding.
        config = _config(data.tfds_source_config("div2k/bicubic_x2", feature="hr"), min_size_policy="pad")
        (batch,) = _batches(config, 1)
        assert batch["input"].shape == (4, 16, 16, 3)


def test_tfds_source_without_the_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails as if not installed
    with pytest.raises(data.DataSourceError, match=r"kdjax\[tfds\]") as error:
        data.TfdsImages("div2k/bicubic_x2")
    assert "div2k/bicubic_x2" in _one_sentence(error)


def test_unknown_tfds_name_is_one_sentence():
    with pytest.raises(data.DataSourceError, match=r"tfds\.list_builders\(\)") as error:
        data.TfdsImages("no_such_dataset_xyz")
    assert "no_such_dataset_xyz" in _one_sentence(error)


def test_cached_source_keeps_the_most_recent_examples_within_its_bytes():
    source = _CountingSource([10, 10, 10, 40])  # 300 bytes each, the last 1200
    cached = data.CachedSource(source, max_bytes=600)
    for index in (0, 1, 0, 2, 0, 1, 3, 3):
        example = cached[index]
        np.testing.assert_array_equal(example["image"], index)
        assert not example["image"].flags.writeable, "cached arrays are shared between reads"
    # 2 evicted 1 (the least recently read), 1 came back evicting 2; 3 exceeds the budget alone.
    assert source.reads == {0: 1, 1: 2, 2: 1, 3: 2}
    cached[1]
    assert source.reads[1] == 2
    copy = pickle.loads(pickle.dumps(cached))  # as sent to a worker process: its own, empty cache
    copy[1]
    assert copy.source.reads[1] == 3 and len(copy) == 4


def test_shuffled_epochs_are_fresh_permutations_of_the_source():
    source = list(range(7))
    epochs = data.ShuffledEpochs(source, seed=5)
    orders = [[epochs[epoch * 7 + position] for position in range(7)] for epoch in range(3)]
    assert all(sorted(order) == source for order in orders)
    assert orders[0] != orders[1] != orders[2]
    again = pickle.loads(pickle.dumps(data.ShuffledEpochs(source, seed=5)))
    assert [again[index] for index in (20, 3, 15)] == [orders[2][6], orders[0][3], orders[2][1]]
    assert [data.ShuffledEpochs(source, seed=6)[index] for index in range(7)] != orders[0]


def test_build_source_rejects_unknown_kinds_and_missing_fields():
    with pytest.raises(data.DataSourceError, match="kind"):
        data.build_source(ml_collections.ConfigDict(dict(kind="ftp")))
    with pytest.raises(data.DataSourceError, match="paths"):
        data.build_source(data.folder_source_config())


# ---------------------------------------------------------------------------------------- pipelines


def test_training_batches_are_deterministic_per_seed(tmp_path):
    for index in range(5):
        _save(tmp_path / f"{index}.png", _texture(40, 36, index))
    ops = ("gaussian_blur", "bicubic", "noise", "jpeg")
    config = _config(data.folder_source_config(tmp_path), ops=ops)
    first = _batches(config, 3, seed=7)
    _assert_same_batches(first, _batches(config, 3, seed=7))
    other = _batches(config, 3, seed=8)
    assert not np.array_equal(first[0]["target"], other[0]["target"])
    batch = first[0]
    assert batch["input"].shape == batch["target"].shape == (4, 16, 16, 3)
    assert batch["input"].dtype == batch["target"].dtype == np.uint8
    assert not np.array_equal(batch["input"], batch["target"])


def test_workers_and_the_cache_only_change_speed(tmp_path):
    for index in range(5):
        _save(tmp_path / f"{index}.png", _texture(40, 36, index))
    config = _config(data.folder_source_config(tmp_path))
    expected = _batches(config, 4, worker_count=0)
    _assert_same_batches(_batches(config, 4, worker_count=2), expected)
    config.cache_mib = 0
    _assert_same_batches(_batches(config, 4, worker_count=0), expected)
    config.cache_mib = -1
    with pytest.raises(ValueError, match="data.cache_mib=-1"):
        _batches(config, 1)


def test_training_inputs_are_the_whole_image_degradation_restricted_to_the_patch(tmp_path):
    image = _texture(48, 44, 0)
    _save(tmp_path / "a.png", image)
    config = _config(data.folder_source_config(tmp_path), augment=False)  # bicubic x2 only, context 8
    degradation = degradations.build_degradation(config.degradation, train=False)
    whole = degradation(image, np.random.default_rng(0))
    crop_first_differs = False
    for batch in _batches(config, 3):
        for patch_input, target in zip(batch["input"], batch["target"]):
            top, left = _find(image, target)
            assert top % 2 == 0 and left % 2 == 0, "patches lie on the bicubic grid"
            np.testing.assert_array_equal(patch_input, whole[top : top + 16, left : left + 16])
            crop_first_differs |= not np.array_equal(patch_input, degradation(target, np.random.default_rng(0)))
    assert crop_first_differs, "degrading the bare patch would mirror pixels at its borders"


def test_flips_and_rotations_come_before_an_anisotropic_degradation():
    """The input is the degradation of the flipped/rotated image, cut where the target was, on any image size."""
    config = degradations.default_degradation_config(
        ops=("motion_blur", "bicubic"), motion_blur=dict(kernel_size=7, eval_length=5.0, eval_angle=30.0)
    )
    degradation = degradations.build_degradation(config, train=False)  # fixed parameters, comparable
    image = _texture(65, 57, 0)  # evaluation's mod crop keeps 64 x 56, so do the patches
    symmetries = _symmetries(data.mod_crop(image, 2))
    degraded = [degradation(np.ascontiguousarray(s), np.random.default_rng(0)) for s in symmetries]
    patch = transforms.TrainPatch(patch_size=16, degradation=degradation, min_size_policy="error", augment=True)
    applied = set()
    for seed in range(12):
        example = patch({"image": image, "name": "texture"}, np.random.default_rng(seed))
        ((transform, (top, left)),) = [
            (transform, place)
            for transform, symmetry in enumerate(symmetries)
            if (place := _find(symmetry, example["target"])) is not None
        ]
        np.testing.assert_array_equal(example["input"], degraded[transform][top : top + 16, left : left + 16])
        applied.add(transform)
    assert len(applied) > 3


def test_hosts_get_disjoint_shards_covering_each_epoch(tmp_path):
    config = _config(data.folder_source_config(_colour_folder(tmp_path)), ops=())
    seen = []
    for process_index in range(2):
        iterator = iter(
            data.make_train_dataset(config, global_batch_size=8, seed=3, process_index=process_index, process_count=2)
        )
        seen.append([_colour_indices(next(iterator)["target"]) for _ in range(2)])
    for step in range(2):  # one global batch of 8 is exactly one epoch of the 8 images
        host_0, host_1 = seen[0][step], seen[1][step]
        assert len(host_0) == len(host_1) == 4
        assert sorted(host_0 + host_1) == list(range(8))
    assert seen[0][0] + seen[1][0] != seen[0][1] + seen[1][1], "each epoch is shuffled anew"
    # The hosts split one global stream: together they see exactly what a single host would.
    streams = [
        iter(data.make_train_dataset(config, global_batch_size=4, seed=3, process_index=index, process_count=count))
        for index, count in ((0, 1), (0, 2), (1, 2))
    ]
    for _ in range(3):
        single, host_0, host_1 = (next(stream)["target"] for stream in streams)
        np.testing.assert_array_equal(single, np.stack([host_0[0], host_1[0], host_0[1], host_1[1]]))


def test_resumed_iterator_sees_the_same_batches(tmp_path):
    config = _config(data.folder_source_config(_colour_folder(tmp_path)), ops=("noise",))
    make = lambda: iter(data.make_train_dataset(config, global_batch_size=4, seed=0, process_index=0, process_count=1))
    iterator = make()
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(3)]
    resumed = make()
    resumed.set_state(state)
    _assert_same_batches([next(resumed) for _ in range(3)], expected)


def test_iterator_round_trips_through_an_orbax_checkpoint(tmp_path):
    config = _config(data.folder_source_config(_colour_folder(tmp_path / "images")), ops=("noise",))
    make = lambda: iter(data.make_train_dataset(config, global_batch_size=4, seed=0, process_index=0, process_count=1))
    iterator = make()
    next(iterator)
    manager = ocp.CheckpointManager(tmp_path / "checkpoints")
    manager.save(1, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
    expected = [next(iterator) for _ in range(2)]

    resumed = make()
    restorer = ocp.CheckpointManager(tmp_path / "checkpoints")
    restorer.restore(1, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(resumed)))
    _assert_same_batches([next(resumed) for _ in range(2)], expected)


def test_paired_training_crops_and_flips_both_images_alike(tmp_path):
    for index in range(3):
        sharp = _texture(30, 26, index)
        _save(tmp_path / f"{index}" / "sharp.png", sharp)
        _save(tmp_path / f"{index}" / "blurry.png", 255 - sharp)
    config = _config(data.paired_source_config(tmp_path), ops=("gaussian_blur", "noise"))
    for batch in _batches(config, 3):
        np.testing.assert_array_equal(batch["input"], 255 - batch["target"])


def test_small_images_fail_early_or_are_padded(tmp_path):
    _save(tmp_path / "big.png", _texture(40, 40, 0))
    _save(tmp_path / "small.png", _texture(10, 12, 1))
    config = _config(data.folder_source_config(tmp_path), ops=())
    with pytest.raises(data.ImageTooSmallError, match="10x12") as error:
        data.make_train_dataset(config, global_batch_size=4, seed=0, process_index=0, process_count=1)
    assert "small.png" in _one_sentence(error)

    config.min_size_policy = "pad"
    config.augment = False
    (batch,) = _batches(config, 1)
    assert batch["target"].shape == (4, 16, 16, 3)
    # Padded to exactly the patch, the small image has a single crop: itself, mirrored past its edges.
    padded = np.pad(_texture(10, 12, 1), ((0, 6), (0, 4), (0, 0)), mode="symmetric")
    assert sum(np.array_equal(patch, padded) for patch in batch["target"]) == 2


def test_errors_inside_the_pipeline_name_the_file(tmp_path):
    _save(tmp_path / "good.png", _texture(40, 40, 0))
    cut = _save(tmp_path / "cut.png", _texture(40, 40, 1))
    cut.write_bytes(cut.read_bytes()[:300])  # the header survives, the pixels do not
    config = _config(data.folder_source_config(tmp_path))
    with pytest.raises(ImageReadError, match="truncated") as error:
        _batches(config, 2)
    assert str(cut) in _one_sentence(error)

    patch = transforms.TrainPatch(patch_size=4, degradation=None, min_size_policy="error", augment=False)
    with pytest.raises(data.ExamplePreparationError) as error:
        patch({"input": np.zeros((8, 8, 3), np.uint8), "target": np.zeros((8,), np.uint8), "name": "odd.png"},
              np.random.default_rng(0))
    assert "odd.png" in _one_sentence(error)


def test_batch_size_must_split_over_hosts(tmp_path):
    config = _config(data.folder_source_config(_colour_folder(tmp_path)))
    with pytest.raises(ValueError, match="multiple of 3"):
        data.make_train_dataset(config, global_batch_size=8, seed=0, process_index=0, process_count=3)


def test_eval_dataset_mod_crops_and_degrades_deterministically(tmp_path):
    _save(tmp_path / "a.png", _texture(31, 40, 0))
    _save(tmp_path / "b.png", _texture(26, 17, 1))
    config = data.default_data_config()
    config.eval_source = data.folder_source_config(tmp_path)
    config.degradation = degradations.default_degradation_config(ops=("bicubic", "noise"), scale=3)
    examples = list(data.make_eval_dataset(config))
    assert [e["name"] for e in examples] == ["a.png", "b.png"]
    assert [e["target"].shape for e in examples] == [(30, 39, 3), (24, 15, 3)]
    np.testing.assert_array_equal(examples[0]["target"], _texture(31, 40, 0)[:30, :39])
    for example, again in zip(examples, data.make_eval_dataset(config)):
        assert example["input"].shape == example["target"].shape
        assert not np.array_equal(example["input"], example["target"])
        np.testing.assert_array_equal(example["input"], again["input"])


def test_paired_eval_uses_the_real_blurry_images(tmp_path):
    _save(tmp_path / "x" / "blurry.png", _texture(21, 22, 0))
    _save(tmp_path / "x" / "sharp.png", _texture(21, 22, 1))
    config = data.default_data_config()
    config.eval_source = data.paired_source_config(tmp_path)
    (example,) = list(data.make_eval_dataset(config))
    np.testing.assert_array_equal(example["input"], _texture(21, 22, 0)[:20, :22])
    np.testing.assert_array_equal(example["target"], _texture(21, 22, 1)[:20, :22])


def test_default_config_survives_a_json_round_trip():
    config = data.default_data_config()
    restored = ml_collections.ConfigDict(json.loads(config.to_json()))
    restored.patch_size = 32
    (batch,) = _batches(restored, 1)
    assert batch["input"].shape == (4, 32, 32, 3)
    examples = list(data.make_eval_dataset(restored))
    assert [e["name"] for e in examples] == ["chelsea", "coffee"]
    assert examples[0]["target"].shape == (300, 450, 3)
