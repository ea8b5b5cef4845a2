"""Building blocks shared by the models: padding to a size the network can tile (windows,
pixel shuffles), cropping its output back, and PyTorch-ordered pixel (un)shuffles."""

from __future__ import annotations

import einops
import jax
import jax.numpy as jnp


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


def add_global_residual(x: jax.Array, residual: jax.Array, scale: int = 1) -> jax.Array:
    """Returns `x`, upscaled by `scale`, plus `residual`, in float32.

    `residual` may be padded (it is cropped back to scale * x's H, W). The upscaled `x` is
    bicubic (Keys, a = -0.5, as MATLAB's imresize), so a model whose residual is zero is the
    classic bicubic baseline.
    """
    height, width = x.shape[1] * scale, x.shape[2] * scale
    base = x.astype(jnp.float32)
    if scale > 1:
        base = jax.image.resize(base, (x.shape[0], height, width, x.shape[3]), method="bicubic")
    return base + residual[:, :height, :width].astype(jnp.float32)
