"""RLFN: the Residual Local Feature Network (Kong et al., CVPRW 2022), a published x2-x4
super-resolution teacher whose authors' PyTorch weights ``kdjax.torch_import`` converts.

The layout follows the authors' code (bytedance/RLFN, ``model/rlfn.py`` and ``model/block.py``)
so that their checkpoints reproduce their figures:

* ``conv_1``: 3x3 conv from RGB to ``features`` channels (the "head");
* ``num_blocks`` residual local feature blocks (RLFB): three 3x3 convs, each followed by
  LeakyReLU(0.05), an identity skip, a 1x1 conv ``c5`` and enhanced spatial attention (ESA);
* ``conv_2``: 3x3 conv plus a long skip from the head;
* ``upsampler``: 3x3 conv to 3 * scale**2 channels and a pixel shuffle.

Every conv has a bias; 3x3 convs pad by one pixel with zeros, as PyTorch does. The authors'
network works on 0..255 pixel values; this module takes and returns [0, 1] images and scales
by ``value_range`` inside. ESA max-pools a half-resolution map with a 7x7 window and resizes
the result to the whole image, so the output at a pixel depends on the whole input and a
tiled image differs slightly from the whole one. The authors' code rejects inputs under
``kdjax.models.layers.MIN_INPUT_SIZE`` pixels per side; here they are edge-padded to it and the output cropped
back, so that any H, W works (shape probes use tiny inputs).

Feature taps (``return_features=True``): ``"block_{i}"`` after RLFB i (0-based; the authors'
``block_{i+1}``), shape (N, H, W, features), in the compute dtype.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax.models.base import ImageModel, block_names
from kdjax.models.layers import pad_to_min_size, pixel_shuffle, resize_bilinear_like_torch

Features = dict[str, jax.Array]

_LEAKY_SLOPE = 0.05


def _conv3x3(features: int, name: str, dtype: Any) -> nn.Conv:
    return nn.Conv(features, (3, 3), padding=1, dtype=dtype, name=name)


class ESA(nn.Module):
    """Enhanced spatial attention as in RLFN (the RFANet ESA without conv_max and conv3_).

    1x1 conv to `channels` ("conv1"); stride-2 unpadded 3x3 conv ("conv2"); 7x7 max-pool with
    stride 3; padded 3x3 conv ("conv3"); bilinear resize back to the input size; plus a 1x1
    conv of conv1's output ("conv_f"); 1x1 conv back to the input width ("conv4"); the input
    times its sigmoid. No activation between the convs, as in the authors' forward.
    The 1x1 convs are Dense layers: same parameters, and XLA:CPU runs a matmul faster.
    """

    channels: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        reduced = nn.Dense(self.channels, dtype=self.dtype, name="conv1")(x)
        y = nn.Conv(
            self.channels, (3, 3), strides=2, padding="VALID", dtype=self.dtype, name="conv2"
        )(reduced)
        y = nn.max_pool(y, (7, 7), strides=(3, 3), padding="VALID")
        y = _conv3x3(self.channels, "conv3", self.dtype)(y)
        y = resize_bilinear_like_torch(y, x.shape[1:3])
        y = y + nn.Dense(self.channels, dtype=self.dtype, name="conv_f")(reduced)
        gate = nn.sigmoid(nn.Dense(x.shape[-1], dtype=self.dtype, name="conv4")(y))
        return x * gate


class RLFB(nn.Module):
    """Residual local feature block: 3x(3x3 conv + LeakyReLU), skip, 1x1 conv "c5", ESA."""

    esa_channels: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        y = x
        for name in ("c1_r", "c2_r", "c3_r"):
            y = nn.leaky_relu(_conv3x3(width, name, self.dtype)(y), _LEAKY_SLOPE)
        y = nn.Dense(width, dtype=self.dtype, name="c5")(y + x)
        return ESA(self.esa_channels, dtype=self.dtype, name="esa")(y)


class RLFN(ImageModel):
    """RLFN super-resolution network; RLFN x2 has 52 features, RLFN-S x2 has 48.

    `value_range` is the pixel scale the weights were trained on (255 for the authors').
    Parameters are float32; `dtype` sets the compute precision and the output is float32.
    """

    role: ClassVar[str] = "teacher"

    features: int = 52
    num_blocks: int = 6
    esa_channels: int = 16
    scale: int = 2
    value_range: float = 255.0
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
        scaled = pad_to_min_size(x).astype(self.dtype) * self.value_range
        head = _conv3x3(self.features, "conv_1", self.dtype)(scaled)
        y = head
        features = {}
        for index in range(self.num_blocks):
            y = RLFB(self.esa_channels, dtype=self.dtype, name=f"block_{index}")(y)
            if return_features:
                features[f"block_{index}"] = y[:, :height, :width]
        y = _conv3x3(self.features, "conv_2", self.dtype)(y) + head
        y = _conv3x3(3 * self.scale**2, "upsampler", self.dtype)(y)
        output = pixel_shuffle(y, self.scale)[:, : height * self.scale, : width * self.scale]
        output = output.astype(jnp.float32) / self.value_range
        return (output, features) if return_features else output
