"""Importing published PyTorch checkpoints into kdjax models, without PyTorch.

This module owns three things:

* ``read_state_dict``: a safe reader of zip-format ``torch.save`` files (the default format
  since PyTorch 1.6). It unpickles ``data.pkl`` with an allow-list of the few globals a state
  dict needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the typed
  storage classes) and reads each storage from its ``data/<key>`` entry, so a checkpoint can
  never run code. BasicSR's wrapping (``{"params": ..., "params_ema": ...}``) and
  DataParallel's ``module.`` prefix are removed.
* ``convert_state_dict``: per-architecture converters from the authors' parameter names and
  layouts to a kdjax module and its Flax parameter tree. Every Flax parameter must come from
  exactly one tensor of the right shape; a missing, unused or mis-shaped tensor is an error.
* ``import_checkpoint``: both steps, returning a model config for
  ``kdjax.models.build_model`` and the parameters; ``import_to_folder`` writes them as a
  model folder (``kdjax import-weights``).

Layouts: PyTorch convolution kernels are OIHW, Flax ones HWIO (a depthwise kernel
(C, 1, 3, 3) becomes (3, 3, 1, C), the layout of ``nn.Conv`` with ``feature_group_count=C``);
1x1 convolutions are ``nn.Dense`` layers in the kdjax ports, whose kernels are (I, O).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import re
import zipfile
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kdjax.models import build_model
from kdjax.models.bsrn import BSRN
from kdjax.models.rlfn import RLFN

__all__ = ["ARCHITECTURES", "convert_state_dict", "import_checkpoint", "read_state_dict"]

# Storage classes a state dict may name, with the element type of their raw bytes.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": jnp.bfloat16,  # NumPy has no bfloat16; JAX brings one.
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}

# BasicSR checkpoints nest the state dict under one of these keys; the EMA weights are the
# ones BasicSR's own test configs evaluate when a run kept them.
_WRAPPER_KEYS = ("params_ema", "params")


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.<Name>Storage`` while unpickling: only its element type matters."""

    name: str
    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _TensorSpec:
    """What ``torch._utils._rebuild_tensor_v2`` receives: a view into a storage."""

    storage: np.ndarray
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
) -> _TensorSpec:
    """Stands in for ``torch._utils._rebuild_tensor_v2``; `_materialise` checks the view."""
    del requires_grad, backward_hooks, metadata  # Training state, irrelevant to the values.
    return _TensorSpec(storage, storage_offset, tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals of a plain state dict (see module docstring)."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str, path: str):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._byteorder = byteorder
        self._path = path
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, np.dtype(_STORAGE_DTYPES[name]))
        raise pickle.UnpicklingError(
            f"{self._path} refers to {module}.{name}, which a plain state dict never needs; "
            "re-save it as torch.save(model.state_dict(), path) and import that file."
        )

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(
                f"{self._path} holds a storage reference {pid!r} of an unknown form; "
                "re-save it with torch.save(model.state_dict(), path) from a recent PyTorch."
            )
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
            entry = f"{self._prefix}data/{key}"
            if entry not in self._archive.namelist():
                raise pickle.UnpicklingError(
                    f"{self._path} lacks the storage entry {entry}; the file is truncated or "
                    "corrupt, download it again."
                )
            raw = self._archive.read(entry)
            storage = np.frombuffer(raw, dtype=dtype)
            if storage.size < numel:
                raise pickle.UnpicklingError(
                    f"{self._path} storage {key} holds {storage.size} elements where {numel} are "
                    "expected; the file is truncated, download it again."
                )
            self._storages[key] = storage[:numel].astype(dtype.newbyteorder("="))
        return self._storages[key]


def _materialise(spec: _TensorSpec, key: str, path: str) -> np.ndarray:
    """Copies the strided view a tensor describes out of its storage, checking its bounds."""
    well_formed = (
        isinstance(spec.storage, np.ndarray)
        and all(isinstance(value, int) for value in (spec.offset, *spec.shape, *spec.strides))
        and len(spec.shape) == len(spec.strides)
    )
    if not well_formed:
        raise ValueError(
            f"{path} tensor {key!r} is not a view of a storage (offset, sizes and strides); "
            "the file is not a torch.save state dict, pass one that is."
        )
    count = int(np.prod(spec.shape))
    if count == 0:
        return np.zeros(spec.shape, spec.storage.dtype)
    last = spec.offset + sum((size - 1) * stride for size, stride in zip(spec.shape, spec.strides))
    if spec.offset < 0 or min(spec.strides, default=0) < 0 or last >= spec.storage.size:
        raise ValueError(
            f"{path} tensor {key!r} (offset {spec.offset}, shape {spec.shape}, strides "
            f"{spec.strides}) reaches outside its storage of {spec.storage.size} elements; the "
            "file is corrupt, download it again."
        )
    item = spec.storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        spec.storage[spec.offset:],
        shape=spec.shape,
        strides=tuple(stride * item for stride in spec.strides),
        writeable=False,
    )
    return np.array(view)


