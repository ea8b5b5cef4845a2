"""Importing published PyTorch checkpoints into kdjax models, without PyTorch.

This module owns three things:

* ``read_state_dict``: a safe reader of zip-format ``torch.save`` files (the default format
  since PyTorch 1.6). It unpickles ``data.pkl`` with an allow-list of the few globals a state
  dict needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the typed
  storage classes) and reads each storage from its ``data/<key>`` entry, so a checkpoint can
  never run code. BasicSR's wrapping (``{"params": ..., "params_ema": ...}``) and
  DataParallel's ``module.`` prefix are removed. Nothing is inflated before every storage's
  size is checked against its zip header and every tensor's view against its storage, and
  the storages' total is capped; a damaged archive (bad CRC) is one sentence.
* ``convert_state_dict``: per-architecture converters from the authors' parameter names and
  layouts to a kdjax module and its Flax parameter tree. Every Flax parameter must come from
  exactly one tensor of the right shape; a missing, unused, mis-shaped or non-finite tensor
  is an error.
* ``import_checkpoint``: both steps, with the names and shapes checked against the
  architecture before any storage is read and the storages capped at twice what it needs,
  returning a model config for ``kdjax.models.build_model`` and the parameters;
  ``import_to_folder`` writes them as a model folder (``kdjax import-weights``).

Layouts: PyTorch convolution kernels are OIHW, Flax ones HWIO (a depthwise kernel
(C, 1, 3, 3) becomes (3, 3, 1, C), the layout of ``nn.Conv`` with ``feature_group_count=C``);
1x1 convolutions are ``nn.Dense`` layers in the kdjax ports, whose kernels are (I, O).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import pickle
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kdjax import outputs
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


# A state dict's data.pkl holds names and view descriptions: kilobytes. Larger is refused
# before it is unpickled.
_MAX_PICKLE_BYTES = 16 << 20
# What `read_state_dict` inflates at most when no architecture says what is needed; with one
# (`import_checkpoint`), the storages may hold at most twice the bytes its tensors need.
_MAX_STORAGE_BYTES = 2 << 30
_STORAGE_SLACK = 2
_STORAGE_SLACK_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.<Name>Storage`` while unpickling: only its element type matters."""

    name: str
    dtype: np.dtype

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(
            f"builds a torch.{self.name} itself, which torch.save never writes into a state dict"
        )


