"""Orbax checkpoints of a training workdir: the train state and the Grain iterator beside it.

A workdir's ``checkpoints/<step>/`` holds two items: ``state`` (the ``TrainState``) and
``data_iter`` (the Grain iterator, so a resumed run sees exactly the batches it would have
seen). Which steps are kept is an Orbax ``preservation_policy``: the latest few plus the best
by validation PSNR. Reading only a model's parameters back, for evaluation, serving or a
teacher, is ``read_params`` (used by ``kdjax.weights``): it restores one subtree of the state
and needs neither the optimizer nor the data pipeline.

This module knows the layout, never the training code: it imports no model, optimizer or
train-state module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers

CHECKPOINT_DIR = "checkpoints"
BEST_METRIC = "psnr_y"
WHICH = ("best", "latest")


def make_manager(
    workdir: str | Path, config: ml_collections.ConfigDict | None = None, *, read_only: bool = False
) -> ocp.CheckpointManager:
    """A manager for ``workdir/checkpoints`` that keeps the latest N and the best M."""
    ckpt = config.checkpoint if config is not None else None
    policies = []
    if ckpt is not None:
        policies = [
            checkpoint_managers.LatestN(n=ckpt.keep_latest),
            checkpoint_managers.BestN(
                get_metric_fn=lambda metrics: metrics[BEST_METRIC],
                reverse=False,
                n=ckpt.keep_best,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    options = ocp.CheckpointManagerOptions(
        read_only=read_only,
        # best_fn makes Orbax record the metrics and answer best_step(); which
        # steps survive is decided by the preservation policy alone.
        best_fn=lambda metrics: metrics[BEST_METRIC],
        best_mode="max",
        preservation_policy=(
            checkpoint_managers.AnyPreservationPolicy(policies) if policies else None
        ),
        enable_async_checkpointing=bool(ckpt.async_save) if ckpt is not None else False,
        create=not read_only,
    )
    return ocp.CheckpointManager(
        Path(workdir).resolve() / CHECKPOINT_DIR,
        item_handlers={
            # The PyTree handler reads what StandardSave wrote and can restore a subtree.
            "state": ocp.PyTreeCheckpointHandler() if read_only else ocp.StandardCheckpointHandler(),
            "data_iter": grain.checkpoint.CheckpointHandler(),
        },
        options=options,
    )


def save(manager: ocp.CheckpointManager, state: Any, data_iter: Any, metrics: dict[str, float] | None = None) -> None:
    """Saves the train state and the data iterator at ``state.step`` (async when configured)."""
    step = int(jax.device_get(state.step))
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data_iter=grain.checkpoint.CheckpointSave(data_iter),
        ),
        metrics=metrics,
        force=True,
    )


def restore(manager: ocp.CheckpointManager, target_state: Any, data_iter: Any, step: int) -> Any:
    """Restores the train state (with the shapes and shardings of ``target_state``) and the iterator."""
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target_state),
            data_iter=grain.checkpoint.CheckpointRestore(data_iter),
        ),
    )
    return restored.state


def select_step(manager: ocp.CheckpointManager, workdir: str | Path, which: str) -> int:
    """The step of the ``which`` ("best" or "latest") checkpoint of ``workdir``."""
    if which not in WHICH:
        raise ValueError(f"which={which!r} is not understood; use 'best' or 'latest'.")
    step = manager.best_step() if which == "best" else None
    if step is None:
        step = manager.latest_step()
        if which == "best" and step is not None:
            # No checkpoint was saved with validation metrics (e.g. the run stopped
            # before its first evaluation): the latest is the best we know.
            logging.warning("No evaluated checkpoint in %s; using the latest, step %d.", workdir, step)
    if step is None:
        raise FileNotFoundError(
            f"No checkpoint found in {Path(workdir) / CHECKPOINT_DIR}; train first with "
            f"`kdjax train --workdir={workdir} --config=...` or point to a workdir that has "
            "finished at least one checkpoint."
        )
    return step


def read_params(workdir: str | Path, which: str, key: str, abstract_params: Any) -> tuple[Any, int]:
    """Restores only ``state[key]["model"]`` (e.g. the EMA parameters) of a checkpoint.

    Args:
      workdir: a training workdir.
      which: "best" or "latest".
      key: the field of the train state holding the parameters ("params" or "ema_params").
      abstract_params: shapes and dtypes of the model's parameters (the restore target).

    Returns:
      ``(params, step)``, the parameters on this host's first device.
    """
    manager = make_manager(workdir, read_only=True)
    try:
        step = select_step(manager, workdir, which)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = {key: {"model": jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), abstract_params
        )}}
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=target,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                    partial_restore=True,
                )
            ),
        ).state
    finally:
        manager.close()
    return restored[key]["model"], step