def _unwrap(loaded: Any, path: str) -> Mapping[str, Any]:
    """The state dict inside a checkpoint: the object itself or BasicSR's ``params*`` entry."""
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"{path} holds a {type(loaded).__name__}, not a state dict; save "
            "model.state_dict() rather than the model."
        )
    for key in _WRAPPER_KEYS:
        if isinstance(loaded.get(key), Mapping):
            return loaded[key]
    return loaded


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a zip-format ``torch.save`` state dict into ``{name: np.ndarray}`` without torch.

    BasicSR checkpoints yield their ``params_ema`` entry when present, else ``params``; a
    ``module.`` prefix on every key (a model saved inside DataParallel) is removed.

    Raises:
      FileNotFoundError: there is no file at `path`.
      ValueError: the file is not a zip-format checkpoint, is corrupt, needs globals outside
        the allow-list, or holds something other than tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint {path} does not exist; check the path.")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a zip-format torch.save file; re-save it with PyTorch 1.6 or newer "
            "(the legacy format is not supported)."
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [
            name for name in archive.namelist() if name == "data.pkl" or name.endswith("/data.pkl")
        ]
        if len(pickles) != 1:
            raise ValueError(
                f"{path} has {len(pickles)} data.pkl entries where a torch.save file has exactly "
                "one; pass a file written by torch.save."
            )
        prefix = pickles[0][: -len("data.pkl")]
        byteorder_entry = f"{prefix}byteorder"
        byteorder = (
            archive.read(byteorder_entry).decode().strip()
            if byteorder_entry in archive.namelist()
            else "little"  # Files from before PyTorch 1.10 have no entry and are little-endian.
        )
        if byteorder not in ("little", "big"):
            raise ValueError(
                f"{path} declares byte order {byteorder!r}; pass a file written by torch.save."
            )
        with archive.open(pickles[0]) as pickled:
            try:
                loaded = _StateDictUnpickler(pickled, archive, prefix, byteorder, path).load()
            except pickle.UnpicklingError as error:
                raise ValueError(str(error)) from None
            except EOFError:
                raise ValueError(f"{path} has a truncated data.pkl; download it again.") from None
    state = _unwrap(loaded, path)
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, _TensorSpec):
            raise ValueError(
                f"{path} entry {key!r} is a {type(value).__name__}, not a tensor; pass a file "
                "that holds only a state dict."
            )
        tensors[key] = _materialise(value, key, path)
    if tensors and all(key.startswith("module.") for key in tensors):
        tensors = {key[len("module."):]: value for key, value in tensors.items()}
    return tensors