@dataclasses.dataclass(frozen=True)
class _Storage:
    """A storage entry of the archive, described by data.pkl and checked against its zip header."""

    entry: str
    dtype: np.dtype
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclasses.dataclass(frozen=True)
class _TensorSpec:
    """What ``torch._utils._rebuild_tensor_v2`` receives: a view into a storage."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
) -> _TensorSpec:
    """Stands in for ``torch._utils._rebuild_tensor_v2``; `_check_view` checks the view."""
    del requires_grad, backward_hooks, metadata  # Training state, irrelevant to the values.
    return _TensorSpec(storage, storage_offset, tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals of a plain state dict (see module docstring).

    Storages are described, never read: `_Storage` records the entry, its element type and
    count, checked against the size the zip header declares, so a tensor's shape can be
    checked before a byte of it is inflated.
    """

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str, path: str):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._byteorder = byteorder
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, np.dtype(_STORAGE_DTYPES[name]))
        raise pickle.UnpicklingError(
            f"refers to {module}.{name}, which a plain state dict never needs"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise pickle.UnpicklingError(f"holds a storage reference {pid!r} of an unknown form")
        _, storage_type, key, _location, numel = pid
        dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
        storage = _Storage(f"{self._prefix}data/{key}", dtype, numel)
        try:
            declared = self._archive.getinfo(storage.entry).file_size
        except KeyError:
            raise pickle.UnpicklingError(f"lacks the storage entry {storage.entry}, so it is truncated or corrupt") from None
        if declared != storage.nbytes:
            raise pickle.UnpicklingError(
                f"has a storage entry {storage.entry} of {declared} bytes where data.pkl describes {numel} "
                f"{storage_type.name} elements ({storage.nbytes} bytes), so it is corrupt"
            )
        return storage


def _check_view(spec: Any, key: str, path: str) -> _TensorSpec:
    """Checks, reading nothing, that a tensor is a view inside its storage with no more elements than it holds."""
    well_formed = (
        isinstance(spec, _TensorSpec)
        and all(isinstance(value, int) for value in (spec.offset, *spec.shape, *spec.strides))
        and len(spec.shape) == len(spec.strides)
        and min(spec.shape, default=0) >= 0
    )
    if not well_formed:
        raise ValueError(
            f"{path} tensor {key!r} is not a view of a storage (offset, sizes and strides); "
            "the file is not a torch.save state dict, pass one that is."
        )
    count = math.prod(spec.shape)
    if count == 0:
        return spec
    numel = spec.storage.numel
    last = spec.offset + sum((size - 1) * stride for size, stride in zip(spec.shape, spec.strides))
    if spec.offset < 0 or min(spec.strides, default=0) < 0 or last >= numel:
        raise ValueError(
            f"{path} tensor {key!r} (offset {spec.offset}, shape {spec.shape}, strides "
            f"{spec.strides}) reaches outside its storage of {numel} elements; the "
            "file is corrupt, download it again."
        )
    if count > numel:
        raise ValueError(
            f"{path} tensor {key!r} (shape {spec.shape}, strides {spec.strides}) repeats the {numel} elements of "
            f"its storage {spec.storage.entry} as {count}, which no saved parameter does; re-save it with "
            "torch.save(model.state_dict(), path)."
        )
    return spec


def _check_total(specs: Mapping[str, _TensorSpec], limit: int, path: str) -> None:
    """Refuses storages holding more than ``limit`` bytes, naming the one that wastes the most."""
    storages = {spec.storage.entry: spec.storage for spec in specs.values()}
    total = sum(storage.nbytes for storage in storages.values())
    if total <= limit:
        return
    used = collections.Counter()
    for spec in specs.values():
        used[spec.storage.entry] += math.prod(spec.shape) * spec.storage.dtype.itemsize
    worst = max(storages.values(), key=lambda storage: storage.nbytes - used[storage.entry])
    raise ValueError(
        f"{path} storage entry {worst.entry} holds {worst.nbytes} bytes of which its tensors use "
        f"{used[worst.entry]}, and the storages total {total} bytes where at most {limit} are read; "
        "pass the authors' checkpoint, not a file built around it."
    )


def _materialise(spec: _TensorSpec, storages: dict[str, np.ndarray], archive: zipfile.ZipFile) -> np.ndarray:
    """Copies the strided view a tensor describes out of its storage (read once, when first needed)."""
    if math.prod(spec.shape) == 0:
        return np.zeros(spec.shape, spec.storage.dtype.newbyteorder("="))
    entry = spec.storage.entry
    if entry not in storages:
        with archive.open(entry) as file:
            raw = file.read(spec.storage.nbytes)  # the whole entry: its CRC is checked at its end
        storages[entry] = np.frombuffer(raw, spec.storage.dtype)
    storage = storages[entry]
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[spec.offset:],
        shape=spec.shape,
        strides=tuple(stride * item for stride in spec.strides),
        writeable=False,
    )
    return np.array(view, dtype=spec.storage.dtype.newbyteorder("="))


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


def _strip_data_parallel(names: list[str]) -> Callable[[str], str]:
    if names and all(name.startswith("module.") for name in names):
        return lambda name: name[len("module."):]
    return lambda name: name


