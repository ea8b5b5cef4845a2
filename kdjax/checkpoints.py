"""Orbax checkpoints of a training workdir: the train state and the Grain iterator beside it.

A workdir's ``checkpoints/<step>/`` holds two items: ``state`` (the ``TrainState``) and
``data_iter`` (the Grain iterator, so a resumed run sees exactly the batches it would have
seen). Which steps are kept is an Orbax ``preservation_policy``: the latest few plus the best
by validation PSNR. Reading only a model's parameters back, for evaluation, serving or a
teacher, is ``read_params`` (used by ``kdjax.weights``): it restores one subtree of the state
and needs neither the optimizer nor the data pipeline. Resuming is ``restore_latest``.

Both read through one place, ``_restore_first_intact``: candidate steps are tried in order
(newest first, or best first for "best") and a damaged checkpoint (a missing index file, or a
TensorStore read failure: missing or truncated data) is skipped with a warning naming it, so
a run or a model is never lost to one bad checkpoint. Only when every checkpoint is damaged is
it an error (``DamagedCheckpointError``, one sentence).

This module knows the layout, never the training code: it imports no model, optimizer or
train-state module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

CHECKPOINT_DIR = "checkpoints"
BEST_METRIC = "psnr_y"
STATE_ITEM = "state"
# Where resuming moves damaged checkpoints newer than the one it restored (beside CHECKPOINT_DIR,
# so Orbax never lists them as steps).
DAMAGED_DIR = "checkpoints_damaged"
# What Orbax's PyTree handler (with OCDBT, its default) writes into every ``state`` item: the
# tree structure and the index of the array data. Without either, no array can be found.
_STATE_INDEX_FILES = ("_METADATA", "manifest.ocdbt")
# TensorStore reports a failed read as a ValueError starting with an absl status code.
_TENSORSTORE_STATUS = re.compile(r"([A-Z][A-Z_]{3,}): ")

T = TypeVar("T")


class DamagedCheckpointError(ValueError):
    """Every checkpoint of a workdir is damaged; the message names them and why."""


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
            STATE_ITEM: ocp.PyTreeCheckpointHandler() if read_only else ocp.StandardCheckpointHandler(),
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


def restore_latest(
    manager: ocp.CheckpointManager, target_state: Any, data_iter: Any, workdir: str | Path
) -> tuple[Any, int]:
    """Restores the train state and the iterator of the newest intact checkpoint, to resume a run.

    Damaged checkpoints newer than it are moved to ``workdir/checkpoints_damaged/`` (kept, never
    deleted), so the resumed run can save those steps again.

    Returns:
      ``(state, step)``: the restored state (with the shapes and shardings of ``target_state``),
      or ``(target_state, 0)`` when the workdir has no checkpoint yet.

    Raises:
      DamagedCheckpointError: every checkpoint is damaged.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return target_state, 0
    restored, step = _restore_first_intact(
        manager,
        workdir,
        steps,
        lambda step: manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target_state),
                data_iter=grain.checkpoint.CheckpointRestore(data_iter),
            ),
        ).state,
    )
    damaged = [s for s in steps if s > step]
    if damaged and jax.process_index() == 0:
        aside = Path(workdir) / DAMAGED_DIR
        aside.mkdir(parents=True, exist_ok=True)
        for bad in damaged:
            target = aside / str(bad)
            suffix = 0
            while target.exists():  # damaged twice at the same step: keep both
                suffix += 1
                target = aside / f"{bad}.{suffix}"
            (Path(manager.directory) / str(bad)).rename(target)
            logging.warning("Moved the damaged checkpoint step %d to %s.", bad, target)
    if damaged:
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("kdjax_damaged_checkpoints_moved")
        manager.reload()
    return restored, step


