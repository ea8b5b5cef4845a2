"""`Sharpener`: a model and its parameters ready to sharpen images, and `load`, which makes one.

A `Sharpener` compiles one function per (input shape, settings) from the tiling maths of
`kdjax.serving.tiling` and caches it, so a stream of same-size frames compiles once.
`tile="auto"` (the default) runs whole images when XLA plans little enough scratch memory
for them, else tiles. `load` reads a model through `kdjax.weights` only: serving never
touches training code.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax import weights
from kdjax.images import to_rgb_uint8, to_uint8
from kdjax.models import build_model
from kdjax.serving.tiling import predict

# `tile="auto"` runs whole images when XLA plans at most this much scratch memory for them,
# else tiles of this size.
AUTO_TILE = 512
DEFAULT_MEMORY_BUDGET_MIB = 2048

# Output pixels per jitted call in `sharpen_batch` (frames x H x W): about four 1080p frames,
# so the image-sized buffers stay a few hundred MB whatever the number of frames passed.
MAX_PIXELS_PER_CALL = 4 * 1920 * 1080


class Sharpener:
    """A model and its parameters (held on device) ready to sharpen or upscale images.

    `sharpener(image)` (or `sharpen`) returns the model's output for one image: the same size
    for a sharpening model, `scale` times larger for an upscaling one (`scale` says which).

    Compiled functions are cached per (input shape, tile, overlap, tile_batch, self_ensemble),
    so a stream of same-size frames compiles once. The settings are plain attributes and may
    be changed between calls.

    Attributes:
      model: the Flax module (`__call__(x, *, train=False)`).
      params: its parameters (the `"params"` collection), on the default device.
      tile: largest tile side in pixels (tiles are shrunk to share each axis evenly), None
        for whole images, or "auto": whole images when XLA plans at most
        `memory_budget_mib` of scratch memory for them (the CNN students at 1080p, where
        whole frames are faster), else tiles of `AUTO_TILE` (the Swin teachers).
      overlap: least number of pixels shared by neighbouring tiles, at most tile / 2; conv
        models whose receptive-field radius is at most overlap / 4 give exactly their untiled
        output.
      tile_batch: tiles (or whole frames) per model call; bounds activation memory.
      self_ensemble: average over the 8 flips/rotations (8x slower, usually a little better).
      memory_budget_mib: the scratch memory `tile="auto"` allows a whole-image call.
      trace_count: how many times the prediction function has been traced (compiled).
    """

    def __init__(
        self,
        model: nn.Module,
        params: Any,
        *,
        tile: int | str | None = "auto",
        overlap: int = 32,
        tile_batch: int = 4,
        self_ensemble: bool = False,
        memory_budget_mib: float = DEFAULT_MEMORY_BUDGET_MIB,
    ):
        self.model = model
        self.params = jax.device_put(params)
        self.tile = tile
        self.overlap = overlap
        self.tile_batch = tile_batch
        self.self_ensemble = self_ensemble
        self.memory_budget_mib = memory_budget_mib
        self.multiple = model.size_multiple
        self.scale = model.scale
        self.trace_count = 0
        self._compiled: dict[tuple, jax.stages.Compiled] = {}
        self._check_settings()

    def _check_settings(self) -> None:
        if self.tile == "auto":
            tile = AUTO_TILE
        elif self.tile is None or (isinstance(self.tile, int) and self.tile >= 1):
            tile = self.tile
        else:
            raise ValueError(
                f"tile={self.tile!r} must be a positive number of pixels, None for whole images, or 'auto'."
            )
        if self.overlap < 0 or (tile is not None and 2 * self.overlap > tile):
            raise ValueError(f"overlap={self.overlap} must be >= 0 and at most half of tile={self.tile}.")
        if self.tile_batch < 1:
            raise ValueError(f"tile_batch={self.tile_batch} must be at least 1.")

    def _apply(self, params: Any, x: jax.Array) -> jax.Array:
        return self.model.apply({"params": params}, x, train=False)

    def _sharpen_uint8(self, params: Any, images: jax.Array, settings: dict[str, Any]) -> jax.Array:
        self.trace_count += 1  # Runs once per trace, not per call.
        return to_uint8(predict(self._apply, params, images, multiple=self.multiple, scale=self.scale, **settings))

    def compiled(self, shape: Sequence[int]) -> jax.stages.Compiled:
        """The compiled uint8 (N, H, W, 3) -> uint8 function for `shape` and the current settings.

        Exposed for benchmarks (`memory_analysis()`, `cost_analysis()`).
        """
        self._check_settings()
        key = (tuple(shape), self.tile, self.overlap, self.tile_batch, self.self_ensemble, self.memory_budget_mib)
        if key not in self._compiled:
            if self.tile == "auto":
                compiled = self._compile(shape, tile=None)
                if _scratch_mib(compiled) > self.memory_budget_mib:
                    compiled = self._compile(shape, tile=AUTO_TILE)
            else:
                compiled = self._compile(shape, tile=self.tile)
            self._compiled[key] = compiled
        return self._compiled[key]

    def _compile(self, shape: Sequence[int], tile: int | None) -> jax.stages.Compiled:
        settings = dict(
            tile=tile, overlap=self.overlap, tile_batch=self.tile_batch, self_ensemble=self.self_ensemble
        )
        fn = jax.jit(functools.partial(self._sharpen_uint8, settings=settings))
        return fn.lower(self.params, jax.ShapeDtypeStruct(tuple(shape), jnp.uint8)).compile()

    def _dispatch(self, frames: np.ndarray) -> jax.Array:
        return self.compiled(frames.shape)(self.params, frames)

    def sharpen(self, image: np.ndarray) -> np.ndarray:
        """Sharpens (or upscales) one image: HxW, HxWx1, HxWx3 or HxWx4 (uint8, uint16 or float in [0, 1]).

        Returns:
          uint8 (H * scale, W * scale, 3) RGB.
        """
        return np.asarray(self._dispatch(to_rgb_uint8(image)[None]))[0]

    __call__ = sharpen

    def sharpen_batch(self, images: np.ndarray | Iterable[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Sharpens many images, batching same-size ones (e.g. video frames) into few calls.

        Args:
          images: an (N, H, W, C) array (C in 1, 3, 4) or an iterable of images as accepted by
            `sharpen` (sizes may differ).

        Returns:
          uint8 (N, H * scale, W * scale, 3) for an array input, else a list of uint8 images in
          input order.
        """
        if isinstance(images, np.ndarray) and images.ndim != 4:
            raise ValueError(
                f"sharpen_batch got an array of shape {images.shape}; pass an (N, H, W, C) array or a "
                "list of images (use sharpen for a single image)."
            )
        frames = [to_rgb_uint8(image, name=f"images[{index}]") for index, image in enumerate(images)]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, frame in enumerate(frames):
            by_shape.setdefault(frame.shape, []).append(index)
        results: list[np.ndarray | None] = [None] * len(frames)
        pending: tuple[list[int], jax.Array] | None = None
        for shape, indices in by_shape.items():
            per_call = max(1, MAX_PIXELS_PER_CALL // (shape[0] * shape[1] * self.scale**2))
            for first in range(0, len(indices), per_call):
                chunk = indices[first : first + per_call]
                # Dispatch the next chunk before fetching the previous one, so the host copy
                # overlaps with device work.
                running = (chunk, self._dispatch(np.stack([frames[i] for i in chunk])))
                if pending is not None:
                    _store(results, *pending)
                pending = running
        if pending is not None:
            _store(results, *pending)
        if isinstance(images, np.ndarray):
            empty = (0, images.shape[1] * self.scale, images.shape[2] * self.scale, 3)
            return np.stack(results) if results else np.zeros(empty, np.uint8)
        return results


def _scratch_mib(compiled: jax.stages.Compiled) -> float:
    """XLA's planned scratch memory; infinite where the backend does not report it."""
    memory = compiled.memory_analysis()
    return float("inf") if memory is None else memory.temp_size_in_bytes / 2**20


def _store(results: list, indices: list[int], outputs: jax.Array) -> None:
    for index, output in zip(indices, np.asarray(outputs)):
        results[index] = output


def load(
    model: str | Path,
    *,
    which: str = "best",
    ema: bool = True,
    tile: int | str | None = "auto",
    overlap: int = 32,
    tile_batch: int = 4,
    self_ensemble: bool = False,
    memory_budget_mib: float = DEFAULT_MEMORY_BUDGET_MIB,
) -> Sharpener:
    """A `Sharpener` for a released model, a model folder or a training workdir.

    Only the model's parameters are read (see `kdjax.weights`): no optimizer, no teacher.

    Args:
      model: a released model's name (`"realtime_kd_x2"`, see `kdjax.weights.released_models`),
        a model folder (`config.json` and `params.msgpack`) or a training workdir
        (`config.json` and `checkpoints/`; the student of a distillation run).
      which: `"best"` (highest validation PSNR) or `"latest"` checkpoint (a workdir only).
      ema: use the exponential moving average of the parameters when the run kept one.
      tile, overlap, tile_batch, self_ensemble, memory_budget_mib: see `Sharpener`.
    """
    config, params = weights.restore_params(model, which=which, ema=ema)
    return Sharpener(
        build_model(config.model),
        params,
        tile=tile,
        overlap=overlap,
        tile_batch=tile_batch,
        self_ensemble=self_ensemble,
        memory_budget_mib=memory_budget_mib,
    )
