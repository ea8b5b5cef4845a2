"""Training and distillation: the compiled steps, evaluation, and the loop.

``make_train_step`` builds the pure update ``(state, batch, rng, teacher_params)
-> (state, metrics)``; with a teacher it is a distillation step in which only the
student (and its feature adapters) receive gradients and the frozen teacher's
forward pass runs inside the same compiled function. ``train_and_evaluate`` runs
it over a data-parallel mesh with checkpointing, evaluation, logging and
preemption handling.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils
from tensorboardX import SummaryWriter

from kdjax import checkpoints, data, losses, parallel
from kdjax import config as config_lib
from kdjax import train_state as train_state_lib
from kdjax.evaluation import Evaluator, make_predict_fn, to_unit_float
from kdjax.models import build_model
from kdjax.train_state import TrainState

Batch = Mapping[str, jax.Array]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or gradient."""


def _tree_all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def make_train_step(
    config: ml_collections.ConfigDict,
    model,
    tx: optax.GradientTransformation,
    teacher=None,
    adapters: losses.FeatureAdapters | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Builds the pure train step ``(state, batch, rng, teacher_params=None) -> (state, metrics)``.

    ``batch`` holds ``input`` and ``target`` images (uint8 or float in [0, 1])
    and, when the teacher ran once over a training pool, ``teacher_output`` (float
    in [0, 1]) and ``teacher_features`` (name -> map); the step then takes no
    teacher (``teacher=None``). The
    frozen teacher's parameters are a separate argument so they never enter the
    trainable state (nor its checkpoints). A step whose loss or gradients are not
    finite leaves the state untouched and reports ``finite = False``.
    """
    loss_cfg = config.loss
    use_features = loss_cfg.feature_kd_weight > 0
    schedule = train_state_lib.learning_rate_schedule(config.optim, config.num_steps)

    def train_step(state: TrainState, batch: Batch, rng: jax.Array, teacher_params=None):
        rng = jax.random.fold_in(rng, state.step)
        inputs = to_unit_float(batch["input"])
        target = to_unit_float(batch["target"])

        teacher_output, teacher_features = None, None
        if teacher is not None:
            out = teacher.apply(
                {"params": teacher_params}, inputs, train=False, return_features=use_features
            )
            teacher_output, teacher_features = out if use_features else (out, None)
            teacher_output = jax.lax.stop_gradient(teacher_output)
        elif "teacher_output" in batch:
            teacher_output = batch["teacher_output"]
            teacher_features = jax.tree.map(
                lambda f: f.astype(jnp.float32), batch.get("teacher_features")
            )

        def loss_fn(params):
            out = model.apply(
                {"params": params["model"]},
                inputs,
                train=True,
                return_features=use_features,
                rngs={"dropout": rng},
            )
            prediction, features = out if use_features else (out, None)
            terms = {
                "pixel": (
                    loss_cfg.pixel_weight,
                    losses.pixel_loss(prediction, target, loss_cfg.pixel, loss_cfg.charbonnier_eps),
                )
            }
            if loss_cfg.ssim_weight:
                terms["ssim"] = (loss_cfg.ssim_weight, losses.ssim_loss(prediction, target))
            if loss_cfg.output_kd_weight:
                terms["output_kd"] = (
                    loss_cfg.output_kd_weight,
                    losses.pixel_loss(
                        prediction, teacher_output, loss_cfg.output_kd, loss_cfg.charbonnier_eps
                    ),
                )
            if use_features:
                teacher_maps = [teacher_features[name] for _, name in adapters.pairs]
                adapted = adapters.apply(
                    {"params": params["adapters"]}, features, [t.shape for t in teacher_maps]
                )
                terms["feature_kd"] = (
                    loss_cfg.feature_kd_weight,
                    jnp.mean(
                        jnp.stack(
                            [
                                losses.feature_loss(s, t, loss_cfg.feature_kd, loss_cfg.affinity_max_side)
                                for s, t in zip(adapted, teacher_maps)
                            ]
                        )
                    ),
                )
            total = sum(weight * value for weight, value in terms.values())
            return total, {f"loss_{name}": value for name, (_, value) in terms.items()}

        (loss, loss_terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if config.ema_decay > 0:
            # The decay ramps up from 0.1 (TF's ExponentialMovingAverage with num_updates):
            # a fixed 0.999 would still hold 0.999**2500 = 8% of the initial weights after
            # a 2500-step CPU run; this way the average spans roughly the last tenth of
            # the run until it reaches config.ema_decay.
            decay = jnp.minimum(config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
            ema_params = optax.incremental_update(params, state.ema_params, 1.0 - decay)
        else:
            ema_params = params
        updated = TrainState(
            step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params
        )
        finite = jnp.isfinite(loss) & _tree_all_finite(grads)
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
        step_metrics = {
            "loss": loss,
            **loss_terms,
            "grad_norm": optax.global_norm(grads),
            "learning_rate": schedule(state.step),
            "finite": finite,
        }
        return new_state, step_metrics

    return train_step


def load_teacher(
    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
) -> tuple[Any, Any]:
    """The frozen teacher model and its parameters (replicated), or ``(None, None)``.

    The teacher's own model config is read from its workdir and recorded in
    ``config.teacher.model`` so the student's workdir documents what it learned from.
    """
    if not config.teacher.workdir:
        return None, None
    teacher_config, teacher_params = checkpoints.restore_params(
        config.teacher.workdir, which=config.teacher.which, ema=config.teacher.ema
    )
    with config.unlocked():
        config.teacher.model = teacher_config.model
    # Restored on one local device; via host memory to every device of the mesh.
    return build_model(teacher_config.model), parallel.replicate(jax.device_get(teacher_params), mesh)


class _PreemptionFlag:
    """Set by SIGTERM while training, so the loop saves a checkpoint before exiting.

    A context manager: the previous SIGTERM handler is restored afterwards.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM received: saving a checkpoint and stopping.")
        self.requested = True

    def should_stop(self, step: int, every: int) -> bool:
        """Whether to stop after ``step``; with several hosts, agreed every ``every`` steps.

        All processes must agree, or the ones that stop would leave the others
        waiting in a collective; agreeing costs a cross-host round trip, hence
        not at every step.
        """
        if jax.process_count() == 1:
            return self.requested
        if step % every:
            return False
        flags = multihost_utils.process_allgather(np.asarray(self.requested))
        return bool(np.any(flags))


# The last teacher-labelled pool, reused by the next run with the same data, teacher and
# feature taps: a suite distilling several students computes it once.
_TEACHER_POOL_CACHE: dict[str, list[dict[str, Any]]] = {}


def _training_pool(
    config: ml_collections.ConfigDict, teacher, teacher_params, mesh: jax.sharding.Mesh
) -> list[dict[str, Any]]:
    """The first ``config.pool_batches`` batches of the training stream, labelled by the teacher.

    With a teacher, each batch gains ``teacher_output`` and the ``teacher_features``
    that ``config.loss.feature_pairs`` names (stored as float16 to halve their memory),
    even when their weight is 0, so that variants with and without feature KD share a pool.
    """
    feature_names = (
        sorted({name for _, name in train_state_lib.parse_feature_pairs(config.loss.feature_pairs)})
        if teacher is not None
        else []
    )
    key = json.dumps(
        [config.data.to_dict(), config.batch_size, config.seed, config.pool_batches,
         config.teacher.to_dict(), feature_names],
        sort_keys=True, default=str,
    )
    if teacher is not None and key in _TEACHER_POOL_CACHE:
        logging.info("Reusing the teacher-labelled pool of %d batches.", config.pool_batches)
        return _TEACHER_POOL_CACHE[key]

    def label(params, images):
        output, features = teacher.apply(
            {"params": params}, to_unit_float(images), train=False, return_features=True
        )
        return output, {name: features[name].astype(jnp.float16) for name in feature_names}

    label = jax.jit(label)
    stream = iter(data.make_train_dataset(config.data, global_batch_size=config.batch_size, seed=config.seed))
    pool = []
    start = time.perf_counter()
    for index in range(config.pool_batches):
        local = next(stream)
        if teacher is not None:
            images = parallel.shard_batch({"input": local["input"]}, mesh)["input"]
            output, features = jax.tree.map(_local_rows, label(teacher_params, images))
            local = {**local, "teacher_output": output, "teacher_features": features}
            if (index + 1) % 16 == 0:
                logging.info(
                    "Teacher labelled %d/%d pool batches (%.1f s per batch).",
                    index + 1, config.pool_batches, (time.perf_counter() - start) / (index + 1),
                )
        pool.append(local)
    stream.close()
    if teacher is not None:
        _TEACHER_POOL_CACHE.clear()
        _TEACHER_POOL_CACHE[key] = pool
    return pool


def _local_rows(array: jax.Array) -> np.ndarray:
    """This host's rows of a batch-sharded array."""
    return np.concatenate([np.asarray(shard.data) for shard in array.addressable_shards], axis=0)


def _format_eta(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    devices: list[jax.Device] | None = None,
    batch_hook: Callable[[int, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Trains ``config.model`` (distilling from ``config.teacher`` when set) in ``workdir``.

    Resumes from the latest checkpoint in ``workdir`` if there is one. Returns
    the final evaluation (also written to ``workdir/eval_results.json``).

    Args:
      config: a run config (see ``kdjax.config.base_config``).
      workdir: where checkpoints, ``config.json``, TensorBoard events and grids go.
      devices: the devices of the data-parallel mesh (default: all).
      batch_hook: test hook ``(step, local_batch) -> local_batch`` applied to
        every batch before it is sharded.
    """
    config = ml_collections.ConfigDict(config.to_dict())  # never mutate the caller's config
    config_lib.validate(config)
    workdir = Path(workdir)
    mesh = parallel.make_mesh(devices)
    parallel.check_batch_size(config.batch_size, mesh)
    is_chief = jax.process_index() == 0

    teacher, teacher_params = load_teacher(config, mesh)
    model = build_model(config.model)
    adapters, _, _ = train_state_lib.build_adapters(config, model, teacher)
    tx = train_state_lib.make_optimizer(config)
    init_rng, train_rng = jax.random.split(jax.random.key(config.seed))

    replicated = parallel.replicated(mesh)
    state = jax.jit(
        lambda rng: train_state_lib.create_train_state(
            train_state_lib.init_params(config, model, rng, teacher), tx
        ),
        out_shardings=replicated,
    )(init_rng)
    train_rng = parallel.replicate(train_rng, mesh)

    if is_chief:
        checkpoints.save_config(workdir, config)
    train_data = data.make_train_dataset(
        config.data, global_batch_size=config.batch_size, seed=config.seed
    )
    data_iter = iter(train_data)
    manager = checkpoints.make_manager(workdir, config)
    start_step = manager.latest_step() or 0
    if start_step:
        state = checkpoints.restore(manager, state, data_iter, start_step)
        logging.info("Resumed from the checkpoint at step %d in %s.", start_step, workdir)

    # With a pool the step reads the teacher's labels from the batch instead of running it
    # (a finished run, resumed to be evaluated, needs no pool).
    pool = None
    if config.pool_batches and start_step < config.num_steps:
        pool = _training_pool(config, teacher, teacher_params, mesh)

    train_step = jax.jit(
        make_train_step(config, model, tx, None if pool else teacher, adapters),
        donate_argnums=(0,),
        out_shardings=(replicated, replicated),
    )

    writer = SummaryWriter(str(workdir / "tensorboard")) if is_chief else None
    evaluator = Evaluator(
        config,
        model,
        teacher=teacher,
        teacher_params=teacher_params,
        writer=writer,
        grid_dir=workdir / "grids" if is_chief else None,
    )

    def save_checkpoint(step: int, eval_results: dict[str, Any] | None) -> None:
        checkpoints.save(
            manager,
            state,
            data_iter,
            metrics=None if eval_results is None else {
                checkpoints.BEST_METRIC: eval_results["model"][checkpoints.BEST_METRIC]
            },
        )

    def check_finite(step_metrics: dict[str, jax.Array], at_step: int) -> None:
        if bool(step_metrics["finite"]):
            return
        manager.wait_until_finished()
        raise NonFiniteLossError(
            f"Training diverged at step {at_step}: the loss or a gradient is NaN or inf "
            f"(loss={float(step_metrics['loss'])}); the last good checkpoint "
            f"(step {manager.latest_step()}) in {workdir} is kept. Lower "
            "config.optim.learning_rate or check the data for corrupt images."
        )

    step = start_step
    last_results = None
    previous_metrics = None
    history: list[dict[str, jax.Array]] = []
    timer_start, timer_step = time.perf_counter(), step
    logging.info(
        "Training %s for %d steps on %d devices (batch %d), workdir %s.",
        config.model.name, config.num_steps, mesh.devices.size, config.batch_size, workdir,
    )
    with _PreemptionFlag() as preemption:
        while step < config.num_steps:
            if pool is not None:
                local_batch = pool[step % len(pool)]
            else:
                local_batch = next(data_iter)
            if batch_hook is not None:
                local_batch = batch_hook(step, local_batch)
            batch = parallel.shard_batch(local_batch, mesh)
            state, step_metrics = train_step(state, batch, train_rng, teacher_params)
            step += 1
            # The previous step's flag is read once this step is dispatched, so the
            # guard never stalls the device pipeline; a bad step left the state as it was.
            if previous_metrics is not None:
                check_finite(previous_metrics, step - 1)
            previous_metrics = step_metrics
            history.append(step_metrics)

            is_last = step == config.num_steps
            stop = preemption.should_stop(step, config.log_every_steps)
            if step % config.log_every_steps == 0 or is_last:
                check_finite(step_metrics, step)
                means = {k: float(np.mean([float(m[k]) for m in history])) for k in history[0] if k != "finite"}
                history.clear()
                elapsed = time.perf_counter() - timer_start
                steps_per_sec = (step - timer_step) / max(elapsed, 1e-9)
                timer_start, timer_step = time.perf_counter(), step
                eta = (config.num_steps - step) / max(steps_per_sec, 1e-9)
                logging.info(
                    "step %d/%d | loss %.5f | %.2f steps/s | %.1f images/s | ETA %s",
                    step, config.num_steps, means["loss"], steps_per_sec,
                    steps_per_sec * config.batch_size, _format_eta(eta),
                )
                if writer is not None:
                    for key, value in means.items():
                        writer.add_scalar(f"train/{key}", value, step)
                    writer.add_scalar("train/steps_per_sec", steps_per_sec, step)
            eval_results = None
            if step % config.eval.every_steps == 0 or is_last:
                check_finite(step_metrics, step)
                eval_results = last_results = evaluator(step, state.ema_params["model"])
            if step % config.checkpoint.every_steps == 0 or is_last or stop:
                check_finite(step_metrics, step)
                save_checkpoint(step, eval_results)
            if stop:
                logging.warning("Stopped at step %d after SIGTERM; the run resumes from here.", step)
                break

    manager.wait_until_finished()
    manager.close()
    data_iter.close()
    if writer is not None:
        writer.close()
    if last_results is None:
        last_results = evaluator(step, state.ema_params["model"])
    report = {"step": step, "results": last_results}
    if is_chief:
        (workdir / "eval_results.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
