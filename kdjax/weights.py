"""Trained models on disk: the model-folder format, reading parameters back, exporting, and
the released models by name.

A *model folder* holds ``config.json`` (the run config; ``config.model`` rebuilds the module),
``params.msgpack`` (``flax.serialization.to_bytes`` of the float32 parameter tree) and
``export.json`` (where the parameters came from). ``restore_params`` reads parameters from
any of:

* a released model's name (``"rep_kd_sharpen_x2"``) or alias (``"sharpen_x2"``, see
  ``kdjax.catalog``): the folders under ``pretrained/``, shipped inside the package as
  ``kdjax.pretrained``;
* a model folder (``export_params`` writes one from a training workdir, in the model's
  inference form: a re-parameterisable student's branches folded into plain convolutions);
* a training workdir (``config.json`` + Orbax ``checkpoints/``): only the model's parameters
  are restored (``kdjax.checkpoints.read_params``), no optimizer, adapters or teacher.

Serving, evaluation and distillation (the teacher) all read models through this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import serialization

from kdjax import catalog, outputs
# The file names of a model folder, and the released models, are read without JAX by kdjax.catalog.
from kdjax.catalog import CONFIG_FILE, EXPORT_FILE, PARAMS_FILE, released_models
from kdjax.models import build_model, count_params, inference_form
from kdjax.models.summary import abstract_params

WHICH = ("best", "latest")


def check_which(which: str) -> None:
    """One sentence for a checkpoint choice other than "best" or "latest"."""
    if which not in WHICH:
        raise ValueError(f"which={which!r} is not understood; use one of {', '.join(WHICH)}.")


def _checkpoints():
    """``kdjax.checkpoints``, imported when a training workdir is read: Orbax and Grain add
    33 MiB of resident memory and a slower start to processes that only read model folders."""
    from kdjax import checkpoints  # pylint: disable=import-outside-toplevel

    return checkpoints


def save_config(folder: str | Path, config: ml_collections.ConfigDict) -> None:
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def load_config(folder: str | Path) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (or a model folder was exported with)."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: {folder} is not a kdjax training workdir or model folder; pass "
            "the --workdir of a `kdjax train` run, an exported model folder, or a released model "
            f"name ({', '.join(released_models()) or 'none installed'})."
        )
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); restore it from a backup or re-export the model.") from None
    if not isinstance(values, dict) or not isinstance(values.get("model"), dict) or "name" not in values["model"]:
        raise ValueError(
            f"{path} holds no model config (a 'model' entry with a 'name'); restore it from a backup or "
            "re-export the model."
        )
    return ml_collections.ConfigDict(values)


def is_model_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is an exported model folder (as opposed to a training workdir)."""
    return (Path(folder) / PARAMS_FILE).is_file()


def resolve(source: str | Path) -> Path:
    """The folder of a model: ``source`` itself when it exists, else a released model by name or alias."""
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} is a file; pass a training workdir, a model folder or a released model name.")
        return path
    released = released_models()
    name = catalog.canonical_name(str(source))
    if name in released:
        return released[name]
    raise FileNotFoundError(
        f"{source} is neither a folder nor a released model; pass a training workdir, a model folder, "
        f"or one of: {', '.join([*catalog.aliases(), *released]) or 'none installed'} (see kdjax models)."
    )


def _uses_ema(config: ml_collections.ConfigDict, ema: bool) -> bool:
    """Whether ``ema=True`` can be honoured: the run kept an EMA of its parameters."""
    return ema and config.get("ema_decay", 0) > 0


