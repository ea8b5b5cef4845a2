"""Swin teacher: a SwinIR-style restoration network (Liang et al., 2021).

In the sharpen task the input is the degraded image at full resolution, so the network maps
(N, H, W, 3) to (N, H, W, 3); in the upscale task (`scale` > 1) its last conv pixel-shuffles
to (N, H * scale, W * scale, 3), SwinIR-light's upsampler. The layers: a 3x3 shallow conv,
residual Swin transformer groups (RSTB), LayerNorm and a conv with a long skip from the
shallow features, a conv reconstruction head and a global residual to the input (bicubic-
upscaled in the upscale task). At scale 1 this is SwinIR's denoising/JPEG layout.

The reconstruction conv is zero-initialised, so a fresh model is the identity (output =
input), or bicubic upscaling: the natural starting point for a residual network, and it
keeps the early distillation targets and losses sane.

Any H, W works: the image is reflect-padded to a multiple of the window and the output
(and every feature tap) is cropped back. Parameters live in float32; `dtype` only sets the
compute precision (e.g. bfloat16), and the output is float32.

Feature taps (`return_features=True`): `"group_{i}"` after residual group i, cropped back to
the body's size, shape (N, ceil(H / body_factor), ceil(W / body_factor), embed_dim), in the
compute dtype.

`body_factor=2` runs the attention body at half resolution (see `SwinIR`): the sharpen
task's cheaper teacher.
"""

from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax.models.base import ImageModel
from kdjax.models.layers import add_global_residual, pad_to_multiple, pixel_shuffle, pixel_unshuffle

RESIDUAL_CONNECTIONS = ("1conv", "3conv")

_linear_init = nn.initializers.truncated_normal(stddev=0.02)


def relative_position_index(window_size: int) -> np.ndarray:
    """Index (T, T), T = window_size**2, into the ((2w-1)**2, heads) relative bias table.

    Entry [i, j] encodes the offset of token j relative to token i inside a window, with
    both offsets shifted to [0, 2w-2]; the encoding is SwinIR's, so ported tables line up.
    """
    rows, cols = np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()])
    offsets = coords[:, :, None] - coords[:, None, :] + (window_size - 1)
    return (offsets[0] * (2 * window_size - 1) + offsets[1]).astype(np.int32)


def _shift_regions(size: int, window_size: int, shift_size: int) -> np.ndarray:
    """Region label (0, 1, 2) along one axis of a cyclically shifted image."""
    labels = np.zeros(size, np.int32)
    labels[size - window_size : size - shift_size] = 1
    labels[size - shift_size :] = 2
    return labels


