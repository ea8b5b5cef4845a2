"""The model contract: what the rest of kdjax may ask of any image-restoration module.

Every model maps float images in [0, 1], (N, H, W, 3), to (N, H * scale, W * scale, 3)
(not clipped), for any H and W, and is called as ``model.apply({"params": p}, x, train=...,
return_features=...)``. Beside that, code outside ``kdjax.models`` reads only these
properties, never the concrete class:

* ``scale``: output size / input size; 1 for the sharpen task (same-size input), 2, 3 or 4
  for the upscale task (low-resolution input).
* ``size_multiple``: the factor the model pads H and W of its input up to internally (a
  window, a pixel-unshuffle factor, a stride); tiles are cut on multiples of it so that a
  tile sees the same grid as the whole image.
* ``role``: ``"teacher"`` or ``"student"`` (labels in tables and grids).
* ``feature_names``: the feature taps ``return_features=True`` returns, for distillation.
* ``inference_form(params)``: the field overrides and parameters of the equivalent network to
  deploy (a re-parameterisable model folds its training branches); by default the model itself.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn

ROLES = ("teacher", "student")


class ImageModel(nn.Module):
    """Base of every kdjax model; subclasses override the properties that differ.

    A subclass may declare ``scale`` as a dataclass field (students take it as a setting)
    or keep this property (a fixed architecture).
    """

    role: ClassVar[str] = "student"

    @property
    def scale(self) -> int:
        return 1

    @property
    def size_multiple(self) -> int:
        return 1

    @property
    def feature_names(self) -> tuple[str, ...]:
        return ()

    def inference_form(self, params: Any) -> tuple[dict[str, Any], Any]:
        """``(overrides, params)``: the module fields to change and the parameters of the same
        function in the form inference and export should run; ``({}, params)`` when it is this one."""
        return {}, params


def block_names(count: int) -> tuple[str, ...]:
    """The feature taps of a model made of `count` blocks: "block_0" ... "block_{count-1}"."""
    return tuple(f"block_{index}" for index in range(count))
