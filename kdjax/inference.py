"""Inference with trained sharpening models: tiled jitted prediction, `Sharpener`, `load`, and
`sharpen_paths` (files and folders) for `launch.py --mode=sharpen`.

How an image is predicted (all inside one jitted function per input shape and settings):

1. Reflect-pad the uint8 images on device, bottom/right, to a multiple of the model's size
   multiple (Swin window, pixel-shuffle factor), exactly as the models pad themselves. Tiles
   are converted to float32 in [0, 1] as they are cut, so no float copy of the input exists.
2. Each axis is cut into the fewest overlapping tiles of at most `tile` pixels, shrunk to
   share the axis evenly (1080 rows with tile 512 -> 3 tiles of 384, not 3 of 512). Starts and
   sizes are multiples of the size multiple, so every tile sees the attention-window grid of
   the whole image. The last tile ends at the image edge, so tiles touching the border see the
   same border as the whole image.
3. Tiles run through the model `tile_batch` at a time inside a `lax.scan`; each output tile is
   weighted by a separable window and overlap-added into one float32 image-sized accumulator,
   so peak memory is that accumulator, the uint8 input and one tile batch of activations.
4. Blend window: in each overlap shared by two tiles, the quarter next to each tile's edge
   gets weight 0 from that tile (the receptive field of those pixels is cut by the tile edge;
   the neighbour covers them with weight 1), and the middle half cross-fades with a raised
   cosine (sin^2 / cos^2, a partition of unity). Image borders get no ramp, so every pixel has
   a total weight > 0; weights are normalised by that total, in numpy at trace time. Hence
   no seams, and a conv model whose receptive-field radius is at most a quarter of the overlap
   gives exactly its untiled output.
5. Optional x8 self-ensemble (the dihedral group: 4 flips of the image and of its transpose),
   predictions mapped back and averaged.
6. Crop, clip to [0, 1], round to uint8.

`tile=None` (or an image no larger than a tile) runs whole images; `tile="auto"` (the default)
runs whole images when XLA plans little enough scratch memory for them, else tiles.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from tqdm import tqdm

from kdjax import checkpoints
from kdjax.images import IMAGE_EXTENSIONS, ImageReadError, read_image, to_rgb_uint8, write_image
from kdjax.models import build_model
from kdjax.models.students import RealtimeCNN, SeparableUNet
from kdjax.models.teacher import SwinIR

logger = logging.getLogger(__name__)

ApplyFn = Callable[[Any, jax.Array], jax.Array]

# `tile="auto"` runs whole images when XLA plans at most this much scratch memory for them,
# else tiles of this size.
AUTO_TILE = 512
DEFAULT_MEMORY_BUDGET_MIB = 2048

# Pixels per jitted call in `sharpen_batch` (frames x H x W): about four 1080p frames, so the
# image-sized buffers stay a few hundred MB whatever the number of frames passed.
MAX_PIXELS_PER_CALL = 4 * 1920 * 1080


def size_multiple(model: nn.Module) -> int:
    """The factor a model pads H and W up to internally (1 for full-resolution CNNs)."""
    if isinstance(model, SwinIR):
        return model.window_size
    if isinstance(model, RealtimeCNN):
        return model.shuffle_factor
    if isinstance(model, SeparableUNet):
        return 2  # one stride-2 downsampling
    return 1


@dataclasses.dataclass(frozen=True)
class AxisTiles:
    """How one image axis is cut into tiles.

    Attributes:
      starts: first pixel of each tile.
      size: tile length (the same for every tile).
      weights: (len(starts), size) blend weights, already normalised so that the weights of
        all tiles covering a pixel sum to 1.
    """

    starts: np.ndarray
    size: int
    weights: np.ndarray


def _crossfade(shared: int) -> np.ndarray:
    """Weight of the later tile over a span of `shared` pixels common to two tiles.

    0 on the first quarter (the later tile's own edge), 1 on the last quarter (the earlier
    tile's edge, which gets 1 - this), a raised-cosine ramp between.
    """
    margin = shared // 4
    ramp = shared - 2 * margin
    phase = (np.arange(shared) - margin + 0.5) / ramp
    return np.sin(0.5 * np.pi * np.clip(phase, 0.0, 1.0)) ** 2


def plan_axis(length: int, tile: int | None, overlap: int, multiple: int = 1) -> AxisTiles:
    """Cuts an axis of `length` pixels (a multiple of `multiple`) into overlapping tiles.

    `tile` is the largest tile size (rounded down to a multiple of `multiple`). The axis gets
    the fewest tiles of that size whose neighbours share at least `overlap` pixels; the tiles
    are then shrunk to the smallest size (a multiple of `multiple`) that still covers the axis
    with that many tiles, so little is recomputed (1080 px with tile 512: 3 tiles of 384, not
    3 of 512). Starts are spread evenly from 0 to `length - size`, on multiples of `multiple`.
    One whole-axis tile when `tile` is None or the axis fits in a tile.
    """
    largest = length if tile is None else max(multiple, tile // multiple * multiple)
    if length <= largest:
        return AxisTiles(starts=np.zeros(1, np.int32), size=length, weights=np.ones((1, length)))
    overlap = min(overlap, largest - multiple)  # neighbours must start at least `multiple` apart
    stride = (largest - overlap) // multiple * multiple
    count = -(-(length - largest) // stride) + 1

    def spread(size: int) -> np.ndarray:
        return np.round(np.linspace(0, (length - size) // multiple, count)).astype(np.int32) * multiple

    # Terminates at `largest` at the latest, where the gaps are at most `stride`.
    size = -(-(length + (count - 1) * overlap) // count)
    size += -size % multiple
    while np.diff(spread(size)).max() > size - overlap:
        size += multiple
    starts = spread(size)
    windows = np.ones((count, size))
    for index in range(count - 1):
        shared = int(starts[index] + size - starts[index + 1])
        fade_in = _crossfade(shared)
        windows[index + 1, :shared] *= fade_in
        windows[index, size - shared :] *= 1.0 - fade_in
    coverage = np.zeros(length)
    for start, window in zip(starts, windows):
        coverage[start : start + size] += window
    assert coverage.min() > 0, "every pixel must be covered by some tile"  # by construction
    weights = np.stack([w / coverage[s : s + size] for s, w in zip(starts, windows)])
    return AxisTiles(starts=starts, size=size, weights=weights)


def _unit_float(images: jax.Array) -> jax.Array:
    """uint8 (or other integer) images to float32 in [0, 1]; float images unchanged."""
    if jnp.issubdtype(images.dtype, jnp.integer):
        return images.astype(jnp.float32) / float(jnp.iinfo(images.dtype).max)
    return images.astype(jnp.float32)


def _blend_tiles(
    apply_fn: ApplyFn,
    params: Any,
    images: jax.Array,
    rows: AxisTiles,
    cols: AxisTiles,
    tile_batch: int,
) -> jax.Array:
    """Runs the model over all tiles of all frames and overlap-adds the weighted outputs."""
    frames, height, width, channels = images.shape
    frame, row, col = (
        a.ravel()
        for a in np.meshgrid(
            np.arange(frames), np.arange(len(rows.starts)), np.arange(len(cols.starts)), indexing="ij"
        )
    )
    # As many scan steps as `tile_batch` needs, with batches as even as possible, so the
    # filler tiles that complete the last batch (weight 0) are fewer than the steps.
    steps = -(-frame.size // tile_batch)
    batch = -(-frame.size // steps)
    filler = steps * batch - frame.size
    valid = np.concatenate([np.ones(frame.size), np.zeros(filler)])
    frame, row, col = (np.concatenate([a, np.zeros(filler, a.dtype)]) for a in (frame, row, col))
    schedule = {
        "frame": frame,
        "top": rows.starts[row],
        "left": cols.starts[col],
        "row_weights": (rows.weights[row] * valid[:, None]).astype(np.float32),
        "col_weights": cols.weights[col].astype(np.float32),
    }
    schedule = {key: value.reshape(steps, batch, *value.shape[1:]) for key, value in schedule.items()}
    tile_shape = (1, rows.size, cols.size, channels)

    def cut(f, top, left):
        return lax.dynamic_slice(images, (f, top, left, 0), tile_shape)[0]

    def step(canvas, tiles_at):
        tiles = _unit_float(jax.vmap(cut)(tiles_at["frame"], tiles_at["top"], tiles_at["left"]))
        window = tiles_at["row_weights"][:, :, None, None] * tiles_at["col_weights"][:, None, :, None]
        outputs = apply_fn(params, tiles).astype(jnp.float32) * window

        def add(index, canvas):
            at = (tiles_at["frame"][index], tiles_at["top"][index], tiles_at["left"][index], 0)
            patch = lax.dynamic_slice(canvas, at, tile_shape) + outputs[index][None]
            return lax.dynamic_update_slice(canvas, patch, at)

        return lax.fori_loop(0, batch, add, canvas), None

    canvas = jnp.zeros((frames, height, width, channels), jnp.float32)
    canvas, _ = lax.scan(step, canvas, schedule)
    return canvas


def _predict_tiled(
    apply_fn: ApplyFn, params: Any, images: jax.Array, tile: int | None, overlap: int, tile_batch: int, multiple: int
) -> jax.Array:
    rows = plan_axis(images.shape[1], tile, overlap, multiple)
    cols = plan_axis(images.shape[2], tile, overlap, multiple)
    return _blend_tiles(apply_fn, params, images, rows, cols, tile_batch)


def _flip(images: jax.Array, code: jax.Array) -> jax.Array:
    """Flips H when bit 1 of `code` is set and W when bit 0 is; its own inverse."""
    images = lax.cond(code // 2 == 1, functools.partial(jnp.flip, axis=1), lambda a: a, images)
    return lax.cond(code % 2 == 1, functools.partial(jnp.flip, axis=2), lambda a: a, images)


def predict(
    apply_fn: ApplyFn,
    params: Any,
    images: jax.Array,
    *,
    tile: int | None,
    overlap: int,
    tile_batch: int,
    self_ensemble: bool = False,
    multiple: int = 1,
) -> jax.Array:
    """Tiled model prediction for (N, H, W, C) images; pure and jittable.

    Args:
      apply_fn: `(params, x) -> y` for an NHWC batch of tiles.
      params: passed to `apply_fn` unchanged.
      images: (N, H, W, C), any H, W: float in [0, 1], or uint8 (converted tile by tile, so
        no float copy of the whole input is made).
      tile: largest tile side in pixels (see `plan_axis`), or None for whole images.
      overlap: least number of pixels shared by neighbouring tiles, at most tile / 2.
      tile_batch: tiles per model call; bounds the activation memory.
      self_ensemble: average the predictions of the 8 flips/rotations (8x the compute).
      multiple: the model's size multiple (see `size_multiple`).

    Returns:
      (N, H, W, C) float32 predictions, not clipped.
    """
    height, width = images.shape[1:3]
    pad = ((0, 0), (0, -height % multiple), (0, -width % multiple), (0, 0))
    padded = jnp.pad(images, pad, mode="reflect") if any(p for _, p in pad) else images
    run = functools.partial(
        _predict_tiled, apply_fn, params, tile=tile, overlap=overlap, tile_batch=tile_batch, multiple=multiple
    )
    if not self_ensemble:
        return run(padded)[:, :height, :width]

    def flipped_sum(x: jax.Array) -> jax.Array:
        # A loop, not a batch of 4, so the image-sized buffers are not multiplied by 4.
        return lax.fori_loop(
            0, 4, lambda code, total: total + _flip(run(_flip(x, code)), code), jnp.zeros(x.shape, jnp.float32)
        )

    transposed = einops.rearrange(padded, "n h w c -> n w h c")
    total = flipped_sum(padded) + einops.rearrange(flipped_sum(transposed), "n w h c -> n h w c")
    return total[:, :height, :width] / 8.0


def _to_uint8(images: jax.Array) -> jax.Array:
    return jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0).astype(jnp.uint8)


class Sharpener:
    """A model and its parameters (held on device) ready to sharpen uint8 images.

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
        self.multiple = size_multiple(model)
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
        return _to_uint8(predict(self._apply, params, images, multiple=self.multiple, **settings))

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
        """Sharpens one image: HxW, HxWx1, HxWx3 or HxWx4 (uint8, uint16 or float in [0, 1]).

        Returns:
          uint8 (H, W, 3) RGB.
        """
        return np.asarray(self._dispatch(to_rgb_uint8(image)[None]))[0]

    def sharpen_batch(self, images: np.ndarray | Iterable[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Sharpens many images, batching same-size ones (e.g. video frames) into few calls.

        Args:
          images: an (N, H, W, C) array (C in 1, 3, 4) or an iterable of images as accepted by
            `sharpen` (sizes may differ).

        Returns:
          uint8 (N, H, W, 3) for an array input, else a list of uint8 (H, W, 3) in input order.
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
            per_call = max(1, MAX_PIXELS_PER_CALL // (shape[0] * shape[1]))
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
            return np.stack(results) if results else np.zeros((0, *images.shape[1:3], 3), np.uint8)
        return results


def _scratch_mib(compiled: jax.stages.Compiled) -> float:
    """XLA's planned scratch memory; infinite where the backend does not report it."""
    memory = compiled.memory_analysis()
    return float("inf") if memory is None else memory.temp_size_in_bytes / 2**20


def _store(results: list, indices: list[int], outputs: jax.Array) -> None:
    for index, output in zip(indices, np.asarray(outputs)):
        results[index] = output


def load(
    workdir: str | Path,
    *,
    which: str = "best",
    ema: bool = True,
    tile: int | str | None = "auto",
    overlap: int = 32,
    tile_batch: int = 4,
    self_ensemble: bool = False,
    memory_budget_mib: float = DEFAULT_MEMORY_BUDGET_MIB,
) -> Sharpener:
    """A `Sharpener` for the model trained in `workdir` (the student of a distillation run).

    Args:
      workdir: a training workdir (`config.json` and `checkpoints/`) or an exported
        folder (`config.json` and `params.msgpack`), e.g. `pretrained/realtime_kd_x2`.
      which: `"best"` (highest validation PSNR) or `"latest"` checkpoint (a workdir only).
      ema: use the exponential moving average of the parameters when the run kept one.
      tile, overlap, tile_batch, self_ensemble, memory_budget_mib: see `Sharpener`.
    """
    config, params = checkpoints.restore_params(workdir, which=which, ema=ema)
    return Sharpener(
        build_model(config.model),
        params,
        tile=tile,
        overlap=overlap,
        tile_batch=tile_batch,
        self_ensemble=self_ensemble,
        memory_budget_mib=memory_budget_mib,
    )


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _plan_outputs(source: Path, target: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs for a file or a folder of images; refuses to overwrite inputs."""
    if not source.exists():
        raise FileNotFoundError(f"Input {source} does not exist; pass an image file or a folder of images.")
    if source.is_file():
        if target.is_dir() or (not target.exists() and not target.suffix):
            jobs = [(source, target / f"{source.stem}.png")]
        elif target.suffix.lower() in IMAGE_EXTENSIONS:
            jobs = [(source, target)]
        else:
            raise ValueError(
                f"Output {target} is neither a folder nor an image file name; end it in .png or pass a folder."
            )
    else:
        if target.exists() and not target.is_dir():
            raise ValueError(f"Output {target} is a file but input {source} is a folder; pass an output folder.")
        if target.resolve() == source.resolve():
            raise ValueError(
                f"Output folder {target} is the input folder; choose another output folder so inputs are kept."
            )
        skip = target.resolve()  # An output folder nested in the input is not read back as input.
        inputs = [
            path
            for path in sorted(source.rglob("*"))
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not _is_within(path.resolve(), skip)
        ]
        if not inputs:
            raise FileNotFoundError(
                f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {source}; check the input folder."
            )
        jobs = [(path, target / path.relative_to(source).with_suffix(".png")) for path in inputs]
    resolved_inputs = {src.resolve(): src for src, _ in jobs}
    written_by: dict[Path, Path] = {}
    for src, dst in jobs:
        resolved = dst.resolve()
        if resolved in resolved_inputs:
            raise ValueError(
                f"Output {dst} would overwrite input {resolved_inputs[resolved]}; choose another output path."
            )
        if resolved in written_by:
            raise ValueError(f"Inputs {written_by[resolved]} and {src} would both be written to {dst}; rename one.")
        written_by[resolved] = src
    return jobs


def sharpen_paths(
    sharpener: Sharpener, input_path: str | Path, output_path: str | Path, *, overwrite: bool = False
) -> list[Path]:
    """Sharpens an image file, or every image under a folder (recursively), into PNG files.

    A folder's structure and file names are mirrored under `output_path` (suffix `.png`).
    A single file goes to `output_path` if it is an image file name, else into that folder.
    Unreadable images in a folder and existing outputs (unless `overwrite`) are skipped with
    a warning; for a single file they are errors. An input is never overwritten.

    Returns:
      The output files written.
    """
    source = Path(input_path)
    jobs = _plan_outputs(source, Path(output_path))
    single = source.is_file()
    written = []
    for src, dst in tqdm(jobs, desc="sharpen", unit="image", disable=single):
        if dst.exists() and not overwrite:
            message = f"Output {dst} already exists; delete it, choose another output, or pass overwrite=True."
            if single:
                raise ValueError(message)
            logger.warning("Skipping %s: %s", src, message)
            continue
        try:
            image = read_image(src)
        except ImageReadError as error:
            if single:
                raise
            logger.warning("Skipping %s: %s", src, error)
            continue
        write_image(dst, sharpener.sharpen(image))
        written.append(dst)
    return written
