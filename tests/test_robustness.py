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
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import jax
import numpy as np
import pytest
from PIL import Image

import kdjax
from kdjax import checkpoints, images, serving, train, weights
from kdjax.images import to_rgb_uint8, to_uint8
from kdjax.models import build_model, model_config
from kdjax.serving import files, tiling, video
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


# --- Issue 25: nothing a user owns is overwritten or deleted, no file exhausts memory or leaves
# garbage. Subprocess tests of the installed command. ------------------------------------------------

KDJAX = Path(sys.executable).parent / "kdjax"  # the console script of this environment
RELEASED = Path(str(weights.released_models()["rep_kd_x2"])).parent
TEMPORARY = ".kdjax-"  # in the name of every temporary kdjax writes (kdjax.outputs)


def _state(*folders: Path) -> dict[Path, tuple[bytes, int]]:
    """Every file under ``folders``, hidden ones included, with its bytes and mtime (bytecode
    caches aside: Python writes them on import)."""
    return {
        p: (p.read_bytes(), p.stat().st_mtime_ns)
        for folder in folders for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def _assert_one_sentence_error(returncode: int, stderr: str, expected: str, what) -> None:
    assert returncode not in (0, None), (what, stderr[-2000:])
    assert "Traceback" not in stderr, (what, stderr[-3000:])
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: ") and expected in last, (what, last)
    assert last.endswith(".") and ". " not in last.removesuffix(".").replace("e.g. ", ""), (what, last)


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores permission bits: /sys then)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        (Path("/sys") / "kdjax_probe").touch()
    except OSError:
        return Path("/sys")
    pytest.skip("no unwritable folder: running as root where /sys is writable")


def _photo(height: int = 24, width: int = 32) -> np.ndarray:
    rng = np.random.default_rng(height * width)
    return np.cumsum(rng.integers(0, 16, (height, width, 3)), axis=1).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def owned(tmp_path_factory, trained):
    """What a user owns: images, notes, a video, a checkpoint, an exported model folder, a training
    workdir, and a file named like another process's temporary."""
    from test_torch_import import _save_state_dict, _torch_layout_state_dict  # pylint: disable=import-outside-toplevel
    from test_video import _write_clip  # pylint: disable=import-outside-toplevel

    root = tmp_path_factory.mktemp("owned")
    Image.fromarray(_photo()).save(root / "photo.png")
    Image.fromarray(_photo(20, 28)).save(root / "existing.png")
    (root / "images").mkdir()
    Image.fromarray(_photo(16, 16)).save(root / "images" / "a.png")
    (root / "notes.txt").write_text("my notes\n")
    (root / "folder.mp4").mkdir()
    _write_clip(root / "clip.mp4")
    _save_state_dict(root / "in.pth", _torch_layout_state_dict("rlfn_s"))
    shutil.copytree(RELEASED / "realtime_x2", root / "exported")
    (root / ".photo.kdjax-1-00000000.partial.png").write_bytes(b"another process's temporary")
    return {"root": root, "workdir": trained[1]}


def _hostile_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    """Checkpoints that must each be one sentence: name -> (file, what the sentence says)."""
    from test_torch_import import (  # pylint: disable=import-outside-toplevel
        _PickleWriter, _save_state_dict, _torch_layout_state_dict, _with_zero_entry, _write_torch_file,
    )

    folder.mkdir(exist_ok=True)
    state = _torch_layout_state_dict("rlfn_s")
    normal = _save_state_dict(folder / "normal.pth", state)
    data = bytearray(normal.read_bytes())
    data[data.index(state["conv_1.weight"].tobytes()) + 7] ^= 0xFF
    (folder / "bad_crc.pth").write_bytes(bytes(data))
    writer = _PickleWriter()
    writer.global_("torch", "FloatStorage")
    writer.data += b")R."
    nan = {**state, "conv_1.bias": np.full_like(state["conv_1.bias"], np.nan)}
    return {
        "bloated": (_with_zero_entry(normal, folder / "bloated.pth", "archive/data/0", 64 << 20), "holds 67108864 bytes"),
        "bad_crc": (folder / "bad_crc.pth", "Bad CRC-32"),
        "storage_call": (_write_torch_file(folder / "call.pth", {}, {}, pickled=bytes(writer.data)), "torch.FloatStorage"),
        "nan": (_save_state_dict(folder / "nan.pth", nan), "holds NaN or infinite values"),
    }


