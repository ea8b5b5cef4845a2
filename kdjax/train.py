"""Training and distillation: the compiled step and the loop around it.

``make_train_step`` builds the pure update ``(state, batch, rng, teacher_params)
-> (state, metrics)``; with a teacher it is a distillation step in which only the
student (and its feature adapters) receive gradients and the frozen teacher's
forward pass runs inside the same compiled function (what distillation adds is in
``kdjax.distill``). ``train_and_evaluate`` runs it over a data-parallel mesh with
checkpointing, evaluation, logging, a NaN guard and preemption handling, and refuses
workdirs it would damage (a model folder, a workdir started with another config).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import traverse_util
from jax.experimental import multihost_utils
from tensorboardX import SummaryWriter

from kdjax import checkpoints, data, distill, losses, parallel, weights
from kdjax import config as config_lib
from kdjax import train_state as train_state_lib
from kdjax.errors import NonFiniteLossError
from kdjax.evaluation import Evaluator
from kdjax.images import to_unit_float
from kdjax.models import build_model
from kdjax.train_state import TrainState

Batch = Mapping[str, jax.Array]


def _tree_all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def make_train_step(
    config: ml_collections.ConfigDict,
    model,
    tx: optax.GradientTransformation,
    teacher_model=None,
    adapters: distill.FeatureAdapters | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Builds the pure train step ``(state, batch, rng, teacher_params=None) -> (state, metrics)``.

    ``batch`` holds ``input`` and ``target`` images (uint8 or float in [0, 1])
    and, when the teacher labelled a training pool, ``teacher_output`` (float
    in [0, 1]) and ``teacher_features`` (name -> map); the step then takes no
    teacher model (``teacher_model=None``). With ``loss.aux_kd_weight`` it also holds
    ``aux_input`` / ``aux_teacher_output`` (zoomed views, labelled only by the teacher). The
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

        teacher_output, teacher_features = distill.teacher_targets(
            teacher_model, teacher_params, inputs, batch, use_features
        )
        aux_inputs = to_unit_float(batch["aux_input"]) if loss_cfg.aux_kd_weight else None
        aux_teacher_output = to_unit_float(batch["aux_teacher_output"]) if loss_cfg.aux_kd_weight else None

        def loss_fn(params):
            out = model.apply(
                {"params": params["model"]},
                inputs,
                train=True,
                return_features=use_features,
                rngs={"dropout": rng},
            )
            prediction, features = out if use_features else (out, None)
            aux_prediction = None
            if loss_cfg.aux_kd_weight:
                aux_prediction = model.apply(
                    {"params": params["model"]}, aux_inputs, train=True, rngs={"dropout": jax.random.fold_in(rng, 1)}
                )
            terms = {
                "pixel": (
                    loss_cfg.pixel_weight,
                    losses.pixel_loss(prediction, target, loss_cfg.pixel, loss_cfg.charbonnier_eps),
                )
            }
            if loss_cfg.ssim_weight:
                terms["ssim"] = (loss_cfg.ssim_weight, losses.ssim_loss(prediction, target))
            terms.update(
                distill.kd_loss_terms(
                    loss_cfg, prediction, features, teacher_output, teacher_features, adapters, params["adapters"],
                    aux_prediction, aux_teacher_output,
                )
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


def check_workdir(workdir: Path, config: ml_collections.ConfigDict, *, allow_config_change: bool = False) -> None:
    """Refuses a workdir that training would damage, before anything is written.

    A model folder (a released or exported model) is never trained into, and a workdir
    started with another config is not resumed unless ``allow_config_change``: its
    checkpoints would not fit the new model, or would silently continue another experiment.
    """
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir={workdir} is a file; pass a folder (new or of an earlier run).")
    if weights.is_model_folder(workdir):
        raise ValueError(
            f"--workdir={workdir} is an exported model folder; train into a new --workdir "
            f"(use --config.teacher.workdir={workdir} to distil from it)."
        )
    if not (workdir / weights.CONFIG_FILE).is_file() or allow_config_change:
        return
    previous = traverse_util.flatten_dict(weights.load_config(workdir).to_dict(), sep=".")
    current = traverse_util.flatten_dict(config.to_dict(), sep=".")
    # A key kdjax gained after the run started changes nothing while it keeps its default.
    defaults = traverse_util.flatten_dict(config_lib.base_config().to_dict(), sep=".")

    def encoded(value):
        return json.dumps(value, default=str)

    differing = sorted(
        key for key in previous.keys() | current.keys()
        # The teacher's model config is filled in from the teacher's folder when the run starts.
        if not key.startswith("teacher.model")
        and encoded(previous.get(key)) != encoded(current.get(key))
        and not (key not in previous and key in defaults and encoded(current[key]) == encoded(defaults[key]))
    )
    if differing:
        raise ValueError(
            f"--workdir={workdir} was started with another config ({', '.join(differing[:5])}"
            f"{', ...' if len(differing) > 5 else ''} differ); use a new --workdir, or pass "
            "--allow_config_change to resume it with the new config."
        )


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
    label_cache: distill.TeacherLabelCache | None = None,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Trains ``config.model`` (distilling from ``config.teacher`` when set) in ``workdir``.

    Resumes from the newest intact checkpoint in ``workdir`` if there is one. Returns
    the final evaluation (also written to ``workdir/eval_results.json``).

    Args:
      config: a run config (see ``kdjax.config.base_config``).
      workdir: where checkpoints, ``config.json``, TensorBoard events and grids go.
      devices: the devices of the data-parallel mesh (default: all).
      batch_hook: test hook ``(step, local_batch) -> local_batch`` applied to
        every batch before it is sharded.
      label_cache: where a teacher-labelled pool is kept for the next run (a suite passes
        one to all its runs); default: a new one.
      allow_config_change: resume a workdir whose ``config.json`` differs from ``config``
        (the new config replaces it); otherwise such a workdir is refused, naming the keys.
    """
    config = ml_collections.ConfigDict(config.to_dict())  # never mutate the caller's config
    config_lib.validate(config)
    workdir = Path(workdir)
    mesh = parallel.make_mesh(devices)
    parallel.check_batch_size(config.batch_size, mesh)
    is_chief = jax.process_index() == 0

    check_workdir(workdir, config, allow_config_change=allow_config_change)

    teacher = distill.load_teacher(config, mesh)
    teacher_params = None if teacher is None else teacher.params
    model = build_model(config.model)
    adapters = distill.build_adapters(config, model, None if teacher is None else teacher.model)
    tx = train_state_lib.make_optimizer(config)
    init_rng, train_rng = jax.random.split(jax.random.key(config.seed))

    replicated = parallel.replicated(mesh)
    params = jax.jit(lambda rng: train_state_lib.init_params(config, model, rng, adapters))(init_rng)
    params = train_state_lib.fine_tuning_start(config, params)
    state = jax.jit(lambda p: train_state_lib.create_train_state(p, tx), out_shardings=replicated)(params)
    train_rng = parallel.replicate(train_rng, mesh)

    if is_chief:
        weights.save_config(workdir, config)
    logging.info("Run config:\n%s", config.to_json_best_effort(indent=2, sort_keys=True))
    teacher_labels = None
    if distill.uses_label_cache(config):
        degraded_images = data.write_degraded_images(config.data)
        teacher_labels = distill.label_degraded_images(degraded_images, teacher)
        if config.loss.aux_kd_weight:
            distill.label_zoom_views(degraded_images, teacher_labels, teacher)
    train_data = data.make_train_dataset(
        config.data, global_batch_size=config.batch_size, seed=config.seed, teacher_labels=teacher_labels,
        zoom_views=config.loss.aux_kd_weight > 0,
    )
    data_iter = iter(train_data)
    manager = checkpoints.make_manager(workdir, config)
    # The newest intact checkpoint: a damaged one is skipped with a warning and moved aside.
    state, start_step = checkpoints.restore_latest(manager, state, data_iter, workdir)
    if start_step:
        logging.info("Resumed from the checkpoint at step %d in %s.", start_step, workdir)

    # With a pool or the per-image label cache the step reads the teacher's labels from the
    # batch instead of running it (a finished run, resumed to be evaluated, needs no pool).
    pool = None
    if config.pool_batches and start_step < config.num_steps:
        pool = (label_cache or distill.TeacherLabelCache()).pool(config, teacher, mesh)

    train_step = jax.jit(
        make_train_step(
            config,
            model,
            tx,
            None if pool or teacher_labels or teacher is None else teacher.model,
            None if adapters is None else adapters.adapters,
        ),
        donate_argnums=(0,),
        out_shardings=(replicated, replicated),
    )

    writer = SummaryWriter(str(workdir / "tensorboard")) if is_chief else None
    evaluator = Evaluator(
        config,
        model,
        teacher=teacher,
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
        last_good = manager.latest_step()
        kept = (
            f"the last good checkpoint (step {last_good}) in {workdir} is kept"
            if last_good is not None
            else "no checkpoint had been saved yet"
        )
        raise NonFiniteLossError(
            f"Training diverged at step {at_step}: the loss or a gradient is NaN or inf "
            f"(loss={float(step_metrics['loss'])}) and {kept}; lower "
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