def _read_model_folder(path: Path, config: ml_collections.ConfigDict) -> Any:
    expected = abstract_params(build_model(config.model))
    try:
        params = serialization.from_bytes(expected, (path / PARAMS_FILE).read_bytes())
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"{path / PARAMS_FILE} does not hold parameters of the {config.model.name} model that "
            f"{path / CONFIG_FILE} describes ({error}); re-export it with `kdjax export`."
        ) from error
    mismatched = [
        jax.tree_util.keystr(key)
        for (key, want), got in zip(jax.tree_util.tree_flatten_with_path(expected)[0], jax.tree.leaves(params))
        if want.shape != np.shape(got)
    ]
    if mismatched:
        raise ValueError(
            f"{path / PARAMS_FILE} has parameters of the wrong shape for {config.model.name} "
            f"({', '.join(mismatched[:3])}); re-export it with `kdjax export`."
        )
    return params


def _read_checkpoint(path: Path, config: ml_collections.ConfigDict, which: str, ema: bool) -> tuple[Any, int]:
    key = "ema_params" if _uses_ema(config, ema) else "params"
    return _checkpoints().read_params(path, which, key, abstract_params(build_model(config.model)))


def restore_params(
    source: str | Path, *, which: str = "best", ema: bool = True
) -> tuple[ml_collections.ConfigDict, Any]:
    """A trained model's config and parameters (see the module docstring for ``source``).

    Args:
      source: a released model name, a model folder or a training workdir.
      which: ``"best"`` (highest validation PSNR on Y) or ``"latest"`` checkpoint of a
        workdir; a model folder holds one set of parameters, chosen when it was exported.
      ema: the exponential moving average of the parameters (what the run evaluated when
        ``ema_decay > 0``) instead of the raw ones; chosen at export time for a model folder.

    Returns:
      ``(config, params)``; ``build_model(config.model)`` is the module.
    """
    check_which(which)
    path = resolve(source)
    config = load_config(path)
    if is_model_folder(path):
        return config, _read_model_folder(path, config)
    params, _ = _read_checkpoint(path, config, which, ema)
    return config, params


def export_params(
    workdir: str | Path, output_dir: str | Path, *, which: str = "latest", ema: bool = True, overwrite: bool = False
) -> Path:
    """Writes one checkpoint's model parameters as a model folder (see the module docstring).

    ``restore_params``, ``kdjax.load`` and every ``kdjax`` command read it like a workdir,
    and distillation can name it as ``config.teacher.workdir``. The output follows
    `write_model_folder`; it may not be the workdir nor hold it.
    """
    check_which(which)
    output = outputs.check_output(output_dir, overwrite=overwrite, folder=True, inputs=[workdir])
    config = load_config(workdir)
    params, step = _read_checkpoint(Path(workdir), config, which, ema)
    # Exported in the form to deploy (a re-parameterisable student folded to plain convolutions).
    config.model, params = inference_form(config.model, params)
    provenance = {
        "workdir": str(workdir),
        "checkpoint": which,
        "step": step,
        "ema": _uses_ema(config, ema),
        "model": config.model.name,
        "params": count_params(params),
    }
    write_model_folder(output, config, params, provenance, overwrite=overwrite, inputs=[workdir])
    return output


def write_model_folder(
    output_dir: str | Path,
    config: ml_collections.ConfigDict,
    params: Any,
    provenance: dict[str, Any],
    *,
    overwrite: bool = False,
    inputs: tuple[str | Path, ...] | list[str | Path] = (),
) -> Path:
    """Writes ``config.json``, ``params.msgpack`` and ``export.json`` (``provenance``) as a folder.

    The folder is filled under a temporary name and renamed when complete
    (`kdjax.outputs.atomic_folder`). What `kdjax.outputs.check_output` refuses is refused: a
    released model's folder or a folder inside a model folder, an ``inputs`` path or a folder
    holding one, a file, a folder that is neither empty nor an exported model, and (without
    ``overwrite``) an earlier exported model, which ``overwrite`` replaces whole.
    """
    output = outputs.check_output(output_dir, overwrite=overwrite, folder=True, inputs=inputs)
    with outputs.atomic_folder(output) as folder:
        save_config(folder, config)
        (folder / PARAMS_FILE).write_bytes(serialization.to_bytes(jax.device_get(params)))
        (folder / EXPORT_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return output
