"""Models: the Swin teacher, the CNN students, their registry and accounting.

Every model follows the contract of ``kdjax.models.base`` (``scale``, ``size_multiple``,
``role``, ``feature_names``); code outside this package asks those, never the class.
"""

from kdjax.models.registry import (
    MODEL_NAMES,
    STUDENT_NAMES,
    TEACHER_NAMES,
    build_model,
    inference_form,
    model_config,
)
from kdjax.models.summary import (
    count_params,
    feature_shapes,
    forward_cost,
    gflops_per_frame,
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
    "inference_form",
    "model_config",
]