@contextlib.contextmanager
def _open_checkpoint(path: str) -> Iterator[tuple[zipfile.ZipFile, dict[str, _TensorSpec]]]:
    """Opens a zip-format ``torch.save`` file: the archive and its tensors' views, checked, nothing inflated.

    Any damage met inside the block (a bad CRC, a broken deflate stream) is one sentence too.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint {path} does not exist; check the path.")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a zip-format torch.save file; re-save it with PyTorch 1.6 or newer "
            "(the legacy format is not supported)."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            yield archive, _read_views(archive, path)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise ValueError(f"{path} is damaged ({' '.join(str(error).split())}); download it again.") from None


def _read_views(archive: zipfile.ZipFile, path: str) -> dict[str, _TensorSpec]:
    pickles = [name for name in archive.namelist() if name == "data.pkl" or name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise ValueError(
            f"{path} has {len(pickles)} data.pkl entries where a torch.save file has exactly "
            "one; pass a file written by torch.save."
        )
    if archive.getinfo(pickles[0]).file_size > _MAX_PICKLE_BYTES:
        raise ValueError(
            f"{path} has a data.pkl of {archive.getinfo(pickles[0]).file_size} bytes where a state dict's is a few "
            "kilobytes; pass the authors' checkpoint."
        )
    prefix = pickles[0][: -len("data.pkl")]
    byteorder_entry = f"{prefix}byteorder"
    byteorder = "little"  # Files from before PyTorch 1.10 have no entry and are little-endian.
    if byteorder_entry in archive.namelist():
        with archive.open(byteorder_entry) as file:
            byteorder = file.read(16).decode(errors="replace").strip()
    if byteorder not in ("little", "big"):
        raise ValueError(f"{path} declares byte order {byteorder!r}; pass a file written by torch.save.")
    with archive.open(pickles[0]) as pickled:
        try:
            loaded = _StateDictUnpickler(pickled, archive, prefix, byteorder, path).load()
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{path} {error}; re-save it as torch.save(model.state_dict(), path) and import that file."
            ) from None
        except EOFError:
            raise ValueError(f"{path} has a truncated data.pkl; download it again.") from None
        except (zipfile.BadZipFile, zlib.error):
            raise
        except Exception as error:  # malformed opcodes fail in many ways; --debug shows which
            raise ValueError(
                f"{path} has a data.pkl that is not a plain state dict ({type(error).__name__}); re-save it as "
                "torch.save(model.state_dict(), path) and import that file."
            ) from error
    state = _unwrap(loaded, path)
    rename = _strip_data_parallel(list(state))
    views = {}
    for key, value in state.items():
        if not isinstance(value, _TensorSpec):
            raise ValueError(
                f"{path} entry {key!r} is a {type(value).__name__}, not a tensor; pass a file "
                "that holds only a state dict."
            )
        views[rename(key)] = _check_view(value, key, path)
    return views


def read_state_dict(path: str | os.PathLike, *, max_bytes: int = _MAX_STORAGE_BYTES) -> dict[str, np.ndarray]:
    """Reads a zip-format ``torch.save`` state dict into ``{name: np.ndarray}`` without torch.

    BasicSR checkpoints yield their ``params_ema`` entry when present, else ``params``; a
    ``module.`` prefix on every key (a model saved inside DataParallel) is removed. Each
    storage's size is checked against its zip header and every tensor's view against its
    storage before anything is inflated, and storages totalling more than ``max_bytes`` are
    refused.

    Raises:
      FileNotFoundError: there is no file at `path`.
      ValueError: the file is not a zip-format checkpoint, is corrupt, needs globals outside
        the allow-list, holds something other than tensors, or more than ``max_bytes``.
    """
    path = os.fspath(path)
    with _open_checkpoint(path) as (archive, views):
        return _materialise_all(views, archive, max_bytes, path)


def _materialise_all(
    views: Mapping[str, _TensorSpec], archive: zipfile.ZipFile, max_bytes: int, path: str
) -> dict[str, np.ndarray]:
    """Every tensor's values, once the storages they view hold at most ``max_bytes`` in all."""
    _check_total(views, max_bytes, path)
    storages: dict[str, np.ndarray] = {}
    return {key: _materialise(spec, storages, archive) for key, spec in views.items()}


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


