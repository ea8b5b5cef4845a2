"""Building blocks shared by the teacher and the students: padding to a size the
network can tile (windows, pixel shuffles) and cropping its output back."""

from __future__ import annotations

import jax
import jax.numpy as jnp


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


def add_global_residual(x: jax.Array, residual: jax.Array) -> jax.Array:
    """Returns `x + residual` in float32, cropping a padded `residual` back to x's H, W."""
    height, width = x.shape[1:3]
    return x.astype(jnp.float32) + residual[:, :height, :width].astype(jnp.float32)
