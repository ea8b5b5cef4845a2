"""Sharpening models: the Swin teacher, the CNN students, their registry and accounting."""

from kdjax.models.registry import (
    MODEL_NAMES,
    STUDENT_NAMES,
    TEACHER_NAMES,
    build_model,
    model_config,
)
from kdjax.models.summary import (
    count_params,
    feature_shapes,
    forward_cost,
    gflops_per_frame,
    model_summary,
)

__all__ = [
    "MODEL_NAMES",
    "STUDENT_NAMES",
    "TEACHER_NAMES",
    "build_model",
    "count_params",
    "feature_shapes",
    "forward_cost",
    "gflops_per_frame",
    "model_config",
    "model_summary",
]
