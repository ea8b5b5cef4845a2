"""Per-example transformations of the pipelines: training patches and evaluation images.

They run in Grain's worker processes, so they are picklable dataclasses, and anything
unexpected is re-raised as one sentence naming the example.

* ``TrainPatch``: random crop, random flip/90-degree rotation and random degradation of one
  example into ``{"input", "target"}`` patches (in the upscale task the input patch is
  ``scale`` times smaller than the target's ``patch_size``) (the same crop and flip for both images of a
  pair). The crop degrades a window reaching the degradation's ``context`` beyond the patch
  (where the image has it), with patch and window on its ``grid`` (see
  ``kdjax.degradations``), then keeps the patch: so the input is the whole image's
  degradation restricted to the patch, as evaluation and inference see it, not a degradation
  of the patch that mirrors pixels at its borders. The flip/rotation is applied to the sharp
  window before degradation: isotropic blur commutes with it (bicubic too, up to the rounding
  between its passes), but for anisotropic and motion blur, and JPEG, only this order yields
  an input the degradation could have produced from the target.
* ``EvalExample``: a whole image, the target cropped so that height and width are multiples
  of the degradation scale, the input its degradation (low-resolution in the upscale task) with fixed evaluation parameters
  (noise seeded per image).

Images smaller than the training patch are an error by default (``min_size_policy="error"``),
or are mirror-padded at the bottom and right to the patch size (``min_size_policy="pad"``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from kdjax import degradations
from kdjax.images import ImageReadError

MIN_SIZE_POLICIES = ("error", "pad")


class ImageTooSmallError(ValueError):
    """An image smaller than the training patch under ``min_size_policy="error"``."""


class ExamplePreparationError(ValueError):
    """An unexpected failure while turning one example into training or evaluation data."""


def too_small_message(name: str, height: int, width: int, patch_size: int) -> str:
    return (
        f"Image {name} is {height}x{width} pixels, smaller than the {patch_size}x{patch_size} training patch; "
        "lower data.patch_size, set data.min_size_policy='pad', or remove the image."
    )


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crops the bottom and right so that height and width are multiples of ``scale``."""
    height, width = image.shape[0] - image.shape[0] % scale, image.shape[1] - image.shape[1] % scale
    return image[:height, :width]


def _prepare(fn, example: dict[str, Any], what: str):
    """Runs ``fn(example)``; unexpected errors become one sentence naming the example."""
    try:
        return fn(example)
    except (ImageReadError, ImageTooSmallError, ExamplePreparationError):
        raise
    except Exception as error:  # pylint: disable=broad-except  # re-raised with the example's name
        raise ExamplePreparationError(
            f"Preparing the {what} of {example.get('name', 'an example')} failed "
            f"({type(error).__name__}: {' '.join(str(error).split())}); "
            "check that image and the data config."
        ) from error