def _plan(arch: str, shapes: Mapping[str, tuple[int, ...]], source: str) -> tuple[nn.Module, dict[tuple[str, ...], Any]]:
    """The module of `arch` and its parameters' shapes by Flax path, once every tensor the state dict
    must hold is there, of the right shape, and nothing else is (judged from `shapes` alone)."""
    spec = _architecture(arch)
    model = spec.module(**spec.fields)
    probe = jnp.zeros((1, _PROBE_SIZE, _PROBE_SIZE, 3), jnp.float32)
    shapes_tree = jax.eval_shape(lambda: model.init(jax.random.key(0), probe))["params"]
    targets = flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes_tree))
    keys = {path: _torch_key(path, spec) for path in targets}

    missing = sorted(key for key in keys.values() if key not in shapes)
    if missing:
        raise ValueError(f"{source} lacks {_listing(missing)}; pass the authors' {arch} checkpoint ({dict(spec.fields)}).")
    unused = sorted(set(shapes) - set(keys.values()))
    if unused:
        raise ValueError(
            f"{source} has {_listing(unused)} that {arch} does not use; pass the authors' {arch} checkpoint "
            f"({dict(spec.fields)})."
        )
    for path, target in targets.items():
        shape = tuple(shapes[keys[path]])
        # A zero-stride stand-in of that shape: the layout change costs no memory.
        if _to_flax_layout(np.broadcast_to(np.float32(0), shape), len(target.shape)).shape != target.shape:
            raise ValueError(
                f"{source} tensor {keys[path]!r} of shape {shape} does not fit parameter {'/'.join(path)} of shape "
                f"{target.shape}; pass the authors' {arch} checkpoint ({dict(spec.fields)})."
            )
    return model, {path: (keys[path], target) for path, target in targets.items()}


def convert_state_dict(
    arch: str, state_dict: Mapping[str, np.ndarray], *, source: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The kdjax module of `arch` and its float32 Flax parameters from the authors' state dict.

    Every Flax parameter is taken from exactly one tensor, converted to the Flax layout and
    shape-checked; a missing, unused, mis-shaped or non-finite tensor raises ValueError
    (naming `source`, the checkpoint file, when given).
    """
    source = f"The {arch} checkpoint{f' {source}' if source else ''}"
    model, plan = _plan(arch, {key: np.shape(value) for key, value in state_dict.items()}, source)
    params = {}
    for path, (key, target) in plan.items():
        tensor = np.asarray(state_dict[key])
        if not np.all(np.isfinite(tensor)):
            raise ValueError(
                f"{source} tensor {key!r} holds NaN or infinite values, so the model it saved diverged or the file "
                "is damaged; pass a checkpoint of a trained model."
            )
        params[path] = jnp.asarray(_to_flax_layout(tensor, len(target.shape)), jnp.float32)
    return model, flax.traverse_util.unflatten_dict(params)


def import_checkpoint(arch: str, path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reads the authors' checkpoint of `arch` and converts it.

    The tensors' names and shapes are checked against `arch` before any storage is inflated,
    and the storages may hold at most twice the bytes those tensors need (plus 1 MiB), so a
    small file cannot make the import allocate more than a normal one.

    Returns:
      A model config ``{"name": arch, "dtype": "float32", "overrides": fields}`` for
      ``kdjax.models.build_model`` (the fields pin the checkpoint's architecture whatever
      the preset), and the float32 parameter tree for ``model.apply({"params": params}, x)``.
    """
    path = os.fspath(path)
    with _open_checkpoint(path) as (archive, views):
        _plan(arch, {key: spec.shape for key, spec in views.items()}, f"The {arch} checkpoint {path}")
        needed = sum(math.prod(spec.shape) * spec.storage.dtype.itemsize for spec in views.values())
        state = _materialise_all(views, archive, _STORAGE_SLACK * needed + _STORAGE_SLACK_BYTES, path)
    _, params = convert_state_dict(arch, state, source=path)
    config = {"name": arch, "dtype": "float32", "overrides": dict(_architecture(arch).fields)}
    return config, params


def import_to_folder(
    arch: str, checkpoint: str | os.PathLike, output_dir: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Converts the authors' checkpoint of `arch` into a kdjax model folder (``kdjax import-weights``).

    The folder is what ``kdjax.weights`` reads everywhere (``kdjax evaluate``, ``sharpen``,
    ``kdjax.load``, a distillation's ``config.teacher.workdir``): its config is the default
    run config with this model, in the upscale task of the published tables (bicubic
    downscaling by the model's scale, PSNR/SSIM with a border crop of the scale). The output
    is refused before the checkpoint is read where `weights.write_model_folder` would refuse it.
    """
    from kdjax import config as config_lib  # pylint: disable=import-outside-toplevel  # run config only here
    from kdjax import degradations, weights  # pylint: disable=import-outside-toplevel

    outputs.check_output(output_dir, overwrite=overwrite, folder=True, inputs=[checkpoint])
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
    return weights.write_model_folder(output_dir, config, params, provenance, overwrite=overwrite, inputs=[checkpoint])