def shifted_window_mask(height: int, width: int, window_size: int, shift_size: int) -> jax.Array:
    """Boolean (num_windows, T, T) mask of which tokens may attend to which after a shift.

    After rolling the image by -shift_size, the last window row/column mixes pixels that
    were far apart (wrapped around the border). Tokens may only attend within the same
    region. Built with jnp from two 1-D label vectors so that inside jit XLA fuses it into
    the attention instead of embedding a (num_windows, T, T) constant per layer.
    """
    row_labels = jnp.asarray(_shift_regions(height, window_size, shift_size))
    col_labels = jnp.asarray(_shift_regions(width, window_size, shift_size))
    region = row_labels[:, None] * 3 + col_labels[None, :]
    region = einops.rearrange(
        region, "(h wh) (w ww) -> (h w) (wh ww)", wh=window_size, ww=window_size
    )
    return region[:, :, None] == region[:, None, :]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias.

    Input (B * num_windows, T, C) tokens; `allowed` (num_windows, T, T) masks attention
    for shifted windows. Logits and softmax are computed in float32 for bf16 stability.
    """

    num_heads: int
    window_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, windows: jax.Array, allowed: jax.Array | None = None) -> jax.Array:
        tokens, channels = windows.shape[1:]
        head_dim = channels // self.num_heads
        qkv = nn.Dense(3 * channels, dtype=self.dtype, kernel_init=_linear_init, name="qkv")(
            windows
        )
        query, key, value = einops.rearrange(
            qkv, "b t (three h d) -> three b h t d", three=3, h=self.num_heads
        )
        logits = jnp.einsum("bhqd,bhkd->bhqk", query * head_dim**-0.5, key).astype(jnp.float32)

        table = self.param(
            "relative_position_bias_table",
            _linear_init,
            ((2 * self.window_size - 1) ** 2, self.num_heads),
            jnp.float32,
        )
        bias = table[relative_position_index(self.window_size).reshape(-1)]
        logits = logits + einops.rearrange(bias, "(q k) h -> h q k", q=tokens)

        if allowed is not None:
            # -1e30 makes masked weights exactly 0 after softmax (exp underflows), unlike
            # SwinIR's -100 which leaves ~1e-44. An additive mask on a plain reshape is
            # ~1.6x faster on XLA:CPU than jnp.where on the rearranged logits.
            num_windows = allowed.shape[0]
            penalty = jnp.where(allowed, 0.0, -1e30)[:, None]
            per_image = logits.reshape(-1, num_windows, *logits.shape[1:])
            logits = (per_image + penalty).reshape(logits.shape)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)

        attended = jnp.einsum("bhqk,bhkd->bhqd", weights, value)
        attended = einops.rearrange(attended, "b h t d -> b t (h d)")
        return nn.Dense(channels, dtype=self.dtype, kernel_init=_linear_init, name="proj")(attended)


class SwinLayer(nn.Module):
    """Pre-norm Swin block on an NHWC map whose H, W are multiples of the window.

    (shifted) window attention and an MLP, each with a residual and stochastic depth
    (whole-sample drop via the "dropout" rng, active only when train=True).

    A layer with shift_size > 0 shifts even when the map is a single window (SwinIR turns
    the shift off for such small training sizes); the mask keeps that correct.
    """

    num_heads: int
    window_size: int
    shift_size: int
    mlp_ratio: float
    drop_path_rate: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        batch, height, width, channels = x.shape
        window, shift = self.window_size, self.shift_size
        # Per-sample dropout broadcast over H, W, C is exactly stochastic depth.
        drop_path = nn.Dropout(
            self.drop_path_rate, broadcast_dims=(1, 2, 3), deterministic=not train
        )

        y = nn.LayerNorm(dtype=self.dtype, name="norm1")(x)
        allowed = None
        if shift:
            y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
            allowed = shifted_window_mask(height, width, window, shift)
        windows = einops.rearrange(
            y, "n (h wh) (w ww) c -> (n h w) (wh ww) c", wh=window, ww=window
        )
        windows = WindowAttention(self.num_heads, window, dtype=self.dtype, name="attn")(
            windows, allowed
        )
        y = einops.rearrange(
            windows,
            "(n h w) (wh ww) c -> n (h wh) (w ww) c",
            n=batch,
            h=height // window,
            wh=window,
        )
        if shift:
            y = jnp.roll(y, (shift, shift), axis=(1, 2))
        x = x + drop_path(y)

        y = nn.LayerNorm(dtype=self.dtype, name="norm2")(x)
        hidden = int(channels * self.mlp_ratio)
        y = nn.Dense(hidden, dtype=self.dtype, kernel_init=_linear_init, name="fc1")(y)
        y = nn.gelu(y, approximate=False)  # exact GELU, as torch.nn.GELU in SwinIR
        y = nn.Dense(channels, dtype=self.dtype, kernel_init=_linear_init, name="fc2")(y)
        return x + drop_path(y)


class ConvTail(nn.Module):
    """SwinIR's `resi_connection`: one 3x3 conv ("1conv") or a cheaper 3x3-1x1-3x3
    bottleneck at a quarter of the channels ("3conv")."""

    kind: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        if self.kind == "1conv":
            return nn.Conv(channels, (3, 3), dtype=self.dtype, name="conv")(x)
        y = nn.Conv(channels // 4, (3, 3), dtype=self.dtype, name="conv_0")(x)
        y = nn.leaky_relu(y, 0.2)
        y = nn.Conv(channels // 4, (1, 1), dtype=self.dtype, name="conv_1")(y)
        y = nn.leaky_relu(y, 0.2)
        return nn.Conv(channels, (3, 3), dtype=self.dtype, name="conv_2")(y)


class ResidualSwinGroup(nn.Module):
    """RSTB: `len(drop_path_rates)` Swin layers (every second one shifted), a conv tail
    and a residual around the group."""

    num_heads: int
    window_size: int
    mlp_ratio: float
    drop_path_rates: tuple[float, ...]
    resi_connection: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        y = x
        for index, rate in enumerate(self.drop_path_rates):
            y = SwinLayer(
                num_heads=self.num_heads,
                window_size=self.window_size,
                shift_size=0 if index % 2 == 0 else self.window_size // 2,
                mlp_ratio=self.mlp_ratio,
                drop_path_rate=rate,
                dtype=self.dtype,
                name=f"layer_{index}",
            )(y, train=train)
        return x + ConvTail(self.resi_connection, dtype=self.dtype, name="conv")(y)


class SwinIR(ImageModel):
    """SwinIR-like sharpening teacher; see the module docstring for the data flow.

    Attributes:
      embed_dim: channels of the transformer body.
      depths: number of Swin layers in each residual group.
      num_heads: attention heads in each residual group (divides embed_dim).
      window_size: attention window side; inputs are reflect-padded to a multiple of it.
      mlp_ratio: hidden width of the MLP relative to embed_dim.
      drop_path_rate: stochastic depth, rising linearly from 0 to this over all layers.
      resi_connection: "1conv" or "3conv" conv at the end of each group and after the body.
      scale: 1 for the sharpen task; 2, 3 or 4 for the upscale task, where the last conv
        predicts scale**2 times the channels, pixel-shuffled to the output size (SwinIR's
        "pixelshuffledirect" upsampler, as in SwinIR-light), added to the bicubic-upscaled input.
      body_factor: 1, or 2 to run the attention body at half resolution: the shallow
        features are pixel-unshuffled by 2 and projected (1x1) back to embed_dim, and the
        body's output is projected to 4 * embed_dim and pixel-shuffled back before the long
        skip and the reconstruction; the same body at about a quarter of its FLOPs, for
        same-size (sharpen) inputs whose information sits at half resolution anyway.
      dtype: compute dtype (parameters stay float32, output is float32).
    """

    embed_dim: int = 60
    depths: tuple[int, ...] = (6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6)
    window_size: int = 8
    mlp_ratio: float = 2.0
    drop_path_rate: float = 0.1
    resi_connection: str = "1conv"
    scale: int = 1
    body_factor: int = 1
    dtype: Any = jnp.float32

    role = "teacher"

    def __post_init__(self) -> None:
        if len(self.depths) != len(self.num_heads):
            raise ValueError(
                f"SwinIR depths {tuple(self.depths)} and num_heads {tuple(self.num_heads)} "
                "must have the same length (one entry per residual group)."
            )
        if any(self.embed_dim % heads for heads in self.num_heads):
            raise ValueError(
                f"SwinIR embed_dim {self.embed_dim} must be divisible by every num_heads "
                f"entry {tuple(self.num_heads)}; change one of them."
            )
        if self.resi_connection not in RESIDUAL_CONNECTIONS:
            raise ValueError(
                f"SwinIR resi_connection {self.resi_connection!r} is unknown; "
                f"use one of {RESIDUAL_CONNECTIONS}."
            )
        super().__post_init__()

    @property
    def size_multiple(self) -> int:
        return self.window_size * self.body_factor

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the feature taps, one per residual group."""
        return tuple(f"group_{index}" for index in range(len(self.depths)))

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        factor = self.body_factor
        height, width = -(-x.shape[1] // factor), -(-x.shape[2] // factor)  # the body's size
        padded = pad_to_multiple(x, self.size_multiple).astype(self.dtype)

        shallow = nn.Conv(self.embed_dim, (3, 3), dtype=self.dtype, name="conv_first")(padded)
        body = shallow
        if factor > 1:
            body = nn.Dense(self.embed_dim, dtype=self.dtype, name="body_in")(pixel_unshuffle(shallow, factor))
        # SwinIR's patch embedding of 1x1 patches is just this LayerNorm (patch_norm=True).
        body = nn.LayerNorm(dtype=self.dtype, name="patch_norm")(body)
        rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
        features = {}
        first_layer = 0
        for index, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
            body = ResidualSwinGroup(
                num_heads=heads,
                window_size=self.window_size,
                mlp_ratio=self.mlp_ratio,
                drop_path_rates=tuple(rates[first_layer : first_layer + depth]),
                resi_connection=self.resi_connection,
                dtype=self.dtype,
                name=f"group_{index}",
            )(body, train=train)
            first_layer += depth
            if return_features:
                features[f"group_{index}"] = body[:, :height, :width]
        body = nn.LayerNorm(dtype=self.dtype, name="norm")(body)
        body = ConvTail(self.resi_connection, dtype=self.dtype, name="conv_after_body")(body)
        if factor > 1:
            body = pixel_shuffle(nn.Dense(self.embed_dim * factor**2, dtype=self.dtype, name="body_out")(body), factor)
        residual = nn.Conv(
            3 * self.scale**2, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros, name="conv_last"
        )(body + shallow)
        y = add_global_residual(x, pixel_shuffle(residual, self.scale), self.scale, multiple=self.size_multiple)
        return (y, features) if return_features else y
