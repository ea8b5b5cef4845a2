"""`Sharpener`: a model and its parameters ready to sharpen images, and `load`, which makes one.

A `Sharpener` compiles one function per (input shape, settings) from the tiling maths of
`kdjax.serving.tiling` and caches it, so a stream of same-size frames compiles once.
`tile="auto"` (the default) runs whole images when XLA plans little enough scratch memory
for them, else tiles. With tiles (and no self-ensemble) an image is sharpened band by band
(`tiling.predict_band`, one row of tiles per call): each band is cut from the integer input
and its finished rows are written into the integer output as soon as no later band covers
them, so memory is the input and output plus one band, whatever the image size. Images go to
the device as uint8, or as uint16 for 16-bit ones (converted to float32 in [0, 1] tile by tile,
so the model sees all 16 bits), and come back in the same dtype. `load` reads a model through
`kdjax.weights` only, optionally in bfloat16: serving never touches training code.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax import weights
from kdjax.images import quantize, to_rgb
from kdjax.models import build_model, inference_form
from kdjax.models.registry import DTYPES
from kdjax.serving import tiling

if TYPE_CHECKING:
    from kdjax.serving import video

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
    for a sharpening model, `scale` times larger for an upscaling one (`scale` says which);
    uint8 for 8-bit (and float) input, uint16 for uint16 input.

    Compiled functions are cached per (input shape and dtype, tile, overlap, tile_batch, self_ensemble),
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

    def _sharpen_whole(self, params: Any, images: jax.Array, settings: dict[str, Any]) -> jax.Array:
        self.trace_count += 1  # Runs once per trace, not per call.
        return quantize(
            tiling.predict(self._apply, params, images, multiple=self.multiple, scale=self.scale, **settings),
            images.dtype,
        )

    def _sharpen_band(
        self, params: Any, band: jax.Array, *args: jax.Array, cols: tiling.AxisTiles
    ) -> tuple[jax.Array, jax.Array]:
        self.trace_count += 1  # Runs once per trace, not per call.
        output, carried = tiling.predict_band(self._apply, params, band, *args, cols=cols, tile_batch=self.tile_batch)
        return quantize(output, band.dtype), carried

    def compiled(self, shape: Sequence[int], dtype: Any = np.uint8) -> jax.stages.Compiled:
        """The compiled function for (N, H, W, 3) inputs of `shape` and `dtype` (uint8 or uint16)
        and the current settings.

        For whole images (or with the self-ensemble) it maps the images to the outputs, in the
        same dtype; with tiles it is the band function, called once per row of tiles (see the
        module docstring). Exposed for benchmarks (`memory_analysis()`, `cost_analysis()`).
        """
        plan = self._plan(shape, np.dtype(dtype))
        return plan.compiled if isinstance(plan, _Bands) else plan

    def _plan(self, shape: Sequence[int], dtype: np.dtype) -> jax.stages.Compiled | _Bands:
        """The whole-image function, or the band plan, for `shape`, `dtype` and the current settings (cached)."""
        self._check_settings()
        key = (tuple(shape), dtype, self.tile, self.overlap, self.tile_batch, self.self_ensemble, self.memory_budget_mib)
        if key not in self._compiled:
            if self.tile == "auto":
                plan = self._compile(shape, dtype, tile=None)
                if _scratch_mib(plan) > self.memory_budget_mib:
                    plan = self._compile(shape, dtype, tile=AUTO_TILE)
            else:
                plan = self._compile(shape, dtype, tile=self.tile)
            self._compiled[key] = plan
        return self._compiled[key]

    def _compile(self, shape: Sequence[int], dtype: np.dtype, tile: int | None) -> jax.stages.Compiled | _Bands:
        if tile is not None and not self.self_ensemble:
            return self._compile_bands(shape, dtype, tile)
        # The self-ensemble flips and transposes whole images, so it is not cut into bands.
        settings = dict(
            tile=tile, overlap=self.overlap, tile_batch=self.tile_batch, self_ensemble=self.self_ensemble
        )
        fn = jax.jit(functools.partial(self._sharpen_whole, settings=settings))
        return fn.lower(self.params, jax.ShapeDtypeStruct(tuple(shape), dtype)).compile()

    def _compile_bands(self, shape: Sequence[int], dtype: np.dtype, tile: int) -> _Bands:
        _return_large_buffers_to_the_os()
        frames, height, width, channels = shape
        rows_index = tiling.padded_index(height, self.multiple)
        cols_index = tiling.padded_index(width, self.multiple)
        rows = tiling.plan_axis(len(rows_index), tile, self.overlap, self.multiple, self.scale)
        cols = tiling.plan_axis(len(cols_index), tile, self.overlap, self.multiple, self.scale)
        band = jax.ShapeDtypeStruct((frames, rows.size, len(cols_index), channels), dtype)
        carried = jax.ShapeDtypeStruct(
            (frames, tiling.shared_rows(rows), len(cols_index) * self.scale, channels), jnp.float32
        )
        fn = jax.jit(functools.partial(self._sharpen_band, cols=cols))
        compiled = fn.lower(
            self.params, band, jax.ShapeDtypeStruct((rows.size * self.scale,), jnp.float32), carried,
            jax.ShapeDtypeStruct((), jnp.int32),
        ).compile()
        _trim_heap()  # compiling leaves tens of MiB of freed heap behind
        return _Bands(compiled, rows, rows_index, None if len(cols_index) == width else cols_index, carried)

    def _dispatch(self, frames: np.ndarray) -> jax.Array | np.ndarray:
        plan = self._plan(frames.shape, frames.dtype)
        if isinstance(plan, _Bands):
            return self._sharpen_in_bands(plan, frames)
        return plan(self.params, frames)

    def _sharpen_in_bands(self, bands: _Bands, frames: np.ndarray) -> np.ndarray:
        """Runs the band function over the rows of tiles, top to bottom, into an output of the input's dtype."""
        count, height, width, channels = frames.shape
        scale, rows = self.scale, bands.rows
        output = np.empty((count, height * scale, width * scale, channels), frames.dtype)
        carried = np.zeros(bands.carried.shape, bands.carried.dtype)
        row_weights = rows.weights.astype(np.float32)
        # Input rows [top, end) of a tile row are final once it is done: later ones start at `end`.
        ends = [*rows.starts[1:], rows.starts[-1] + rows.size]
        pending = None
        for top, end, weights in zip(rows.starts, ends, row_weights):
            if top + rows.size <= height:
                band = frames[:, top : top + rows.size]  # a view: no copy of the band on the host
            else:
                band = frames[:, bands.rows_index[top : top + rows.size]]  # reaches into the padding
            if bands.cols_index is not None:
                band = band[:, :, bands.cols_index]
            finished, carried = bands.compiled(self.params, band, weights, carried, np.int32(end - top))
            # Copy the previous band's rows while the device works on this one.
            if pending is not None:
                _copy_rows(output, *pending)
            pending = (finished, top * scale, min(end, height) * scale)
        _copy_rows(output, *pending)
        return output

    def sharpen(self, image: np.ndarray) -> np.ndarray:
        """Sharpens (or upscales) one image: HxW, HxWx1, HxWx3 or HxWx4 (uint8, uint16 or float in [0, 1]).

        A uint16 image is sharpened at full precision (the model sees all 16 bits) and comes back
        as uint16; any other is converted to uint8 first (`kdjax.images.to_rgb`; floats are
        rounded to 8 bits, so pass `kdjax.images.quantize(image, np.uint16)` for more). An alpha
        channel is dropped: the model sees RGB (`kdjax.serving.files` keeps alpha in files).

        Returns:
          (H * scale, W * scale, 3) RGB: uint16 for a uint16 image, else uint8.
        """
        return np.asarray(self._dispatch(to_rgb(image)[None]))[0]

    __call__ = sharpen

    def sharpen_video(self, src: str | Path, dst: str | Path, **options: Any) -> video.VideoReport:
        """Sharpens (or upscales) a video file into `dst`, streaming; see `kdjax.serving.video`.

        Frames go through `sharpen_batch` (compiled once per frame size); `options` are those of
        `video.sharpen_video` (batch_size, codec, crf, pix_fmt, codec_options, progress).
        """
        # PyAV is imported for videos only: it adds 16 MiB of resident memory to every process.
        from kdjax.serving import video  # pylint: disable=import-outside-toplevel

        return video.sharpen_video(src, dst, self.sharpen_batch, **options)

    def sharpen_batch(self, images: np.ndarray | Iterable[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Sharpens many images, batching same-size ones (e.g. video frames) into few calls.

        Args:
          images: an (N, H, W, C) array (C in 1, 3, 4) or an iterable of images as accepted by
            `sharpen` (sizes may differ).

        Returns:
          (N, H * scale, W * scale, 3) for an array input, else a list of images in input
          order; uint16 where an input is uint16, else uint8 (as `sharpen`).
        """
        if isinstance(images, np.ndarray) and images.ndim != 4:
            raise ValueError(
                f"sharpen_batch got an array of shape {images.shape}; pass an (N, H, W, C) array or a "
                "list of images (use sharpen for a single image)."
            )
        frames = [to_rgb(image, name=f"images[{index}]") for index, image in enumerate(images)]
        by_shape: dict[tuple[tuple[int, ...], np.dtype], list[int]] = {}
        for index, frame in enumerate(frames):
            by_shape.setdefault((frame.shape, frame.dtype), []).append(index)
        results: list[np.ndarray | None] = [None] * len(frames)
        pending: tuple[list[int], jax.Array] | None = None
        for (shape, _), indices in by_shape.items():
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
            return np.stack(results) if results else np.zeros(empty, np.uint16 if images.dtype == np.uint16 else np.uint8)
        return results


@dataclasses.dataclass(frozen=True)
class _Bands:
    """How images of one shape are sharpened band by band (one row of tiles per call).

    Attributes:
      compiled: the band function `(params, band, row_weights, carried, next_top) -> (uint8
        band, carried)`, see `tiling.predict_band`.
      rows: the row plan of the padded height.
      rows_index: input row of each padded row (`tiling.padded_index`).
      cols_index: input column of each padded column, None when the width needs no padding.
      carried: shape and dtype of the float32 rows carried from call to call.
    """

    compiled: jax.stages.Compiled
    rows: tiling.AxisTiles
    rows_index: np.ndarray
    cols_index: np.ndarray | None
    carried: jax.ShapeDtypeStruct


def _libc() -> ctypes.CDLL | None:
    """glibc, where there is one (Linux); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _trim_heap() -> None:
    """Returns the free pages at the top and inside of glibc's heap to the OS (``malloc_trim``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _return_large_buffers_to_the_os() -> None:
    """Has glibc map every allocation of 1 MiB or more on its own, returned to the OS when freed.

    Band by band, each call allocates and frees band-sized buffers (tens of MiB); glibc's
    default raises its mmap threshold after such frees and serves the next ones from the
    heap, which then fragments and keeps growing: a 100-megapixel image peaked at 1.11 GiB
    RSS that way and at 0.98 GiB with this setting (benchmarks/large_image.py). Process-wide
    and harmless elsewhere (large numpy arrays are mmapped anyway); a no-op without glibc.
    """
    libc = _libc()
    if libc is not None:
        m_mmap_threshold = -3  # glibc's <malloc.h>
        libc.mallopt(m_mmap_threshold, 1 << 20)


def _copy_rows(output: np.ndarray, band: jax.Array, first: int, stop: int) -> None:
    """Copies a band's finished output rows [first, stop) (image coordinates) into `output`."""
    if stop > first:
        output[:, first:stop] = np.asarray(band)[:, : stop - first, : output.shape[2]]


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
    dtype: str | None = None,
) -> Sharpener:
    """A `Sharpener` for a released model, a model folder or a training workdir.

    Only the model's parameters are read (see `kdjax.weights`): no optimizer, no teacher.

    Args:
      model: a released model's name (`"rep_kd_sharpen_x2"`, see `kdjax.weights.released_models`),
        a model folder (`config.json` and `params.msgpack`) or a training workdir
        (`config.json` and `checkpoints/`; the student of a distillation run).
      which: `"best"` (highest validation PSNR) or `"latest"` checkpoint (a workdir only).
      ema: use the exponential moving average of the parameters when the run kept one.
      tile, overlap, tile_batch, self_ensemble, memory_budget_mib: see `Sharpener`.
      dtype: the compute dtype, "float32" or "bfloat16" (parameters stay float32; outputs are
        rounded to the image's 8 or 16 bits all the same); None keeps the model config's
        (float32 for every released model).

    Raises:
      ValueError: `dtype` is not one of those.
    """
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not a compute dtype kdjax models run in; pass one of {', '.join(DTYPES)}.")
    config, params = weights.restore_params(model, which=which, ema=ema)
    # The deployable form: a re-parameterisable student runs as plain convolutions.
    model_config, params = inference_form(config.model, params)
    return Sharpener(
        build_model({**model_config, "dtype": dtype or model_config.get("dtype")}),
        params,
        tile=tile,
        overlap=overlap,
        tile_batch=tile_batch,
        self_ensemble=self_ensemble,
        memory_budget_mib=memory_budget_mib,
    )
