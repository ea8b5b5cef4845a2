"""BSRN: the Blueprint Separable Residual Network (Li et al., CVPRW 2022), a published
efficient super-resolution teacher whose authors' PyTorch weights ``kdjax.torch_import``
converts.

The layout mirrors the authors' code (xiaom233/BSRN, ``basicsr/archs/BSRN_arch.py``) with
``conv="BSConvU"`` and ``upsampler="pixelshuffledirect"``, the configuration of their
checkpoints:

* the RGB input is repeated four times along channels (the authors' ``fea_conv`` takes 12
  channels) and a BSConvU ("fea_conv") maps it to ``features`` channels (the "head");
* ``num_blocks`` efficient separable distillation blocks (ESDB): three distillation steps
  (a 1x1 conv keeps half the channels, a BSConvU with an identity skip refines the rest),
  a BSConvU to half the channels, a 1x1 conv fusing the four halves, ESA built from BSConvU,
  contrast-aware channel attention (CCA) and an identity skip;
* the outputs of all blocks concatenated, a 1x1 conv ("c1") and GELU, a BSConvU ("c2") plus
  a long skip from the head;
* ``upsampler``: 3x3 conv to 3 * scale**2 channels and a pixel shuffle.

BSConvU is a pointwise 1x1 conv without bias followed by a depthwise 3x3 conv with bias and
zero padding. GELU is the exact (erf) one, as ``torch.nn.GELU()``. BSRN works in [0, 1].
As in RLFN (``kdjax.models.rlfn``), ESA and CCA look at the whole image, so a tiled image
differs slightly from the whole one, and inputs under ``kdjax.models.rlfn.MIN_INPUT_SIZE``
(15) pixels per side, which the authors' code rejects, are edge-padded to it and the output
cropped back.

Feature taps (``return_features=True``): ``"block_{i}"`` after ESDB i (0-based; the
authors' ``B{i+1}``), shape (N, H, W, features), in the compute dtype.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax.models.base import ImageModel, block_names
from kdjax.models.layers import pad_to_min_size, pixel_shuffle, resize_bilinear_like_torch
from kdjax.models.students import DepthwiseConv3x3

Features = dict[str, jax.Array]

_gelu = functools.partial(nn.gelu, approximate=False)
# The authors' first conv takes this many copies of the RGB input.
_INPUT_COPIES = 4
_CCA_REDUCTION = 16


class BSConvU(nn.Module):
    """Blueprint separable conv: 1x1 "pw" (no bias), then depthwise 3x3 "dw" with bias.

    `padding` is PyTorch's (zeros on each side). Padding 1, every BSConvU but ESA's
    reduction, uses the fast shifted-product depthwise conv; other paddings use a grouped
    convolution, cheap there because ESA runs it on a few channels. Both kernels have the
    depthwise layout (3, 3, 1, C).
    """

    features: int
    strides: int = 1
    padding: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.Dense(self.features, use_bias=False, dtype=self.dtype, name="pw")(x)
        if self.padding == 1:
            return DepthwiseConv3x3(self.strides, dtype=self.dtype, name="dw")(y)
        return nn.Conv(
            self.features,
            (3, 3),
            strides=self.strides,
            padding=self.padding,
            feature_group_count=self.features,
            dtype=self.dtype,
            name="dw",
        )(y)


class ESA(nn.Module):
    """Enhanced spatial attention with BSConvU, as in BSRN.

    1x1 conv to `channels` ("conv1"); unpadded stride-2 BSConvU ("conv2"); 7x7 max-pool with
    stride 3; BSConvU + GELU ("conv_max"), BSConvU + GELU ("conv3"), BSConvU ("conv3_");
    bilinear resize back to the input size; plus a 1x1 conv of conv1's output ("conv_f");
    1x1 conv back to the input width ("conv4"); the input times its sigmoid.
    """

    channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        reduced = nn.Dense(self.channels, dtype=self.dtype, name="conv1")(x)
        y = BSConvU(self.channels, strides=2, padding=0, dtype=self.dtype, name="conv2")(reduced)
        y = nn.max_pool(y, (7, 7), strides=(3, 3), padding="VALID")
        y = _gelu(BSConvU(self.channels, dtype=self.dtype, name="conv_max")(y))
        y = _gelu(BSConvU(self.channels, dtype=self.dtype, name="conv3")(y))
        y = BSConvU(self.channels, dtype=self.dtype, name="conv3_")(y)
        y = resize_bilinear_like_torch(y, x.shape[1:3])
        y = y + nn.Dense(self.channels, dtype=self.dtype, name="conv_f")(reduced)
        gate = nn.sigmoid(nn.Dense(x.shape[-1], dtype=self.dtype, name="conv4")(y))
        return x * gate


class CCA(nn.Module):
    """Contrast-aware channel attention: per-channel (std + mean) over the image, a 1x1
    squeeze ("squeeze", ReLU) and excite ("expand", sigmoid), scaling the input channels."""

    reduction: int = _CCA_REDUCTION
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        # The statistics are taken in float32: a bfloat16 variance of a whole image loses
        # most of its digits to rounding.
        wide = x.astype(jnp.float32)
        contrast = jnp.std(wide, axis=(1, 2), keepdims=True)
        y = (contrast + jnp.mean(wide, axis=(1, 2), keepdims=True)).astype(self.dtype)
        y = nn.relu(nn.Dense(channels // self.reduction, dtype=self.dtype, name="squeeze")(y))
        y = nn.sigmoid(nn.Dense(channels, dtype=self.dtype, name="expand")(y))
        return x * y


class ESDB(nn.Module):
    """Efficient separable distillation block (see the module docstring)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        distilled_width = width // 2
        distilled = []
        refined = x
        for step in (1, 2, 3):
            distill = nn.Dense(distilled_width, dtype=self.dtype, name=f"c{step}_d")
            distilled.append(_gelu(distill(refined)))
            refine = BSConvU(width, dtype=self.dtype, name=f"c{step}_r")
            refined = _gelu(refine(refined) + refined)
        distilled.append(_gelu(BSConvU(distilled_width, dtype=self.dtype, name="c4")(refined)))
        y = nn.Dense(width, dtype=self.dtype, name="c5")(jnp.concatenate(distilled, axis=-1))
        y = ESA(width // 4, dtype=self.dtype, name="esa")(y)
        y = CCA(dtype=self.dtype, name="cca")(y)
        return y + x


class BSRN(ImageModel):
    """BSRN super-resolution network; the authors' x2 model has 64 features and 8 ESDBs.

    Parameters are float32; `dtype` sets the compute precision and the output is float32.
    """

    role: ClassVar[str] = "teacher"

    features: int = 64
    num_blocks: int = 8
    scale: int = 2
    dtype: Any = jnp.float32

    @property
    def feature_names(self) -> tuple[str, ...]:
        return block_names(self.num_blocks)

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array | tuple[jax.Array, Features]:
        del train  # No train-time behaviour (no dropout, no normalisation statistics).
        height, width = x.shape[1:3]
        y = jnp.concatenate([pad_to_min_size(x).astype(self.dtype)] * _INPUT_COPIES, axis=-1)
        head = BSConvU(self.features, dtype=self.dtype, name="fea_conv")(y)
        y = head
        block_outputs = []
        for index in range(self.num_blocks):
            y = ESDB(dtype=self.dtype, name=f"block_{index}")(y)
            block_outputs.append(y)
        y = _gelu(nn.Dense(self.features, dtype=self.dtype, name="c1")(
            jnp.concatenate(block_outputs, axis=-1)))
        y = BSConvU(self.features, dtype=self.dtype, name="c2")(y) + head
        y = nn.Conv(3 * self.scale**2, (3, 3), padding=1, dtype=self.dtype, name="upsampler")(y)
        output = pixel_shuffle(y, self.scale)[:, : height * self.scale, : width * self.scale]
        output = output.astype(jnp.float32)
        if not return_features:
            return output
        return output, {
            f"block_{index}": out[:, :height, :width] for index, out in enumerate(block_outputs)
        }