def candidate_steps(manager: ocp.CheckpointManager, workdir: str | Path, which: str) -> list[int]:
    """The checkpoint steps of ``workdir`` in the order ``which`` ("best" or "latest") wants them.

    "latest": newest first. "best": evaluated checkpoints by validation PSNR, best first, then
    the unevaluated ones newest first (a run stopped before its first evaluation has only those).
    The first intact one is used (``read_params``), so a damaged checkpoint falls back to the next.
    ``which`` is checked by the caller (``kdjax.weights.check_which``).
    """
    newest_first = sorted(manager.all_steps(), reverse=True)
    if not newest_first:
        raise FileNotFoundError(
            f"No checkpoint found in {Path(workdir) / CHECKPOINT_DIR}; train first with "
            f"`kdjax train --workdir={workdir} --config=...` or point to a workdir that has "
            "finished at least one checkpoint."
        )
    if which == "latest":
        return newest_first
    scores = {step: metrics[BEST_METRIC] for step in newest_first if (metrics := manager.metrics(step))}
    if not scores:
        # No checkpoint was saved with validation metrics (e.g. the run stopped before its
        # first evaluation): the latest is the best we know.
        logging.warning("No evaluated checkpoint in %s; using the latest, step %d.", workdir, newest_first[0])
    # A stable sort of the newest-first list: among equal scores the newer step comes first.
    evaluated = sorted(scores, key=lambda step: -scores[step])
    return evaluated + [step for step in newest_first if step not in scores]


def read_params(workdir: str | Path, which: str, key: str, abstract_params: Any) -> tuple[Any, int]:
    """Restores only ``state[key]["model"]`` (e.g. the EMA parameters) of a checkpoint.

    Args:
      workdir: a training workdir.
      which: "best" or "latest"; a damaged checkpoint falls back to the next candidate (see
        ``candidate_steps``), with a warning naming it.
      key: the field of the train state holding the parameters ("params" or "ema_params").
      abstract_params: shapes and dtypes of the model's parameters (the restore target).

    Returns:
      ``(params, step)``, the parameters on this host's first device.

    Raises:
      DamagedCheckpointError: every checkpoint is damaged.
    """
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {key: {"model": jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), abstract_params
    )}}
    manager = make_manager(workdir, read_only=True)
    try:
        restored, step = _restore_first_intact(
            manager,
            workdir,
            candidate_steps(manager, workdir, which),
            lambda step: manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.PyTreeRestore(
                        item=target,
                        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                        partial_restore=True,
                    )
                ),
            ).state,
        )
    finally:
        manager.close()
    return restored[key]["model"], step


def _restore_first_intact(
    manager: ocp.CheckpointManager, workdir: str | Path, steps: list[int], restore: Callable[[int], T]
) -> tuple[T, int]:
    """``(restore(step), step)`` for the first of ``steps`` that is not damaged.

    Each damaged step skipped gets one warning naming it and the step used instead.
    """
    damaged: list[tuple[int, str]] = []
    for step in steps:
        reason = _missing_index_file(manager, step)
        if reason is None:
            try:
                restored = restore(step)
            # Orbax re-raises TensorStore read failures as a plain Exception (and TensorStore
            # raises ValueError): only those whose cause is a TensorStore status are damage.
            except Exception as error:  # pylint: disable=broad-except
                reason = _tensorstore_failure(error)
                if reason is None:
                    raise
            else:
                for bad, why in damaged:
                    logging.warning(
                        "checkpoint step %d in %s is damaged (%s); using step %d.",
                        bad, Path(workdir) / CHECKPOINT_DIR, why, step,
                    )
                return restored, step
        damaged.append((step, reason))
    listed = ", ".join(f"step {step} ({why})" for step, why in damaged)
    raise DamagedCheckpointError(
        f"No intact checkpoint in {Path(workdir) / CHECKPOINT_DIR}: {listed}; restore the checkpoints "
        "from a backup, or move them away and train again."
    )


def _missing_index_file(manager: ocp.CheckpointManager, step: int) -> str | None:
    """Why the step's ``state`` cannot be found without reading it (a missing index file), if so."""
    state = Path(manager.directory) / str(step) / STATE_ITEM
    for name in _STATE_INDEX_FILES:
        if not (state / name).is_file():
            return f"{STATE_ITEM}/{name} is missing"
    return None


def _tensorstore_failure(error: BaseException) -> str | None:
    """``"<STATUS> reading <array>"`` when a TensorStore read failure caused ``error``, else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        match = _TENSORSTORE_STATUS.match(str(error))
        if isinstance(error, ValueError) and match:
            array = re.search(r'"([^"]+?)(/\.zarray|/[0-9.]+)?" in OCDBT', str(error))
            return f"{match.group(1)} reading {array.group(1)}" if array else f"{match.group(1)} reading its arrays"
        error = error.__cause__ or error.__context__
    return None
