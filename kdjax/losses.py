"""Image losses: pixel losses (L1, MSE, Charbonnier) and the SSIM loss.

All losses take images as float arrays in [0, 1], NHWC, and return scalars. They compare
a prediction with the ground truth, or with a teacher's output (output distillation, see
``kdjax.distill``, which owns the feature-distillation losses).
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp

PIXEL_LOSSES = ("l1", "mse", "charbonnier")


def pixel_loss(pred: jax.Array, target: jax.Array, kind: str, charbonnier_eps: float = 1e-3) -> jax.Array:
    """Mean per-pixel loss between two image batches."""
    diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
    if kind == "l1":
        return jnp.mean(jnp.abs(diff))
    if kind == "mse":
        return jnp.mean(jnp.square(diff))
    if kind == "charbonnier":
        return jnp.mean(jnp.sqrt(jnp.square(diff) + charbonnier_eps**2))
    raise ValueError(f"Unknown pixel loss {kind!r}; set config.loss.pixel to one of {PIXEL_LOSSES}.")


def ssim_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """1 - SSIM (11x11 Gaussian window, sigma 1.5) on [0, 1] RGB, averaged over the batch."""
    ssim = dm_pix.ssim(pred.astype(jnp.float32), target.astype(jnp.float32), max_val=1.0)
    return 1.0 - jnp.mean(ssim)
