"""Issue 14, "never lose a run or a released model; every mistake gets one sentence":
damaged checkpoints fall back to the newest intact one, inputs are never overwritten,
band-by-band tiling equals the one-shot path in bounded memory, folders that training would
damage are refused untouched, and command-line mistakes are one sentence without a traceback."""

from __future__ import annotations

import logging
import os
import re
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import kdjax
from kdjax import checkpoints, serving, train, weights
from kdjax.images import to_rgb_uint8, to_uint8
from kdjax.models import build_model, model_config
from kdjax.serving import files, tiling
from test_inference import Identity, _apply_fn, _init
from test_train import _raw_params, tiny_config

REPO = Path(__file__).resolve().parents[1]
LAUNCH = [sys.executable, str(REPO / "launch.py")]


def _damage(workdir: Path, step: int, how: str) -> None:
    state = workdir / checkpoints.CHECKPOINT_DIR / str(step) / checkpoints.STATE_ITEM
    if how == "manifest":
        (state / "manifest.ocdbt").unlink()
    elif how == "metadata":
        (state / "_METADATA").unlink()
    else:  # the array data: every data file of the OCDBT database
        for chunk in state.glob("ocdbt.process_*/d/*"):
            chunk.unlink()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 6-step run with checkpoints at steps 3 and 6, and their raw states."""
    root = tmp_path_factory.mktemp("trained")
    config = tiny_config(root)
    train.train_and_evaluate(config, root / "run", devices=jax.devices()[:1])
    return config, root / "run", {step: _raw_params(root / "run", step) for step in (3, 6)}


def _assert_same(tree_a, tree_b) -> None:
    for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("how", ["manifest", "chunk", "metadata"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_intact_one(trained, tmp_path, caplog, how):
    config, run, states = trained
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    _damage(workdir, 6, how)
    warning = rf"checkpoint step 6 in {workdir / 'checkpoints'} is damaged \(.+\); using step 3\."

    for which in ("latest", "best"):  # what evaluate and sharpen read
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            _, params = weights.restore_params(workdir, which=which)
        _assert_same(params, states[3]["ema_params"]["model"])
        assert any(re.fullmatch(warning, r.getMessage()) for r in caplog.records), caplog.text

    # Resuming retrains steps 4 to 6 from step 3: exactly the parameters of the intact run.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        report = train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
    assert report["step"] == 6 and "using step 3" in caplog.text
    _assert_same(_raw_params(workdir, 6)["params"], states[6]["params"])
    # The damaged checkpoint is kept aside, not deleted.
    assert (workdir / checkpoints.DAMAGED_DIR / "6" / checkpoints.STATE_ITEM).is_dir()


def test_evaluate_on_a_damaged_workdir_warns_and_uses_the_intact_checkpoint(trained, tmp_path):
    _, run, _ = trained
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    _damage(workdir, 6, "chunk")
    result = subprocess.run(
        [*LAUNCH, "evaluate", f"--model={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "checkpoint step 6" in result.stderr and "using step 3" in result.stderr
    assert "Traceback" not in result.stderr and "| validation | model |" in result.stdout

    # With no intact checkpoint left: one sentence naming every damaged step.
    _damage(workdir, 3, "manifest")
    with pytest.raises(checkpoints.DamagedCheckpointError, match=r"No intact checkpoint in .*step 6 .*step 3 \("):
        weights.restore_params(workdir)


def test_non_finite_float_images_are_one_sentence():
    for value, word in ((np.inf, "infinite"), (-np.inf, "infinite"), (np.nan, "NaN")):
        image = np.zeros((4, 5, 3), np.float32)
        image[1, 2, 0] = value
        with pytest.raises(ValueError, match=rf"^image contains {word} values; pass finite floats in \[0, 1\]\.$"):
            to_rgb_uint8(image)
        with pytest.raises(ValueError, match=word):
            serving.Sharpener(Identity(), {}, tile=None).sharpen(image)


def test_an_output_that_is_a_link_to_an_input_is_never_written(tmp_path):
    sharpener = serving.Sharpener(Identity(), {}, tile=None)
    source = tmp_path / "in" / "a.png"
    source.parent.mkdir()
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(source)
    before = source.read_bytes()
    (tmp_path / "out").mkdir()
    os.link(source, tmp_path / "out" / "a.png")  # a hard link: another name, the same file
    (tmp_path / "out" / "b.png").symlink_to(source)
    for output in (tmp_path / "out" / "a.png", tmp_path / "out" / "b.png", tmp_path / "out" / ".." / "in" / "a.png"):
        with pytest.raises(ValueError, match="would overwrite input"):
            files.sharpen_paths(sharpener, source, output, overwrite=True)
    # A folder whose mirrored output is a hard link to its input.
    (tmp_path / "mirror").mkdir()
    os.link(source, tmp_path / "mirror" / "a.png")
    with pytest.raises(ValueError, match="would overwrite input"):
        files.sharpen_paths(sharpener, tmp_path / "in", tmp_path / "mirror", overwrite=True)
    assert source.read_bytes() == before


@pytest.mark.parametrize(
    "fields", [{"width": 8, "num_blocks": 1}, {"width": 4, "num_blocks": 1, "scale": 2, "shuffle_factor": 2}]
)
def test_band_by_band_tiling_equals_the_one_shot_path_in_memory_that_does_not_grow(fields):
    model = build_model(model_config("realtime", **fields))
    params = _init(model)
    tile, overlap = 32, 8
    sharpener = serving.Sharpener(model, params, tile=tile, overlap=overlap, tile_batch=3)
    # 150 rows (padded to 152 at most): 6 tile rows; the odd width is padded too.
    frames = np.random.default_rng(0).integers(0, 256, (2, 150, 61, 3), dtype=np.uint8)
    multiple = model.size_multiple
    assert len(tiling.plan_axis(150 + (-150 % multiple), tile, overlap, multiple).starts) == 6
    banded = sharpener.sharpen_batch(frames)
    assert sharpener.trace_count == 1  # every band of the image shares one compiled function
    one_shot = jax.jit(
        lambda p, x: to_uint8(
            tiling.predict(
                _apply_fn(model), p, x, tile=tile, overlap=overlap, tile_batch=3,
                multiple=model.size_multiple, scale=model.scale,
            )
        )
    )(params, frames)
    assert banded.shape == (2, 150 * model.scale, 61 * model.scale, 3)
    np.testing.assert_array_equal(banded, np.asarray(one_shot))

    # The band function's scratch memory is the same for 2 tile rows as for 6 (same band shape).
    two_bands, six_bands = (tiling.plan_axis(height, tile, overlap, multiple) for height in (56, 152))
    assert (len(two_bands.starts), len(six_bands.starts)) == (2, 6) and two_bands.size == six_bands.size
    memory = {
        height: sharpener.compiled((1, height, 61, 3)).memory_analysis().temp_size_in_bytes for height in (56, 152)
    }
    assert memory[56] == memory[152] > 0


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_training_never_touches_a_model_folder_or_a_workdir_with_another_config(trained, tmp_path):
    config, run, _ = trained
    exported = tmp_path / "realtime_x2"
    shutil.copytree(REPO / "pretrained" / "realtime_x2", exported)
    before = _snapshot(exported)
    with pytest.raises(ValueError, match="is an exported model folder"):
        train.train_and_evaluate(config, exported, devices=jax.devices()[:1])
    assert _snapshot(exported) == before

    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    before = _snapshot(workdir)
    other_rate = config.copy_and_resolve_references()
    other_rate.optim.learning_rate = 5e-4
    other_model = config.copy_and_resolve_references()
    other_model.model = model_config("residual", width=4, num_blocks=1)
    for changed, key in ((other_rate, "optim.learning_rate"), (other_model, "model.name")):
        with pytest.raises(ValueError, match=rf"started with another config \(.*{key}.*--allow_config_change"):
            train.train_and_evaluate(changed, workdir, devices=jax.devices()[:1])
        assert _snapshot(workdir) == before

    # A key added to kdjax after the run started is no change while it keeps its default.
    saved = json.loads((workdir / "config.json").read_text())
    del saved["loss"]["aux_kd_weight"]
    (workdir / "config.json").write_text(json.dumps(saved))
    assert train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])["step"] == 6
    with_views = config.copy_and_resolve_references()
    with_views.loss.aux_kd_weight = 1.0
    with pytest.raises(ValueError, match=r"started with another config \(loss.aux_kd_weight differ"):
        train.check_workdir(workdir, with_views)

    # Allowed explicitly: the finished run resumes (nothing left to train) with the new config.
    report = train.train_and_evaluate(other_rate, workdir, devices=jax.devices()[:1], allow_config_change=True)
    assert report["step"] == 6
    assert weights.load_config(workdir).optim.learning_rate == 5e-4


def test_an_unknown_checkpoint_choice_is_one_sentence():
    with pytest.raises(ValueError, match=r"^which='bogus' is not understood; use one of best, latest\.$"):
        kdjax.load("realtime_kd_x2", which="bogus")


def test_command_line_mistakes_are_one_sentence_without_a_traceback(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for name, content in (("bad_json", "{nope"), ("empty", "{}"), ("a_list", "[1, 2]")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(content)
    train_teacher = ["train", "--config=configs/teacher.py:tiny", f"--workdir={tmp_path / 'new_run'}"]
    sharpen = ["sharpen", "--model=realtime_kd_x2", "--input=in.png", "--output=out.png"]
    cases = {  # arguments -> what the last line of stderr must name
        ("train", "--config=configs/nope.py", f"--workdir={tmp_path}"): "configs/nope.py does not exist",
        ("train", "--config=configs/teacher.py:bogus", f"--workdir={tmp_path}"): "variant 'bogus'",
        (*train_teacher, "--config.nope=1"): "--config.nope: the config has no key 'nope'",
        ("evaluate", "--model=realtime_kd_x2", "--which=bogus"): "--which=bogus",
        (*sharpen, "--overlap=abc"): "--overlap=abc",
        (*sharpen, "--tile=²"): "--tile=² must be a whole number",
        ("train", "--config=configs/teacher.py:tiny", f"--workdir={a_file}"): f"--workdir={a_file} is a file",
        (*train_teacher, "--config.data.patch_size=0"): "config.data.patch_size=0",
        (*train_teacher, "--config.data.patch_size=-8"): "config.data.patch_size=-8",
        ("evaluate", f"--model={tmp_path / 'bad_json'}"): "config.json is not valid JSON",
        ("evaluate", f"--model={tmp_path / 'empty'}"): "config.json holds no model config",
        ("evaluate", f"--model={tmp_path / 'a_list'}"): "config.json holds no model config",
    }
    # Each process imports JAX: run them side by side.
    processes = {
        args: subprocess.Popen([*LAUNCH, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args in cases
    }
    for args, expected in cases.items():
        _, stderr = processes[args].communicate(timeout=300)
        last = [line for line in stderr.splitlines() if line.strip()][-1]
        assert processes[args].returncode != 0, args
        assert "Traceback" not in stderr, (args, stderr[-2000:])
        assert last.startswith("error: ") and expected in last, (args, last)
        # One sentence: one line, ending in one full stop, no sentence break before it.
        assert last.endswith(".") and ". " not in last.removesuffix(".").replace("e.g. ", ""), (args, last)
    assert not (tmp_path / "new_run").exists()  # refused before anything was written
