"""Training and distillation: sharding equivalence, exact resume, frozen teacher,
NaN guard and user errors. Tiny models and patches keep every compile small."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from kdjax import checkpoints, distill, evaluation, parallel, train, weights
from kdjax import config as config_lib
from kdjax import data
from kdjax import train_state as train_state_lib
from kdjax.models import build_model, model_config
from kdjax.models.summary import abstract_params

REPO = Path(__file__).resolve().parents[1]
TINY_TEACHER = dict(embed_dim=8, depths=(1, 1), num_heads=(1, 1), window_size=4, mlp_ratio=1.0)
TINY_STUDENT = dict(width=4, num_blocks=2)


def _eval_folder(root: Path) -> str:
    """Two small photos as a validation folder, so evaluation compiles for tiny shapes."""
    folder = root / "eval_images"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(2):
        gradient = np.linspace(0, 255, 32)[None, :, None] * np.ones((32, 1, 3))
        image = np.clip(gradient + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"image_{index}.png")
    return str(folder)


def tiny_config(root: Path, *, model=None, steps: int = 6) -> ml_collections.ConfigDict:
    config = config_lib.base_config()
    config.model = model or model_config("realtime", **TINY_STUDENT)
    config.data.patch_size = 16
    config.data.eval_source = data.folder_source_config(_eval_folder(root))
    config.batch_size = 8
    config.num_steps = steps
    config.optim.warmup_steps = 0
    config.optim.learning_rate = 1e-3
    config.ema_decay = 0.9
    config.log_every_steps = 2
    config.eval.every_steps = 3
    config.eval.num_grid_images = 1
    config.checkpoint.every_steps = 3
    config.checkpoint.async_save = False
    return config


def _random_batch(batch_size: int, patch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (batch_size, patch, patch, 3), dtype=np.uint8)
    noisy = np.clip(target + rng.normal(0, 25, target.shape), 0, 255).astype(np.uint8)
    return {"input": noisy, "target": target}


def _one_step(config, devices):
    mesh = parallel.make_mesh(devices)
    model = build_model(config.model)
    tx = train_state_lib.make_optimizer(config)
    replicated = parallel.replicated(mesh)
    params = train_state_lib.init_params(config, model, jax.random.key(0))
    state = parallel.replicate(train_state_lib.create_train_state(params, tx), mesh)
    step = jax.jit(train.make_train_step(config, model, tx), out_shardings=(replicated, replicated))
    batch = parallel.shard_batch(_random_batch(config.batch_size, config.data.patch_size), mesh)
    state, metrics = step(state, batch, jax.device_put(jax.random.key(1), replicated))
    return jax.device_get(state.params), float(metrics["loss"])


def test_one_step_on_one_and_eight_devices_agree(tmp_path):
    assert jax.device_count() == 8, "tests/conftest.py should provide 8 CPU devices"
    config = tiny_config(tmp_path)
    # Adam's first update is lr * g / (|g| + eps): with the default eps it is the
    # sign of g, which float summation order flips for near-zero gradients. A
    # larger eps makes the update proportional to g, so the comparison is fair.
    config.optim.eps = 1e-2
    # L1's gradient at an exact tie (output == target, common at init for a
    # global-residual model on 8-bit data) depends on how XLA contracts the
    # arithmetic; Charbonnier is smooth there.
    config.loss.pixel = "charbonnier"
    params_1, loss_1 = _one_step(config, jax.devices()[:1])
    params_8, loss_8 = _one_step(config, jax.devices()[:8])
    assert loss_1 == pytest.approx(loss_8, rel=1e-5)
    for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_8)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The step really trained something: parameters moved from their init.
    params_0 = train_state_lib.init_params(config, build_model(config.model), jax.random.key(0))
    moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(params_0), jax.tree.leaves(params_1)))
    assert moved > 1e-5


class _Killed(Exception):
    pass


def _raw_params(workdir: Path, step: int):
    manager = checkpoints.make_manager(workdir, read_only=True)
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore())).state
    manager.close()
    return state


def test_resume_after_kill_gives_the_same_parameters(tmp_path):
    config = tiny_config(tmp_path)
    train.train_and_evaluate(config, tmp_path / "uninterrupted", devices=jax.devices()[:2])

    def kill_after_first_checkpoint(step, batch):
        if step == 4:
            raise _Killed
        return batch

    with pytest.raises(_Killed):
        train.train_and_evaluate(
            config, tmp_path / "resumed", devices=jax.devices()[:2], batch_hook=kill_after_first_checkpoint
        )
    assert checkpoints.make_manager(tmp_path / "resumed", read_only=True).latest_step() == 3
    train.train_and_evaluate(config, tmp_path / "resumed", devices=jax.devices()[:2])

    expected = _raw_params(tmp_path / "uninterrupted", 6)
    resumed = _raw_params(tmp_path / "resumed", 6)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "resumed" / "grids" / "step_0000006.png").is_file()
    assert list((tmp_path / "resumed" / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "resumed" / "eval_results.json").read_text())["step"] == 6


def test_distillation_keeps_the_teacher_frozen_and_out_of_student_checkpoints(tmp_path):
    teacher_config = tiny_config(tmp_path, model=model_config("swin_tiny", **TINY_TEACHER), steps=3)
    teacher_dir = tmp_path / "teacher"
    train.train_and_evaluate(teacher_config, teacher_dir, devices=jax.devices()[:1])
    _, teacher_before = weights.restore_params(teacher_dir)
    teacher_files_before = sorted(str(p) for p in teacher_dir.rglob("*"))

    student_config = tiny_config(tmp_path, steps=3)
    student_config.teacher.workdir = str(teacher_dir)
    student_config.loss.output_kd_weight = 1.0
    student_config.loss.feature_kd_weight = 0.5
    student_config.loss.feature_kd = "affinity"
    student_config.loss.feature_pairs = "block_1:group_0"
    report = train.train_and_evaluate(student_config, tmp_path / "student", devices=jax.devices()[:1])

    _, teacher_after = weights.restore_params(teacher_dir)
    for a, b in zip(jax.tree.leaves(teacher_before), jax.tree.leaves(teacher_after)):
        np.testing.assert_array_equal(a, b)
    assert sorted(str(p) for p in teacher_dir.rglob("*")) == teacher_files_before

    state = _raw_params(tmp_path / "student", 3)
    assert set(state["params"]) == {"model", "adapters"}
    student_shapes = jax.tree.map(np.shape, state["params"]["model"])
    expected_shapes = jax.tree.map(np.shape, abstract_params(build_model(student_config.model)))
    assert student_shapes == expected_shapes
    assert list(state["params"]["adapters"]) == ["block_1_to_group_0"]
    assert {"teacher", "model", "input"} <= set(report["results"])
    saved = weights.load_config(tmp_path / "student")
    assert saved.teacher.model.name == "swin_tiny"

    # Evaluating the workdir afterwards reproduces the run's own final evaluation.
    eval_folder = student_config.data.eval_source.paths[0]
    evaluated = evaluation.evaluate_workdir(tmp_path / "student", eval_dirs=[eval_folder])
    assert evaluated[Path(eval_folder).name]["model"]["psnr_y"] == pytest.approx(
        report["results"]["model"]["psnr_y"], abs=1e-4
    )


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(tmp_path, steps=8)

    def poison(step, batch):
        if step == 4:
            return {**batch, "input": np.full(batch["input"].shape, np.nan, np.float32)}
        return batch

    with pytest.raises(train.NonFiniteLossError, match=r"diverged at step 5.*last good checkpoint \(step 3\)"):
        train.train_and_evaluate(config, tmp_path / "run", devices=jax.devices()[:1], batch_hook=poison)
    state = _raw_params(tmp_path / "run", 3)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state["params"]))

    # Diverging before the first checkpoint says so instead of naming one.
    def poison_first(step, batch):
        return poison(4, batch) if step == 0 else batch

    with pytest.raises(train.NonFiniteLossError, match=r"diverged at step 1:.*and no checkpoint had been saved yet;"):
        train.train_and_evaluate(config, tmp_path / "early", devices=jax.devices()[:1], batch_hook=poison_first)


def test_config_errors_are_one_clear_sentence(tmp_path):
    config = tiny_config(tmp_path)
    config.loss.pixel = "l3"
    with pytest.raises(ValueError, match=r"config.loss.pixel='l3' is not one of"):
        config_lib.validate(config)

    config = tiny_config(tmp_path)
    config.teacher.workdir = str(tmp_path / "no_teacher_here")
    config.loss.output_kd_weight = 1.0
    (tmp_path / "no_teacher_here").mkdir()
    with pytest.raises(FileNotFoundError, match="not a kdjax training workdir"):
        train.train_and_evaluate(config, tmp_path / "student", devices=jax.devices()[:1])

    # A teacher workdir with a config but no checkpoint yet.
    weights.save_config(tmp_path / "no_teacher_here", tiny_config(tmp_path))
    with pytest.raises(FileNotFoundError, match="No checkpoint found"):
        train.train_and_evaluate(config, tmp_path / "student", devices=jax.devices()[:1])


def test_launch_rejects_a_misspelt_config_key(tmp_path):
    result = subprocess.run(
        [
            sys.executable, str(REPO / "launch.py"), "--config=configs/quickstart.py",
            f"--workdir={tmp_path}", "--config.runs.teacher.num_stepz=3",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "num_stepz" in result.stderr


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path):
    config = tiny_config(tmp_path, steps=8)
    config.checkpoint.every_steps = 100  # only the preemption save can write step 2

    def preempt(step, batch):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return batch

    previous_handler = signal.getsignal(signal.SIGTERM)
    report = train.train_and_evaluate(config, tmp_path / "run", devices=jax.devices()[:1], batch_hook=preempt)
    assert report["step"] == 2
    assert checkpoints.make_manager(tmp_path / "run", read_only=True).latest_step() == 2
    assert signal.getsignal(signal.SIGTERM) is previous_handler
    # That checkpoint was saved without validation metrics: "best" falls back to it.
    _, params = weights.restore_params(tmp_path / "run", which="best")
    assert jax.tree.leaves(params)


def test_teacher_labelled_pool_trains_like_the_teacher_in_the_step(tmp_path):
    teacher_config = tiny_config(tmp_path, model=model_config("swin_tiny", **TINY_TEACHER), steps=2)
    train.train_and_evaluate(teacher_config, tmp_path / "teacher", devices=jax.devices()[:1])
    final_params = {}
    label_cache = distill.TeacherLabelCache()
    for pool_batches in (0, 2):
        config = tiny_config(tmp_path, steps=2)
        config.teacher.workdir = str(tmp_path / "teacher")
        config.loss.output_kd_weight = 1.0
        config.loss.feature_kd_weight = 0.5
        config.loss.feature_pairs = "block_0:group_1"
        config.pool_batches = pool_batches
        workdir = tmp_path / f"student_pool_{pool_batches}"
        train.train_and_evaluate(config, workdir, devices=jax.devices()[:1], label_cache=label_cache)
        final_params[pool_batches] = _raw_params(workdir, 2)["params"]
    # The pool keeps teacher features as float16: equal up to that rounding.
    for a, b in zip(jax.tree.leaves(final_params[0]), jax.tree.leaves(final_params[2])):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    mesh = parallel.make_mesh(jax.devices()[:1])
    cached_pool = label_cache.pool(config, distill.load_teacher(config, mesh), mesh)  # labelled once, reused
    assert len(cached_pool) == 2 and cached_pool[0]["teacher_features"]["group_1"].dtype == np.float16


def _jitted_step_from_init(config):
    """A freshly initialised state, the jitted train step and one random batch, on one device."""
    model = build_model(config.model)
    tx = train_state_lib.make_optimizer(config)
    state = train_state_lib.create_train_state(
        train_state_lib.init_params(config, model, jax.random.key(0)), tx
    )
    step = jax.jit(train.make_train_step(config, model, tx))
    return state, step, _random_batch(config.batch_size, config.data.patch_size)


def test_ema_decay_ramps_up_so_short_runs_forget_the_initial_weights(tmp_path):
    config = tiny_config(tmp_path)
    config.ema_decay = 0.999
    state, step, batch = _jitted_step_from_init(config)
    for expected_decay in (1 / 10, 2 / 11):
        previous_ema = state.ema_params
        state, _ = step(state, batch, jax.random.key(1))
        jax.tree.map(
            lambda ema, old, new: np.testing.assert_allclose(
                ema, expected_decay * old + (1 - expected_decay) * new, rtol=1e-5, atol=1e-7
            ),
            state.ema_params, previous_ema, state.params,
        )


def test_bfloat16_compute_trains_with_float32_parameters(tmp_path):
    config = tiny_config(tmp_path)
    config.model = model_config("realtime", dtype="bfloat16", **TINY_STUDENT)
    config.loss.pixel = "mse"
    state, step, batch = _jitted_step_from_init(config)
    losses = []
    for _ in range(5):
        state, metrics = step(state, batch, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))
    assert bool(metrics["finite"]) and losses[-1] < losses[0]


def test_fine_tuning_starts_from_the_named_models_weights_and_refuses_another_network(tmp_path):
    train.train_and_evaluate(tiny_config(tmp_path, steps=3), tmp_path / "base")
    _, trained = weights.restore_params(tmp_path / "base", which="latest", ema=False)
    fine_tuning = tiny_config(tmp_path, steps=1)
    fine_tuning.init.workdir, fine_tuning.init.ema = str(tmp_path / "base"), False
    fine_tuning.optim.learning_rate = 0.0  # the step changes nothing: the run holds its start
    train.train_and_evaluate(fine_tuning, tmp_path / "fine")
    _, started = weights.restore_params(tmp_path / "fine", which="latest", ema=False)
    jax.tree.map(np.testing.assert_array_equal, started, trained)

    fine_tuning.model = model_config("realtime", width=8, num_blocks=2)
    with pytest.raises(ValueError, match=r"holds a realtime whose parameters do not fit config.model \(realtime\)"):
        train.train_and_evaluate(fine_tuning, tmp_path / "other")