def _shift_block(torch_prefix: str) -> Callable[[re.Match], str]:
    """Renames the 0-based kdjax block ``block_{i}.`` to the authors' 1-based name."""
    return lambda match: f"{torch_prefix}{int(match.group(1)) + 1}."


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A published checkpoint's kdjax module, its fields, and how its parameter names map.

    `key_renames` are regex substitutions, applied in order, from a Flax parameter path
    joined with dots (``block_0.esa.conv1.kernel``) to the authors' state-dict key
    (``block_1.esa.conv1.weight``).
    """

    module: type[nn.Module]
    fields: Mapping[str, Any]
    key_renames: tuple[tuple[str, str | Callable[[re.Match], str]], ...]


_RLFN_RENAMES = (
    (r"^block_(\d+)\.", _shift_block("block_")),
    (r"^upsampler\.", "upsampler.0."),
    (r"\.kernel$", ".weight"),
)
_BSRN_RENAMES = (
    (r"^block_(\d+)\.", _shift_block("B")),
    (r"\.cca\.squeeze\.", ".cca.conv_du.0."),
    (r"\.cca\.expand\.", ".cca.conv_du.2."),
    (r"^upsampler\.", "upsampler.upsampleOneStep.0."),
    (r"\.kernel$", ".weight"),
)

# The keys are the kdjax registry names of the imported models.
ARCHITECTURES: dict[str, Architecture] = {
    "rlfn": Architecture(RLFN, {"features": 52, "scale": 2}, _RLFN_RENAMES),
    "rlfn_s": Architecture(RLFN, {"features": 48, "scale": 2}, _RLFN_RENAMES),
    "bsrn": Architecture(BSRN, {"features": 64, "num_blocks": 8, "scale": 2}, _BSRN_RENAMES),
}

# Parameter shapes do not depend on the input size, and only shapes are traced.
_PROBE_SIZE = 16


def _architecture(arch: str) -> Architecture:
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}; use one of: {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[arch]


def _torch_key(flax_path: tuple[str, ...], spec: Architecture) -> str:
    key = ".".join(flax_path)
    for pattern, replacement in spec.key_renames:
        key = re.sub(pattern, replacement, key)
    return key


def _to_flax_layout(tensor: np.ndarray, flax_rank: int) -> np.ndarray:
    """PyTorch layout -> Flax layout, chosen by the two ranks.

    OIHW conv kernels (depthwise ones included: (C, 1, 3, 3)) become HWIO; 1x1 conv kernels
    (O, I, 1, 1) feeding a Dense become (I, O), and so do Linear weights (O, I); biases are
    unchanged. Anything else is returned as is, for the shape check to report.
    """
    if tensor.ndim == 4 and flax_rank == 4:
        return tensor.transpose(2, 3, 1, 0)
    if tensor.ndim == 4 and flax_rank == 2 and tensor.shape[2:] == (1, 1):
        return tensor[:, :, 0, 0].T
    if tensor.ndim == 2 and flax_rank == 2:
        return tensor.T
    return tensor


def _listing(keys: list[str]) -> str:
    """'2 tensors ('a', 'b')', eliding after four names."""
    shown = ", ".join(repr(key) for key in keys[:4])
    noun = "tensor" if len(keys) == 1 else "tensors"
    return f"{len(keys)} {noun} ({shown}{', ...' if len(keys) > 4 else ''})"


def convert_state_dict(
    arch: str, state_dict: Mapping[str, np.ndarray]
) -> tuple[nn.Module, dict[str, Any]]:
    """The kdjax module of `arch` and its float32 Flax parameters from the authors' state dict.

    Every Flax parameter is taken from exactly one tensor, converted to the Flax layout and
    shape-checked; a missing, unused or mis-shaped tensor raises ValueError.
    """
    spec = _architecture(arch)
    model = spec.module(**spec.fields)
    probe = jnp.zeros((1, _PROBE_SIZE, _PROBE_SIZE, 3), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), probe))["params"]
    targets = flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes))
    keys = {path: _torch_key(path, spec) for path in targets}

    missing = sorted(key for key in keys.values() if key not in state_dict)
    if missing:
        raise ValueError(
            f"The {arch} checkpoint lacks {_listing(missing)}; pass the authors' {arch} "
            f"checkpoint ({dict(spec.fields)})."
        )
    unused = sorted(set(state_dict) - set(keys.values()))
    if unused:
        raise ValueError(
            f"The {arch} checkpoint has {_listing(unused)} that {arch} does not use; pass the "
            f"authors' {arch} checkpoint ({dict(spec.fields)})."
        )
    params = {}
    for path, target in targets.items():
        tensor = np.asarray(state_dict[keys[path]])
        converted = _to_flax_layout(tensor, len(target.shape))
        if converted.shape != target.shape:
            raise ValueError(
                f"The {arch} checkpoint tensor {keys[path]!r} of shape {tensor.shape} does not "
                f"fit parameter {'/'.join(path)} of shape {target.shape}; pass the authors' "
                f"{arch} checkpoint ({dict(spec.fields)})."
            )
        params[path] = jnp.asarray(converted, jnp.float32)
    return model, flax.traverse_util.unflatten_dict(params)


def import_checkpoint(arch: str, path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reads the authors' checkpoint of `arch` and converts it.

    Returns:
      A model config ``{"name": arch, "dtype": "float32", "overrides": fields}`` for
      ``kdjax.models.build_model`` (the fields pin the checkpoint's architecture whatever
      the preset), and the float32 parameter tree for ``model.apply({"params": params}, x)``.
    """
    _, params = convert_state_dict(arch, read_state_dict(path))
    config = {"name": arch, "dtype": "float32", "overrides": dict(_architecture(arch).fields)}
    return config, params


def import_to_folder(arch: str, checkpoint: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Converts the authors' checkpoint of `arch` into a kdjax model folder (``kdjax import-weights``).

    The folder is what ``kdjax.weights`` reads everywhere (``kdjax evaluate``, ``sharpen``,
    ``kdjax.load``, a distillation's ``config.teacher.workdir``): its config is the default
    run config with this model, in the upscale task of the published tables (bicubic
    downscaling by the model's scale, PSNR/SSIM with a border crop of the scale).
    """
    from kdjax import config as config_lib  # pylint: disable=import-outside-toplevel  # run config only here
    from kdjax import degradations, weights  # pylint: disable=import-outside-toplevel

    model_config, params = import_checkpoint(arch, checkpoint)
    config = config_lib.base_config()
    config.model = ml_collections.ConfigDict(model_config)
    scale = build_model(config.model).scale
    config.data.degradation = degradations.bicubic_only_config(scale=scale, task="upscale")
    config.eval.crop_border = scale
    provenance = {
        "imported_from": str(checkpoint),
        "arch": arch,
        "model": arch,
        "params": int(sum(np.size(leaf) for leaf in jax.tree.leaves(params))),
    }
    return weights.write_model_folder(output_dir, config, params, provenance)
