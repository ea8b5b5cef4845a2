"""Orbax checkpoints of a training workdir, and loading trained parameters back.

A workdir holds ``config.json`` (the full run config) and ``checkpoints/<step>/``
with two items: ``state`` (the ``TrainState``) and ``data_iter`` (the Grain
iterator, so a resumed run sees exactly the batches it would have seen).
Which steps are kept is an Orbax ``preservation_policy``: the latest few plus
the best by validation PSNR. ``export_params`` writes one checkpoint's model
parameters as a small self-contained folder (how ``pretrained/`` is made).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization
from orbax.checkpoint import checkpoint_managers

from kdjax import train_state as train_state_lib
from kdjax.models import build_model
from kdjax.models.summary import abstract_params, count_params

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.msgpack"
EXPORT_FILE = "export.json"
CHECKPOINT_DIR = "checkpoints"
BEST_METRIC = "psnr_y"


def save_config(workdir: str | Path, config: ml_collections.ConfigDict) -> None:
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def load_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a workdir was trained with, as written by ``save_config``."""
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: {workdir} is not a kdjax training workdir; pass the "
            "--workdir of a finished `launch.py --mode=train` run or an exported model "
            "folder such as pretrained/realtime_kd_x2."
        )
    return ml_collections.ConfigDict(json.loads(path.read_text()))


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
            "state": ocp.StandardCheckpointHandler(),
            "data_iter": grain.checkpoint.CheckpointHandler(),
        },
        options=options,
    )


def save(
    manager: ocp.CheckpointManager,
    state: train_state_lib.TrainState,
    data_iter: Any,
    metrics: dict[str, float] | None = None,
) -> None:
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


def restore(
    manager: ocp.CheckpointManager,
    abstract_state: train_state_lib.TrainState,
    data_iter: Any,
    step: int,
) -> train_state_lib.TrainState:
    """Restores the train state (with the shardings of ``abstract_state``) and the iterator."""
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data_iter=grain.checkpoint.CheckpointRestore(data_iter),
        ),
    )
    return restored.state


def abstract_train_state(
    config: ml_collections.ConfigDict, sharding: jax.sharding.Sharding
) -> train_state_lib.TrainState:
    """Shapes, dtypes and target sharding of a run's train state, computed without FLOPs."""
    model = build_model(config.model)
    teacher = build_model(config.teacher.model) if config.teacher.get("model") else None
    tx = train_state_lib.make_optimizer(config)

    def init():
        params = train_state_lib.init_params(config, model, jax.random.key(0), teacher)
        return train_state_lib.create_train_state(params, tx)

    shapes = jax.eval_shape(init)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes
    )


def _checkpoint_step(manager: ocp.CheckpointManager, workdir: str | Path, which: str) -> int:
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
            f"`python launch.py --mode=train --workdir={workdir} --config=...` or point "
            "to a workdir that has finished at least one checkpoint."
        )
    return step


def _restore_checkpoint(workdir: str | Path, which: str, ema: bool) -> tuple[ml_collections.ConfigDict, Any, int]:
    if which not in ("best", "latest"):
        raise ValueError(f"which={which!r} is not understood; use 'best' or 'latest'.")
    config = load_config(workdir)
    manager = make_manager(workdir, read_only=True)
    step = _checkpoint_step(manager, workdir, which)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract_state = abstract_train_state(config, device)
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
    ).state
    manager.close()
    params = restored.ema_params if _uses_ema(config, ema) else restored.params
    return config, params["model"], step


def _uses_ema(config: ml_collections.ConfigDict, ema: bool) -> bool:
    """Whether ``ema=True`` can be honoured: the run kept an EMA of its parameters."""
    return ema and config.ema_decay > 0


def _load_exported(path: Path) -> tuple[ml_collections.ConfigDict, Any]:
    config = load_config(path)
    expected = abstract_params(build_model(config.model))
    try:
        params = serialization.from_bytes(expected, (path / PARAMS_FILE).read_bytes())
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"{path / PARAMS_FILE} does not hold parameters of the {config.model.name} model that "
            f"{path / CONFIG_FILE} describes ({error}); re-export it with `launch.py --mode=export`."
        ) from error
    mismatched = [
        jax.tree_util.keystr(key)
        for (key, want), got in zip(jax.tree_util.tree_flatten_with_path(expected)[0], jax.tree.leaves(params))
        if want.shape != np.shape(got)
    ]
    if mismatched:
        raise ValueError(
            f"{path / PARAMS_FILE} has parameters of the wrong shape for {config.model.name} "
            f"({', '.join(mismatched[:3])}); re-export it with `launch.py --mode=export`."
        )
    return config, params


def restore_params(
    workdir: str | Path, *, which: str = "best", ema: bool = True
) -> tuple[ml_collections.ConfigDict, Any]:
    """Loads a trained model's config and parameters from a workdir or an exported folder.

    Args:
      workdir: a directory written by ``launch.py --mode=train``, or one written by
        ``export_params`` (``config.json`` + ``params.msgpack``, e.g. under ``pretrained/``).
      which: ``"best"`` (highest validation PSNR on Y) or ``"latest"``; an exported
        folder holds one set of parameters, chosen when it was exported.
      ema: return the exponential moving average of the parameters (what the
        run evaluated when ``ema_decay > 0``) instead of the raw ones; chosen at
        export time for an exported folder.

    Returns:
      ``(config, params)``; ``config.model`` builds the model via ``build_model``.
    """
    path = Path(workdir)
    if (path / PARAMS_FILE).is_file():
        return _load_exported(path)
    config, params, _ = _restore_checkpoint(workdir, which, ema)
    return config, params


def export_params(
    workdir: str | Path, output_dir: str | Path, *, which: str = "latest", ema: bool = True
) -> Path:
    """Writes one checkpoint's model parameters as a self-contained folder.

    The folder holds ``config.json`` (the run's config), ``params.msgpack`` (the
    model's parameters, ``flax.serialization.to_bytes`` of the parameter tree,
    float32) and ``export.json`` (where they came from). ``restore_params``,
    ``kdjax.load`` and ``launch.py --mode=evaluate|sharpen`` read it like a workdir,
    and distillation can name it as ``config.teacher.workdir``.
    """
    output = Path(output_dir)
    if output.resolve() == Path(workdir).resolve():
        raise ValueError(f"--output={output} is the workdir itself; export to a new folder.")
    if output.exists() and any(output.iterdir()) and not (output / PARAMS_FILE).is_file():
        raise ValueError(f"{output} exists and is not an exported model; choose an empty or new folder.")
    config, params, step = _restore_checkpoint(workdir, which, ema)
    save_config(output, config)
    (output / PARAMS_FILE).write_bytes(serialization.to_bytes(jax.device_get(params)))
    provenance = {
        "workdir": str(workdir),
        "checkpoint": which,
        "step": step,
        "ema": _uses_ema(config, ema),
        "model": config.model.name,
        "params": count_params(params),
    }
    (output / EXPORT_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return output
