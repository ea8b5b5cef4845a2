"""Model registry: named presets and `build_model(cfg)` from a model config.

Model config (a `ml_collections.ConfigDict` or plain dict)::

    name: one of MODEL_NAMES
    dtype: "float32" (default) or "bfloat16"; compute dtype, parameters stay float32
    overrides: {field: value} replacing preset fields of the module, e.g.
               {"width": 16} for a student or {"depths": (2, 2)} for a teacher

Lists in overrides (as they come back from JSON) are turned into tuples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from kdjax.models.bsrn import BSRN
from kdjax.models.rlfn import RLFN
from kdjax.models.students import PlainCNN, RealtimeCNN, RepCNN, ResidualCNN, SeparableUNet
from kdjax.models.teacher import SwinIR


@dataclasses.dataclass(frozen=True)
class Preset:
    """A module class and the field values that define a named model."""

    module: type[nn.Module]
    fields: Mapping[str, Any]


_SWIN_COMMON = {"window_size": 8, "mlp_ratio": 2.0, "resi_connection": "1conv"}

PRESETS: dict[str, Preset] = {
    # Small enough that a 64x64 train step compiles and runs in seconds on CPU.
    "swin_tiny": Preset(
        SwinIR, {**_SWIN_COMMON, "embed_dim": 24, "depths": (2, 2), "num_heads": (2, 2)}
    ),
    # SwinIR-light body (0.90M parameters here, no upsampler).
    "swin_light": Preset(
        SwinIR, {**_SWIN_COMMON, "embed_dim": 60, "depths": (6,) * 4, "num_heads": (6,) * 4}
    ),
    # swin_light's body at half resolution (pixel-unshuffled by 2): the cheaper sharpen teacher.
    "swin_light_half": Preset(
        SwinIR, {**_SWIN_COMMON, "embed_dim": 60, "depths": (6,) * 4, "num_heads": (6,) * 4, "body_factor": 2}
    ),
    # SwinIR classical body (11.5M parameters here, no upsampler).
    "swin_base": Preset(
        SwinIR, {**_SWIN_COMMON, "embed_dim": 180, "depths": (6,) * 6, "num_heads": (6,) * 6}
    ),
    # Published efficient x2 upscalers, imported from their authors' weights (kdjax.torch_import).
    "rlfn": Preset(RLFN, {"features": 52, "scale": 2}),
    "rlfn_s": Preset(RLFN, {"features": 48, "scale": 2}),
    "bsrn": Preset(BSRN, {"features": 64, "num_blocks": 8, "scale": 2}),
    "plain3": Preset(PlainCNN, {}),
    "residual": Preset(ResidualCNN, {}),
    "separable": Preset(SeparableUNet, {}),
    "realtime": Preset(RealtimeCNN, {}),
    # The efficient-frontier student, folded: to sharpen (pixel-unshuffled by 2; its head reads
    # 12 channels, hence one block less) 18.1 GFLOPs per 1080p frame, for x2 upscaling (at the
    # input's resolution) 19.3 GFLOPs per 1080p output.
    "rep": Preset(RepCNN, {"num_blocks": 6}),
    "rep_x2": Preset(RepCNN, {"scale": 2, "shuffle_factor": 1}),
}

MODEL_NAMES: tuple[str, ...] = tuple(PRESETS)
TEACHER_NAMES: tuple[str, ...] = tuple(name for name in PRESETS if PRESETS[name].module.role == "teacher")
STUDENT_NAMES: tuple[str, ...] = tuple(name for name in PRESETS if PRESETS[name].module.role == "student")

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_CONFIG_KEYS = ("name", "dtype", "overrides")


def override_fields(name: str) -> tuple[str, ...]:
    """Module fields of model `name` that `overrides` may set (dtype is set by `dtype`)."""
    module = _preset(name).module
    return tuple(
        field.name
        for field in dataclasses.fields(module)
        if field.init and field.name not in ("parent", "name", "dtype")
    )


def _preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"Unknown model name {name!r}; valid names are: {', '.join(MODEL_NAMES)}.")
    return PRESETS[name]


def _as_dict(mapping: Any) -> dict[str, Any]:
    return mapping.to_dict() if isinstance(mapping, ml_collections.ConfigDict) else dict(mapping)


def _freeze(value: Any) -> Any:
    """Lists (e.g. from a JSON config) -> tuples, so module fields stay hashable."""
    return tuple(_freeze(item) for item in value) if isinstance(value, (list, tuple)) else value


def build_model(cfg: Mapping[str, Any] | ml_collections.ConfigDict) -> nn.Module:
    """Builds the flax module described by a model config (see the module docstring)."""
    cfg = _as_dict(cfg)
    unknown_keys = sorted(set(cfg) - set(_CONFIG_KEYS))
    if unknown_keys:
        raise ValueError(
            f"Model config has unknown key(s) {unknown_keys}; "
            f"valid keys are: {', '.join(_CONFIG_KEYS)}."
        )
    if "name" not in cfg:
        raise ValueError(f"Model config needs a 'name', one of: {', '.join(MODEL_NAMES)}.")
    name = cfg["name"]
    preset = _preset(name)
    dtype_name = cfg.get("dtype") or "float32"
    if dtype_name not in DTYPES:
        raise ValueError(
            f"Model config dtype {dtype_name!r} is not supported; use one of: {', '.join(DTYPES)}."
        )
    overrides = _as_dict(cfg.get("overrides") or {})
    valid = override_fields(name)
    for key in overrides:
        if key not in valid:
            raise ValueError(
                f"Unknown override {key!r} for model {name!r}; "
                f"valid fields are: {', '.join(valid)}."
            )
    fields = {**preset.fields, **{key: _freeze(value) for key, value in overrides.items()}}
    return preset.module(**fields, dtype=DTYPES[dtype_name])


def model_config(
    name: str, *, dtype: str = "float32", **overrides: Any
) -> ml_collections.ConfigDict:
    """Model config for `name`, validated by building it once (cheap: no parameters)."""
    cfg = ml_collections.ConfigDict({"name": name, "dtype": dtype, "overrides": overrides})
    build_model(cfg)
    return cfg



def inference_form(
    cfg: Mapping[str, Any] | ml_collections.ConfigDict, params: Any
) -> tuple[ml_collections.ConfigDict, Any]:
    """The model config and parameters to deploy: the same function, in the form the model
    prefers for inference (re-parameterisable students folded to plain convolutions)."""
    cfg = ml_collections.ConfigDict(_as_dict(cfg))
    overrides, params = build_model(cfg).inference_form(params)
    if overrides:
        cfg.overrides = {**_as_dict(cfg.get("overrides") or {}), **overrides}
    return cfg, params