def _patch_and_window(
    length: int, patch_size: int, context: int, grid: int, rng: np.random.Generator
) -> tuple[int, int, int]:
    """Draws a patch along one image axis and the window around it that gets degraded.

    Returns ``(start, low, high)``: the patch covers ``[start, start + patch_size)`` and the window
    ``[low, high)``, reaching ``context`` (a multiple of ``grid``) beyond the patch where the
    image has it. Patch and window start on multiples of ``grid`` and the window ends on one,
    within the part of the axis that evaluation's mod crop keeps, so that the window's
    bicubic downscaling groups the same pixels as the whole image's. An axis too short for
    an aligned patch (e.g. padded to the patch size) is used whole, unaligned.
    """
    usable = length - length % grid
    if usable < patch_size:
        usable, grid = length, 1
    start = int(rng.integers(0, (usable - patch_size) // grid + 1)) * grid
    low = max(start - context, 0)
    high = min(math.ceil((start + patch_size + context) / grid) * grid, usable)
    return start, low, high


def _rotate_flip(
    windows: list[np.ndarray], top: int, left: int, size: int, transform: int
) -> tuple[list[np.ndarray], int, int]:
    """Applies one of the 8 symmetries of the square to every window: ``transform % 4`` quarter
    turns, then a horizontal flip when ``transform >= 4``; returns the windows and where the
    ``size`` x ``size`` patch at (``top``, ``left``) has moved."""
    for _ in range(transform % 4):
        width = windows[0].shape[1]
        windows = [np.rot90(window) for window in windows]
        top, left = width - left - size, top
    if transform >= 4:
        windows = [window[:, ::-1] for window in windows]
        left = windows[0].shape[1] - left - size
    return windows, top, left


@dataclasses.dataclass(frozen=True)
class TrainPatch:
    """Random crop, flip/rotation and degradation of one example into ``{"input", "target"}`` patches.

    The degradation sees the patch's real surroundings (see the module docstring): it degrades
    a window ``degradation.context`` pixels (rounded up to its ``grid``) wider on each side,
    clipped to the image, and the patch is cut out of the result.
    """

    patch_size: int
    degradation: degradations.Degradation | None  # None for sources that bring their inputs
    min_size_policy: str
    augment: bool

    def __call__(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return _prepare(lambda e: self._patch(e, rng), example, "training patch")

    def _patch(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        if "target" in example:
            return self._stored_patch(example, rng)
        image = example["image"]
        height, width = image.shape[:2]
        size = self.patch_size
        if height < size or width < size:
            image = self._pad_small(image, example["name"])
            height, width = image.shape[:2]
        grid = self.degradation.grid
        context = math.ceil(self.degradation.context / grid) * grid
        top, row_low, row_high = _patch_and_window(height, size, context, grid, rng)
        left, col_low, col_high = _patch_and_window(width, size, context, grid, rng)
        window = image[row_low:row_high, col_low:col_high]
        top, left = top - row_low, left - col_low
        if self.augment:
            (window,), top, left = _rotate_flip([window], top, left, size, int(rng.integers(8)))
        degraded = self.degradation(np.ascontiguousarray(window), rng)
        # In the upscale task the degraded window is `scale` times smaller; window, patch and
        # offsets are multiples of the grid, hence of the scale.
        scale = self.degradation.scale
        low_top, low_left, low_size = top // scale, left // scale, size // scale
        return {
            "input": np.ascontiguousarray(degraded[low_top : low_top + low_size, low_left : low_left + low_size]),
            "target": np.ascontiguousarray(window[top : top + size, left : left + size]),
        }

    def _pad_small(self, image: np.ndarray, name: str, size: int | None = None) -> np.ndarray:
        """Pads an image smaller than `size` (default: the patch) under min_size_policy="pad"."""
        height, width = image.shape[:2]
        size = size or self.patch_size
        if self.min_size_policy == "error":
            raise ImageTooSmallError(too_small_message(name, height, width, self.patch_size))
        # Mirrored with the edge repeated (numpy's "symmetric"), which also works for 1-pixel sides.
        padding = ((0, max(0, size - height)), (0, max(0, size - width)), (0, 0))
        return np.pad(image, padding, mode="symmetric")

    def _stored_patch(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The same crop and symmetry of an example that brings its input: a real blurry/sharp
        pair, or a stored degraded image (``kdjax.data.degraded``), whose input may be `scale`
        times smaller and which may carry the teacher's output (the target's size) and its
        auxiliary views, of which one gives the ``aux_input`` / ``aux_teacher_output`` patch."""
        outputs = {key: example[key] for key in ("target", "teacher_output") if key in example}
        patch = self._cut(example["input"], outputs, example["name"], rng)
        if "zoom_in_input" in example:
            # Drawn after the main patch, so that the main patches are those of a run without views.
            zoom_out_fits = min(example["zoom_out_output"].shape[:2]) >= self.patch_size
            view = "zoom_out" if rng.random() < 0.5 and zoom_out_fits else "zoom_in"
            aux = self._cut(
                example[f"{view}_input"], {"teacher_output": example[f"{view}_output"]}, example["name"], rng
            )
            patch.update(aux_input=aux["input"], aux_teacher_output=aux["teacher_output"])
        return patch

    def _cut(
        self, low: np.ndarray, outputs: dict[str, np.ndarray], name: str, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """One random patch of ``outputs`` (same-size images) and the matching patch of their
        input ``low`` (the same size or `scale` times smaller), under one random symmetry."""
        scale = next(iter(outputs.values())).shape[0] // low.shape[0]
        size = self.patch_size
        height, width = next(iter(outputs.values())).shape[:2]
        if height < size or width < size:
            # Both sizes are multiples of the scale, so the input is padded by padding / scale.
            outputs = {key: self._pad_small(value, name) for key, value in outputs.items()}
            low = self._pad_small(low, name, size // scale)
            height, width = next(iter(outputs.values())).shape[:2]
        top, _, _ = _patch_and_window(height, size, 0, scale, rng)
        left, _, _ = _patch_and_window(width, size, 0, scale, rng)
        patches = {key: value[top : top + size, left : left + size] for key, value in outputs.items()}
        low_size = size // scale
        low = low[top // scale : top // scale + low_size, left // scale : left // scale + low_size]
        if self.augment:
            transform = int(rng.integers(8))
            (low,), _, _ = _rotate_flip([low], 0, 0, low_size, transform)
            rotated, _, _ = _rotate_flip(list(patches.values()), 0, 0, size, transform)
            patches = dict(zip(patches, rotated))
        return {"input": np.ascontiguousarray(low), **{key: np.ascontiguousarray(v) for key, v in patches.items()}}


@dataclasses.dataclass(frozen=True)
class EvalExample:
    """Mod-crop and fixed degradation of one whole image; noise is seeded by (seed, index)."""

    scale: int
    degradation: degradations.Degradation | None  # None for paired sources
    seed: int

    def __call__(self, index: int, example: dict[str, Any]) -> dict[str, Any]:
        return _prepare(lambda e: self._example(index, e), example, "evaluation image")

    def _example(self, index: int, example: dict[str, Any]) -> dict[str, Any]:
        target = mod_crop(example["target"] if "target" in example else example["image"], self.scale)
        if min(target.shape[:2]) == 0:
            raise ImageTooSmallError(
                f"Image {example['name']} is smaller than the scale {self.scale}; remove it from the evaluation set."
            )
        if self.degradation is None:
            degraded = mod_crop(example["input"], self.scale)
        else:
            degraded = self.degradation(target, np.random.default_rng([self.seed, index]))
        return {"input": degraded, "target": target, "name": example["name"]}