def test_every_writer_refuses_in_one_sentence_what_it_must_not_write(owned, tmp_path):
    root, workdir = owned["root"], owned["workdir"]
    unwritable = _unwritable_folder(tmp_path)
    photo, notes, clip, exported = root / "photo.png", root / "notes.txt", root / "clip.mp4", root / "exported"
    image = ("sharpen", "--model=realtime_x2", f"--input={photo}")
    folder = ("sharpen", "--model=realtime_x2", f"--input={root / 'images'}")
    video = ("sharpen", "--model=realtime_x2", f"--input={clip}")
    to_folder = ("export", f"--model={workdir}")
    onnx = ("export", "--model=realtime_x2", "--format=onnx")
    stablehlo = ("export", "--model=realtime_x2", "--format=stablehlo")
    weights_in = ("import-weights", "--arch=rlfn_s", f"--input={root / 'in.pth'}")

    def cache(run: str) -> tuple[str, ...]:
        return ("train", "--config=configs/teacher.py:tiny", f"--workdir={tmp_path / run}", "--config.data.cache_variants=1")

    released, inside_released = RELEASED / "rep_kd_x2", "inside the released models' folder"
    cases = {  # arguments -> what the last line of stderr must say
        (*image, f"--output={notes}", "--overwrite"): "neither a folder nor an image file name",
        (*image, f"--output={root / 'existing.png'}"): "already exists",
        (*image, f"--output={released / 'out.png'}"): inside_released,
        (*image, f"--output={exported / 'out.png'}"): f"inside the model folder {exported}",
        (*image, f"--output={unwritable / 'out.png'}"): "is not writable",
        (*image, f"--output={photo}", "--overwrite"): "would overwrite input",
        (*folder, f"--output={notes}"): "is a file but input",
        (*folder, f"--output={released}"): inside_released,
        (*folder, f"--output={unwritable / 'out'}"): "is not writable",
        (*folder, f"--output={root / 'images'}"): "is the input folder",
        (*video, f"--output={released / 'out.mp4'}"): inside_released,
        (*video, f"--output={exported / 'out.mp4'}"): "inside the model folder",
        (*video, f"--output={unwritable / 'out.mp4'}"): "is not writable",
        (*video, f"--output={clip}", "--overwrite"): "would overwrite input",
        (*to_folder, f"--output={notes}"): "already exists",
        (*to_folder, f"--output={released}", "--overwrite"): inside_released,
        (*to_folder, f"--output={exported}"): "already exists",
        (*to_folder, f"--output={exported / 'sub'}"): "inside the model folder",
        (*to_folder, f"--output={unwritable / 'model'}"): "is not writable",
        (*to_folder, f"--output={workdir}", "--overwrite"): "is the input",
        (*onnx, f"--output={photo}"): "already exists",
        (*onnx, f"--output={root / 'images'}", "--overwrite"): "is a folder, not a file",
        (*onnx, f"--output={released / 'params.msgpack'}", "--overwrite"): inside_released,
        (*onnx, f"--output={exported / 'params.msgpack'}", "--overwrite"): "inside the model folder",
        (*onnx, f"--output={notes / 'model.onnx'}"): "which is a file, not a folder",
        (*onnx, f"--output={unwritable / 'model.onnx'}"): "is not writable",
        ("export", f"--model={exported}", "--format=stablehlo", f"--output={exported}", "--overwrite"): "is a folder",
        (*stablehlo, f"--output={released / 'model.stablehlo'}"): inside_released,
        (*stablehlo, f"--output={unwritable / 'model.stablehlo'}"): "is not writable",
        ("export", "--model=swin_light_x2", "--format=stablehlo", f"--output={tmp_path / 's.stablehlo'}"):
            "SwinIR cannot be exported",
        ("export", "--model=swin_light_x2", "--format=onnx", f"--output={tmp_path / 's.onnx'}"):
            "StableHLO for one image size from Python",
        (*weights_in, f"--output={notes}"): "already exists",
        (*weights_in, f"--output={released}", "--overwrite"): inside_released,
        (*weights_in, f"--output={exported}"): "already exists",
        (*weights_in, f"--output={exported / 'sub'}"): "inside the model folder",
        (*weights_in, f"--output={unwritable / 'teacher'}"): "is not writable",
        (*weights_in, f"--output={root / 'in.pth'}", "--overwrite"): "is the input",
        (*cache("run_1"), f"--config.data.cache_dir={exported}"): "inside the model folder",
        (*cache("run_2"), f"--config.data.cache_dir={notes}"): "which is a file, not a folder",
        (*cache("run_3"), f"--config.data.cache_dir={unwritable / 'cache'}"): "is not writable",
    }
    for name, (checkpoint, expected) in _hostile_checkpoints(tmp_path / "hostile").items():
        cases[("import-weights", "--arch=rlfn_s", f"--input={checkpoint}", f"--output={tmp_path / name}")] = expected
    before = _state(root, RELEASED)
    results = {}
    pending = list(cases)
    running: dict[tuple, subprocess.Popen] = {}
    while pending or running:  # a few at a time: each process imports JAX
        while pending and len(running) < 6:
            args = pending.pop()
            running[args] = subprocess.Popen(
                [str(KDJAX), *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        args = next(iter(running))
        results[args] = (running[args].communicate(timeout=300)[1], running[args].returncode)
        del running[args]
    for args, expected in cases.items():
        stderr, returncode = results[args]
        _assert_one_sentence_error(returncode, stderr, expected, args)
        if "--format=onnx" in args and "swin_light_x2" in " ".join(args):
            assert "--format=stablehlo" not in stderr.splitlines()[-1]
    assert _state(root, RELEASED) == before
    assert not [path for path in tmp_path.rglob(f"*{TEMPORARY}*")]


# Runs the command line with every rename of a kdjax temporary held up (after a marker file names
# the temporary): a signal then arrives mid-write, whatever the writer, deterministically.
_HELD_BEFORE_RENAME = """
import os, sys, time
marker = sys.argv.pop(1)
rename = os.replace
def held(src, dst, *args, **kwargs):
    if ".kdjax-" in os.fspath(src) and ".probe." not in os.fspath(src):
        with open(marker, "w") as file:
            file.write(os.fspath(src))
        time.sleep(600)
    return rename(src, dst, *args, **kwargs)
os.replace = held
from kdjax import cli
cli.main()
"""


def _interrupt_mid_write(args: list[str], signum: int, tmp_path: Path) -> tuple[int, str, Path]:
    marker = tmp_path / f"marker_{signum}"
    process = subprocess.Popen(
        [sys.executable, "-c", _HELD_BEFORE_RENAME, str(marker), *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    for _ in range(3000):
        if marker.is_file() and marker.read_text() or process.poll() is not None:
            break
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()[1][-3000:]
    temporary = Path(marker.read_text())
    assert temporary.exists()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    marker.unlink()
    return process.returncode, stderr, temporary


@pytest.mark.parametrize("writer", ["image", "folder", "video", "export", "onnx", "stablehlo", "import", "cache"])
def test_an_interrupted_write_removes_only_this_process_temporaries(owned, tmp_path, writer):
    root, workdir = owned["root"], owned["workdir"]
    out = tmp_path / "out"
    args = {
        "image": ["sharpen", "--model=realtime_x2", f"--input={root / 'photo.png'}", f"--output={root / 'photo_x.png'}"],
        "folder": ["sharpen", "--model=realtime_x2", f"--input={root / 'images'}", f"--output={out}"],
        "video": ["sharpen", "--model=realtime_x2", f"--input={root / 'clip.mp4'}", f"--output={out}.mp4"],
        "export": ["export", f"--model={workdir}", f"--output={out}"],
        "onnx": ["export", "--model=realtime_x2", "--format=onnx", f"--output={out}.onnx"],
        "stablehlo": ["export", "--model=realtime_x2", "--format=stablehlo", f"--output={root / 'out.stablehlo'}"],
        "import": ["import-weights", "--arch=rlfn_s", f"--input={root / 'in.pth'}", f"--output={out}"],
        "cache": ["train", "--config=configs/teacher.py:tiny", f"--workdir={tmp_path / 'run'}",
                  "--config.data.cache_variants=1", f"--config.data.cache_dir={out}"],
    }[writer]
    signum = signal.SIGTERM if writer in ("video", "export", "stablehlo", "cache") else signal.SIGINT
    before = _state(root)
    returncode, stderr, temporary = _interrupt_mid_write(args, signum, tmp_path)
    assert returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last == f"error: Interrupted by {signal.Signals(signum).name}; unfinished outputs were removed and " \
        "finished ones kept.", last
    assert not temporary.exists()
    assert not [path for path in tmp_path.rglob(f"*{TEMPORARY}*")]
    # Nothing the user had changed; the other process's temporary is still there.
    assert _state(root) == before and (root / ".photo.kdjax-1-00000000.partial.png").is_file()
    assert not [path for path in root.rglob(f"*{TEMPORARY}*") if path.name != ".photo.kdjax-1-00000000.partial.png"]


def _faststart_clip(path: Path, frames: int) -> Path:
    """An H.264 .mp4 whose header (with its frame count) comes first, so a truncated copy still opens."""
    from test_video import _pattern  # pylint: disable=import-outside-toplevel

    with av.open(str(path), "w", options={"movflags": "faststart"}) as output:
        stream = output.add_stream("libx264", rate=24)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        for index in range(frames):
            output.mux(stream.encode(av.VideoFrame.from_ndarray(_pattern(index), format="rgb24")))
        output.mux(stream.encode(None))
    return path


def test_a_video_named_like_a_partial_output_is_kept_and_a_short_output_is_never_silent(tmp_path):
    # The input's own name is what kdjax once used for the partial output of salvage.mp4.
    source = _faststart_clip(tmp_path / ".salvage.partial.mp4", 96)
    before = _state(tmp_path)
    command = [str(KDJAX), "sharpen", "--model=realtime_x2", f"--input={source}", f"--output={tmp_path / 'salvage.mp4'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _state(tmp_path)[source] == before[source]
    assert video.probe_video(tmp_path / "salvage.mp4").frames == 96
    assert "(96 frames," in result.stdout and "ended after" not in result.stderr

    # A clip cut short: the output holds what could be decoded, and says so.
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size * 2 // 3])
    command[3:] = [f"--input={truncated}", f"--output={tmp_path / 'cut_out.mp4'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    written = video.probe_video(tmp_path / "cut_out.mp4").frames
    assert result.returncode == 0 and 0 < written < 96, result.stderr[-3000:]
    assert f"{truncated} ended after {written} of the 96 frames its header counts" in result.stderr


def test_an_animated_image_says_that_only_its_first_frame_is_used(tmp_path):
    frames = [Image.fromarray(_photo() // (index + 1)) for index in range(3)]
    for suffix in (".gif", ".webp"):
        frames[0].save(tmp_path / f"moving{suffix}", save_all=True, append_images=frames[1:], duration=100, loop=0)
        result = subprocess.run(
            [str(KDJAX), "sharpen", "--model=realtime_x2", f"--input={tmp_path / f'moving{suffix}'}",
             f"--output={tmp_path / f'still{suffix}.png'}"],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        warning = f"moving{suffix} has 3 frames; only the first is used (convert it to a video"
        assert sum(warning in line for line in result.stderr.splitlines()) == 1, result.stderr[-3000:]


def test_a_signal_during_a_large_16_bit_png_write_is_handled_at_once(tmp_path, monkeypatch):
    """Writing a 16-bit PNG compressed the whole image in one zlib call, during which Python
    cannot run a signal handler: Ctrl-C on a 16000x12000 image waited for over a minute. Now it
    is compressed a few MiB of rows at a time, and each piece is streamed to the file."""
    monkeypatch.setattr(images, "_PNG_ROWS_PER_CHUNK_BYTES", 1 << 20)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (2400, 3200, 3), dtype=np.uint16)  # noise, 46 MB: seconds in one zlib call
    images.write_image_file(tmp_path / "small.png", pixels[:300], images.ImageMetadata(bit_depth=16))
    np.testing.assert_array_equal(images.read_image_file(tmp_path / "small.png")[0], pixels[:300])

    class Alarm(Exception):
        pass

    def alarm(signum, frame):
        raise Alarm

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        start = time.perf_counter()
        with pytest.raises(Alarm):
            images.write_image_file(tmp_path / "big.png", pixels, images.ImageMetadata(bit_depth=16))
        assert time.perf_counter() - start < 0.2 + 0.5  # one piece at most after the signal
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not list(tmp_path.glob("*big*"))


def test_overwrite_replaces_an_exported_model_folder_whole_and_nothing_else(tmp_path):
    from kdjax import outputs  # pylint: disable=import-outside-toplevel

    assert outputs.MODEL_FOLDER_FILES == (weights.CONFIG_FILE, weights.PARAMS_FILE, weights.EXPORT_FILE)
    config, params = weights.restore_params("realtime_x2")
    exported = weights.write_model_folder(tmp_path / "model", config, params, {"from": "first"})
    with pytest.raises(outputs.OutputError, match="already exists"):
        weights.write_model_folder(exported, config, params, {"from": "second"})
    weights.write_model_folder(exported, config, params, {"from": "second"}, overwrite=True)
    assert json.loads((exported / weights.EXPORT_FILE).read_text()) == {"from": "second"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]  # no temporary, no old copy
    (exported / "notes.txt").write_text("mine")
    with pytest.raises(outputs.OutputError, match=r"holds notes.txt besides a model, which replacing it would delete"):
        weights.write_model_folder(exported, config, params, {"from": "third"}, overwrite=True)
    assert (exported / "notes.txt").read_text() == "mine"
