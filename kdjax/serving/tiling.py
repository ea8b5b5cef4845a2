"""Tiled prediction: the pure, jittable maths of running a model over an image in tiles.

How an image is predicted by `predict` (all inside one jitted function per input shape and
settings; `predict_band` is the same maths one row of tiles at a time, see below):

1. Reflect-pad the integer (uint8 or uint16) images on device, bottom/right, to a multiple of
   the model's size multiple (Swin window, pixel-shuffle factor), as the models pad themselves. Tiles
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

In the upscale task (a model whose output is `scale` times larger) tiles are cut in input
coordinates as above, and their outputs are weighted and added in output coordinates: starts,
sizes and overlaps times `scale`, so the blending is as seamless as at scale 1.

Band by band: `predict` keeps an image-sized float32 accumulator (about 12 bytes per pixel,
more with the ensemble). `predict_band` runs one row of tiles (a *band*) onto the rows the
previous band left unfinished, in the same order and with the same weights, so a caller
(`kdjax.serving.sharpener`) can cut each band from the uint8 image, keep only the rows of
the band that are final, and hold no float copy of the image: what is handed from band to
band is only the rows two bands share, so memory is one band, whatever the image height. Every band of an image has the same shapes, so it compiles once.
`padded_index` cuts a band of the padded image without padding the whole image.

`tile=None` (or an image no larger than a tile) runs whole images. Nothing here knows a
model class: `predict` takes an apply function, the model's size multiple and its scale.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import einops
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kdjax.images import to_unit_float
from kdjax.models.layers import pad_to_multiple

ApplyFn = Callable[[Any, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class AxisTiles:
    """How one image axis is cut into tiles.

    Tiles are cut from the input and blended in the output, `scale` times larger (the
    upscale task); with scale 1 both are the same axis.

    Attributes:
      starts: first input pixel of each tile.
      size: tile length in input pixels (the same for every tile).
      weights: (len(starts), size * scale) blend weights of the output tiles, already
        normalised so that the weights of all tiles covering an output pixel sum to 1.
      scale: output pixels per input pixel.
    """

    starts: np.ndarray
    size: int
    weights: np.ndarray
    scale: int = 1


def _crossfade(shared: int) -> np.ndarray:
    """Weight of the later tile over a span of `shared` pixels common to two tiles.

    0 on the first quarter (the later tile's own edge), 1 on the last quarter (the earlier
    tile's edge, which gets 1 - this), a raised-cosine ramp between.
    """
    margin = shared // 4
    ramp = shared - 2 * margin
    phase = (np.arange(shared) - margin + 0.5) / ramp
    return np.sin(0.5 * np.pi * np.clip(phase, 0.0, 1.0)) ** 2


def plan_axis(length: int, tile: int | None, overlap: int, multiple: int = 1, scale: int = 1) -> AxisTiles:
    """Cuts an input axis of `length` pixels (a multiple of `multiple`) into overlapping tiles.

    `tile` is the largest tile size (rounded down to a multiple of `multiple`). The axis gets
    the fewest tiles of that size whose neighbours share at least `overlap` pixels; the tiles
    are then shrunk to the smallest size (a multiple of `multiple`) that still covers the axis
    with that many tiles, so little is recomputed (1080 px with tile 512: 3 tiles of 384, not
    3 of 512). Starts are spread evenly from 0 to `length - size`, on multiples of `multiple`.
    One whole-axis tile when `tile` is None or the axis fits in a tile. The blend weights are
    those of the output axis, `scale` times longer (see `AxisTiles`).
    """
    largest = length if tile is None else max(multiple, tile // multiple * multiple)
    if length <= largest:
        return AxisTiles(starts=np.zeros(1, np.int32), size=length, weights=np.ones((1, length * scale)), scale=scale)
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
    return AxisTiles(starts=starts, size=size, weights=_blend_weights(starts * scale, size * scale, length * scale), scale=scale)


def _blend_weights(starts: np.ndarray, size: int, length: int) -> np.ndarray:
    """Normalised blend windows of tiles of `size` starting at `starts` on an axis of `length`."""
    count = len(starts)
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
    return np.stack([w / coverage[s : s + size] for s, w in zip(starts, windows)])


def _blend_tiles(
    apply_fn: ApplyFn,
    params: Any,
    images: jax.Array,
    rows: AxisTiles,
    cols: AxisTiles,
    tile_batch: int,
    canvas: jax.Array | None = None,
) -> jax.Array:
    """Runs the model over all tiles of all frames and overlap-adds the weighted outputs.

    The outputs are added onto `canvas` (zeros by default), in the order frame, row, column;
    `rows.weights` may be a traced array (a band's row weights are an argument).
    """
    frames, height, width, channels = images.shape
    scale = rows.scale
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
    output_tile_shape = (1, rows.size * scale, cols.size * scale, channels)

    def cut(f, top, left):
        return lax.dynamic_slice(images, (f, top, left, 0), tile_shape)[0]

    def step(canvas, tiles_at):
        tiles = to_unit_float(jax.vmap(cut)(tiles_at["frame"], tiles_at["top"], tiles_at["left"]))
        window = tiles_at["row_weights"][:, :, None, None] * tiles_at["col_weights"][:, None, :, None]
        outputs = apply_fn(params, tiles).astype(jnp.float32) * window

        def add(index, canvas):
            at = (tiles_at["frame"][index], tiles_at["top"][index] * scale, tiles_at["left"][index] * scale, 0)
            patch = lax.dynamic_slice(canvas, at, output_tile_shape) + outputs[index][None]
            return lax.dynamic_update_slice(canvas, patch, at)

        return lax.fori_loop(0, batch, add, canvas), None

    if canvas is None:
        canvas = jnp.zeros((frames, height * scale, width * scale, channels), jnp.float32)
    canvas, _ = lax.scan(step, canvas, schedule)
    return canvas


def _predict_tiled(
    apply_fn: ApplyFn,
    params: Any,
    images: jax.Array,
    tile: int | None,
    overlap: int,
    tile_batch: int,
    multiple: int,
    scale: int,
) -> jax.Array:
    rows = plan_axis(images.shape[1], tile, overlap, multiple, scale)
    cols = plan_axis(images.shape[2], tile, overlap, multiple, scale)
    return _blend_tiles(apply_fn, params, images, rows, cols, tile_batch)


def padded_index(length: int, multiple: int) -> np.ndarray:
    """Which input pixel each pixel of an axis padded by `pad_to_multiple` holds (reflection).

    Lets the band-by-band path cut a band of the padded image without padding the whole image.
    """
    return np.pad(np.arange(length), (0, -length % multiple), mode="reflect")


def predict_band(
    apply_fn: ApplyFn,
    params: Any,
    band: jax.Array,
    row_weights: jax.Array,
    carried: jax.Array,
    next_top: jax.Array,
    *,
    cols: AxisTiles,
    tile_batch: int,
) -> tuple[jax.Array, jax.Array]:
    """One row of tiles, overlap-added onto what the rows of tiles above it left; jittable.

    The band-by-band form of `predict` (tiles, `self_ensemble=False`): called once per tile row
    of the padded image (`plan_axis` of its height), top to bottom, with the same shapes for
    every row, so one compiled function serves the whole image and its memory is that of one
    band, whatever the image height. Each tile's weighted output is added in the same order and
    with the same weights as in `predict`.

    Args:
      apply_fn, params: as in `predict`.
      band: (N, size, W, C) the input rows of this tile row (of the padded image; W padded).
      row_weights: (size * scale,) float32 blend weights of this tile row (`AxisTiles.weights`).
      carried: (N, shared, W * scale, C) float32, the second output of the previous call (zeros
        for the first tile row); `shared` is the most output rows two neighbouring tile rows
        share.
      next_top: input rows from this tile row's first row to the next tile row's (`size` for
        the last one).
      cols: the column plan (`plan_axis` of the padded width).
      tile_batch: as in `predict`.

    Returns:
      `(output, carried)`: (N, size * scale, W * scale, C) float32, not clipped, the output rows
      of this tile row with every tile row so far added in (those above `next_top * scale` are
      final), and what the next call takes as `carried`.
    """
    frames, size, width, channels = band.shape
    scale, shared = cols.scale, carried.shape[1]
    # `shared` zero rows below the band, so the rows handed on are never cut by the canvas edge.
    canvas = jnp.zeros((frames, size * scale + shared, width * scale, channels), jnp.float32)
    canvas = lax.dynamic_update_slice_in_dim(canvas, carried, 0, axis=1)
    rows = AxisTiles(starts=np.zeros(1, np.int32), size=size, weights=row_weights[None], scale=scale)
    canvas = _blend_tiles(apply_fn, params, band, rows, cols, tile_batch, canvas)
    return canvas[:, : size * scale], lax.dynamic_slice_in_dim(canvas, next_top * scale, shared, axis=1)


def shared_rows(rows: AxisTiles) -> int:
    """The most output rows two neighbouring tile rows share: `predict_band`'s carried rows."""
    shared = rows.starts[:-1] + rows.size - rows.starts[1:]
    return int(shared.max(initial=0)) * rows.scale


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
    scale: int = 1,
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
      multiple: the model's `size_multiple` (see `kdjax.models.base`).
      scale: the model's `scale`: outputs are `scale` times larger than inputs; tiles are cut
        in input coordinates and blended in output coordinates.

    Returns:
      (N, H * scale, W * scale, C) float32 predictions, not clipped.
    """
    height, width = images.shape[1] * scale, images.shape[2] * scale
    padded = pad_to_multiple(images, multiple)
    run = functools.partial(
        _predict_tiled, apply_fn, params, tile=tile, overlap=overlap, tile_batch=tile_batch, multiple=multiple,
        scale=scale,
    )
    if not self_ensemble:
        return run(padded)[:, :height, :width]

    def flipped_sum(x: jax.Array) -> jax.Array:
        # A loop, not a batch of 4, so the image-sized buffers are not multiplied by 4.
        n, h, w, c = x.shape
        zeros = jnp.zeros((n, h * scale, w * scale, c), jnp.float32)
        return lax.fori_loop(0, 4, lambda code, total: total + _flip(run(_flip(x, code)), code), zeros)

    transposed = einops.rearrange(padded, "n h w c -> n w h c")
    total = flipped_sum(padded) + einops.rearrange(flipped_sum(transposed), "n w h c -> n h w c")
    return total[:, :height, :width] / 8.0
