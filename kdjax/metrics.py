"""Image-quality metrics (PSNR, SSIM) in the BasicSR / MATLAB convention used by published SR tables.

Conventions (identical to BasicSR's ``calculate_psnr`` / ``calculate_ssim``):

* Inputs are float arrays in 0..255, (H, W, 3) or (N, H, W, 3) RGB; results are a scalar or (N,).
* ``crop_border`` pixels are removed from every side before anything else.
* ``y_channel=True`` evaluates on Y of BT.601 YCbCr with the 16..235 range,
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``, unrounded.
* PSNR = 10 log10(255^2 / MSE), the MSE taken over all remaining pixels and channels
  (identical images give +inf).
* SSIM uses an 11x11 Gaussian window with sigma 1.5, 'valid' filtering (no padding),
  C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, population (co)variances; on RGB the mean of the
  per-channel SSIMs.

Published numbers evaluate 8-bit outputs, so model outputs in [0, 1] go through ``quantize``
first. Every public function is jitted (``crop_border`` and ``y_channel`` are static), works on
any backend, and can be vmapped.
"""

from __future__ import annotations

import functools

import dm_pix as pix
import jax
import jax.numpy as jnp

__all__ = ["psnr", "psnr_ssim", "quantize", "rgb_to_y", "ssim"]

_MAX_VALUE = 255.0
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
# BT.601 luma for 0..255 RGB into the 16..235 range (MATLAB rgb2ycbcr, BasicSR bgr2ycbcr).
_Y_OFFSET = 16.0
_Y_WEIGHTS = (65.481, 128.553, 24.966)


@jax.jit
def quantize(x: jax.Array) -> jax.Array:
    """Maps a model output in [0, 1] to the 8-bit grid: clip, scale to 0..255, round (float32)."""
    return jnp.round(jnp.clip(jnp.asarray(x, jnp.float32), 0.0, 1.0) * _MAX_VALUE)


@jax.jit
def rgb_to_y(x: jax.Array) -> jax.Array:
    """BT.601 luma in the 16..235 range of 0..255 RGB, keeping a size-1 channel axis.

    The weighted sum is written out rather than as a dot product so that accelerators
    cannot lower it to reduced-precision matmul units.
    """
    x = jnp.asarray(x, jnp.float32)
    red, green, blue = x[..., 0:1], x[..., 1:2], x[..., 2:3]
    r_weight, g_weight, b_weight = _Y_WEIGHTS
    return _Y_OFFSET + (r_weight * red + g_weight * green + b_weight * blue) / _MAX_VALUE


def _prepare(
    pred: jax.Array, target: jax.Array, crop_border: int, y_channel: bool, name: str
) -> tuple[jax.Array, jax.Array]:
    """Checks shapes, casts to float32, crops the border and optionally converts to Y."""
    pred = jnp.asarray(pred, jnp.float32)
    target = jnp.asarray(target, jnp.float32)
    if pred.shape != target.shape:
        raise ValueError(
            f"{name} got pred {pred.shape} and target {target.shape}; pass images of the same shape."
        )
    if pred.ndim not in (3, 4) or pred.shape[-1] != 3:
        raise ValueError(
            f"{name} got images of shape {pred.shape}; pass RGB images shaped (H, W, 3) or (N, H, W, 3)."
        )
    if crop_border < 0 or 2 * crop_border >= min(pred.shape[-3:-1]):
        raise ValueError(
            f"{name} got crop_border={crop_border} for images of shape {pred.shape}; "
            "pass a border smaller than half the image height and width."
        )
    if crop_border:
        window = (..., slice(crop_border, -crop_border), slice(crop_border, -crop_border), slice(None))
        pred, target = pred[window], target[window]
    if y_channel:
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    return pred, target


def _psnr(pred: jax.Array, target: jax.Array) -> jax.Array:
    mse = jnp.mean(jnp.square(pred - target), axis=(-3, -2, -1))
    return 10.0 * jnp.log10(_MAX_VALUE**2 / mse)


def _ssim(pred: jax.Array, target: jax.Array) -> jax.Array:
    # dm-pix's SSIM is the same estimator as BasicSR's (normalised separable Gaussian, 'valid'
    # filtering, population moments, mean over pixels and channels = mean of per-channel SSIMs).
    # Its only extra step clamps variances to >= eps^2 and |covariance| to sqrt(var_a * var_b),
    # which holds exactly in real arithmetic and only trims float32 round-off. It runs in float32
    # where BasicSR uses float64; the tests bound the difference on real images below 1e-4.
    if min(pred.shape[-3:-1]) < _SSIM_WINDOW:
        raise ValueError(
            f"ssim got images of {pred.shape[-3:-1]} pixels after cropping the border; "
            f"pass images at least {_SSIM_WINDOW}x{_SSIM_WINDOW} after the crop."
        )
    return pix.ssim(
        pred,
        target,
        max_val=_MAX_VALUE,
        filter_size=_SSIM_WINDOW,
        filter_sigma=_SSIM_SIGMA,
        k1=0.01,
        k2=0.03,
    )


@functools.partial(jax.jit, static_argnames=("crop_border", "y_channel"))
def psnr(pred: jax.Array, target: jax.Array, *, crop_border: int = 0, y_channel: bool = False) -> jax.Array:
    """PSNR in dB of 0..255 images; a scalar for (H, W, 3), shape (N,) for (N, H, W, 3)."""
    return _psnr(*_prepare(pred, target, crop_border, y_channel, "psnr"))


@functools.partial(jax.jit, static_argnames=("crop_border", "y_channel"))
def ssim(pred: jax.Array, target: jax.Array, *, crop_border: int = 0, y_channel: bool = False) -> jax.Array:
    """SSIM of 0..255 images; a scalar for (H, W, 3), shape (N,) for (N, H, W, 3)."""
    return _ssim(*_prepare(pred, target, crop_border, y_channel, "ssim"))


@functools.partial(jax.jit, static_argnames=("crop_border", "y_channel"))
def psnr_ssim(
    pred: jax.Array, target: jax.Array, *, crop_border: int, y_channel: bool
) -> dict[str, jax.Array]:
    """Both metrics in one compiled call: ``{"psnr": ..., "ssim": ...}``, each scalar or (N,)."""
    pred, target = _prepare(pred, target, crop_border, y_channel, "psnr_ssim")
    return {"psnr": _psnr(pred, target), "ssim": _ssim(pred, target)}
