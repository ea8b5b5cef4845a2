"""Building blocks shared by the models: padding to a size the network can tile (windows,
pixel shuffles), cropping its output back, the global residual, and PyTorch-exact pixel
(un)shuffles, MATLAB-exact bicubic upscaling and bilinear resizing (what the imported RLFN and BSRN were trained with)."""

from __future__ import annotations

import einops
import jax
import jax.numpy as jnp
import numpy as np

# ESA's strided 3x3 conv (no padding) then its 7x7 max-pool need 15 input pixels per side.
MIN_INPUT_SIZE = 15


def pixel_unshuffle(x: jax.Array, factor: int) -> jax.Array:
    """(N, H, W, C) -> (N, H/f, W/f, C*f*f), channel order (C, fh, fw) as in PyTorch."""
    return einops.rearrange(x, "n (h fh) (w fw) c -> n h w (c fh fw)", fh=factor, fw=factor)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
    """Inverse of `pixel_unshuffle`: (N, H, W, C*f*f) -> (N, H*f, W*f, C), as torch.nn.PixelShuffle."""
    return einops.rearrange(x, "n h w (c fh fw) -> n (h fh) (w fw) c", fh=factor, fw=factor)


def pad_to_multiple(x: jax.Array, multiple: int) -> jax.Array:
    """Reflect-pads NHWC `x` at the bottom/right so H and W are multiples of `multiple`.

    Reflection (rather than zeros) keeps the statistics near the border natural, so the
    cropped-back output shows no dark seams; jnp.pad reflects repeatedly when the pad is
    larger than the image, so tiny inputs work too.
    """
    height, width = x.shape[1:3]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")


def add_global_residual(x: jax.Array, residual: jax.Array, scale: int = 1, multiple: int = 1) -> jax.Array:
    """Returns `x`, upscaled by `scale`, plus `residual`, in float32, at scale * x's H, W.

    `residual` may be padded: a model that reflect-pads its input to a `multiple` passes it,
    so the upscaled `x` is that of the padded input too, cropped back; a tile of an image then
    sees the same border as the whole image. The upscaling is bicubic (Keys, a = -0.5, as
    MATLAB's imresize), so a model whose residual is zero is the classic bicubic baseline.
    """
    height, width = x.shape[1] * scale, x.shape[2] * scale
    base = upscale_bicubic(pad_to_multiple(x, multiple).astype(jnp.float32), scale)
    return (base + residual.astype(jnp.float32))[:, :height, :width]


def _keys_cubic(distance: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel, a = -0.5 (MATLAB's ``cubic``)."""
    d = np.abs(distance)
    near = (1.5 * d**3 - 2.5 * d**2 + 1.0) * (d <= 1.0)
    far = (-0.5 * d**3 + 2.5 * d**2 - 4.0 * d + 2.0) * ((d > 1.0) & (d <= 2.0))
    return near + far


def bicubic_phase_taps(scale: int) -> np.ndarray:
    """(scale, 5) weights: output phase ``p`` of ``upscale_bicubic`` as a filter over input
    pixels ``j - 2 .. j + 2`` (every phase's 4 taps lie within them; the fifth weight is 0)."""
    taps = np.zeros((scale, 5))
    for phase in range(scale):
        offset = (phase + 0.5) / scale - 0.5
        first = int(np.floor(offset)) - 1  # leftmost tap, relative to the input pixel
        taps[phase, first + 2 : first + 6] = _keys_cubic(offset - (first + np.arange(4)))
    return taps


def upscale_bicubic(x: jax.Array, scale: int) -> jax.Array:
    """NHWC bicubic upscaling by an integer `scale`, equal to MATLAB's ``imresize(x, scale)``.

    Output pixel ``scale * j + p`` samples input coordinate ``j + (p + 0.5) / scale - 0.5``, so
    every phase ``p`` is a fixed 4-tap filter; out-of-range taps mirror with the edge repeated
    (MATLAB's symmetric padding). Written as weighted sums of shifted slices, which XLA fuses:
    about 50 flops per output pixel, where ``jax.image.resize`` contracts with dense
    (output x input) matrices (12.7 GFLOPs for one 1080p output frame) and renormalises at
    the borders instead of mirroring.
    """
    if scale == 1:
        return x
    for axis in (1, 2):
        length = x.shape[axis]
        padded = jnp.pad(x, [(2, 2) if a == axis else (0, 0) for a in range(4)], mode="symmetric")
        phases = []
        for taps in bicubic_phase_taps(scale):
            out = 0.0
            for start, weight in enumerate(taps):
                if weight:
                    out = out + float(weight) * jax.lax.slice_in_dim(padded, start, start + length, axis=axis)
            phases.append(out)
        # Interleave the phases: (..., length, scale, ...) -> (..., length * scale, ...).
        stacked = jnp.stack(phases, axis=axis + 1)
        shape = list(x.shape)
        shape[axis] = length * scale
        x = stacked.reshape(shape)
    return x


def pad_to_min_size(x: jax.Array) -> jax.Array:
    """Edge-pads NHWC `x` at the bottom/right to at least MIN_INPUT_SIZE pixels per side.

    Edge rather than reflect padding: it is defined for a single-pixel image too.
    """
    height, width = x.shape[1:3]
    pad_h = max(0, MIN_INPUT_SIZE - height)
    pad_w = max(0, MIN_INPUT_SIZE - width)
    if pad_h == 0 and pad_w == 0:
        return x
    return jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _torch_bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lower, upper) and upper weights of PyTorch's align_corners=False resize.

    PyTorch maps output pixel i to source coordinate (i + 0.5) * in/out - 0.5, clamps negative
    coordinates to 0 and repeats the last pixel past the end; computed in float32 as it does.
    """
    ratio = np.float32(in_size) / np.float32(out_size)
    source = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * ratio - np.float32(0.5)
    source = np.maximum(source, np.float32(0.0))
    lower = np.floor(source).astype(np.int32)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, (source - lower).astype(np.float32)


def resize_bilinear_like_torch(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """NHWC bilinear resize as PyTorch's ``F.interpolate(mode="bilinear", align_corners=False)``.

    No antialiasing, unlike ``jax.image.resize``'s default; written as two gathers and
    linear blends per axis, with the taps fixed at trace time from the static shapes.
    """
    for axis, out_size in zip((1, 2), size):
        lower, upper, weight = _torch_bilinear_taps(x.shape[axis], out_size)
        shape = [1, 1, 1, 1]
        shape[axis] = out_size
        weight = jnp.asarray(weight.reshape(shape), x.dtype)
        x = jnp.take(x, lower, axis=axis) * (1 - weight) + jnp.take(x, upper, axis=axis) * weight
    return x
