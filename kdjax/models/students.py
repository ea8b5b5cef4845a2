"""CNN students: small sharpening and upscaling networks with the teacher's input/output contract.

Every student maps (N, H, W, 3) in [0, 1] to (N, H * scale, W * scale, 3) float32 (not
clipped), predicts a residual added to the input (global residual; in the upscale task,
`scale` > 1, the last conv predicts scale**2 times the channels, pixel-shuffled to the output
size, and the residual is added to the bicubic-upscaled input), takes any H, W, and computes in `dtype` with
float32 parameters. The conv producing the residual is zero-initialised, so a fresh student
is the identity (output = input). Feature taps (`return_features=True`) are named
`"block_{i}"` (each module lists them in its `feature_names` property), in the compute
dtype:

- `PlainCNN` ("plain3"): SRCNN 9-5-5 (64, 32 channels) on RGB plus a global residual, as in
  VDSR; taps after each hidden conv+ReLU, (N, H, W, features[i]).
- `ResidualCNN` ("residual"): 3x3 head, residual blocks at full resolution, 3x3 tail;
  taps after each block, (N, H, W, width).
- `SeparableUNet` ("separable"): depthwise-separable encoder-decoder with one stride-2
  downsampling and one pixel-shuffle upsampling plus a skip; taps after each bottleneck
  block, (N, ceil(H/2), ceil(W/2), 2 * width).
- `RealtimeCNN` ("realtime", the one to ship): pixel-unshuffle by `shuffle_factor`, cheap
  residual blocks at low resolution, pixel-shuffle back; taps after each block,
  (N, ceil(H/f), ceil(W/f), width). The default (width 28, 3 blocks, factor 4) costs
  17.2 GFLOPs per 1920x1080 frame (XLA cost analysis, multiply-add = 2 flops), inside
  the ~20 GFLOPs real-time budget.
- `RepCNN` ("rep", the efficient-frontier student): SESR/ECBSR-style re-parameterisable
  convolutions (``kdjax.models.reparam``) with PReLU, at the input's resolution in the upscale
  task (or pixel-unshuffled by `shuffle_factor` to sharpen), a long residual over its blocks,
  and a pixel-shuffled output; trained with linear branches, run as plain 3x3 convolutions
  (``inference_form`` folds them, exactly); taps after each block, (N, ceil(H/f),
  ceil(W/f), width).

Students with a downsampling factor reflect-pad H, W to a multiple of it and crop back, so
their low-resolution taps have the padded (ceil) size.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax.models.base import ImageModel, block_names
from kdjax.models.layers import add_global_residual, pad_to_multiple, pixel_shuffle, pixel_unshuffle
from kdjax.models.reparam import RepConv, fold_branches

Features = dict[str, jax.Array]
_zeros = nn.initializers.zeros


def _output(
    y: jax.Array, features: Features, return_features: bool
) -> jax.Array | tuple[jax.Array, Features]:
    return (y, features) if return_features else y


class ResidualBlock(nn.Module):
    """conv3x3-ReLU-conv3x3 with an identity skip (EDSR style, no normalisation)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        y = nn.relu(nn.Conv(width, (3, 3), dtype=self.dtype, name="conv_0")(x))
        return x + nn.Conv(width, (3, 3), dtype=self.dtype, name="conv_1")(y)


class DepthwiseConv3x3(nn.Module):
    """Per-channel 3x3 conv (zero padding 1, optional stride, like PyTorch) with bias.

    Written as a sum of nine shifted products, which XLA fuses into one loop: XLA:CPU runs
    the equivalent grouped convolution about 10x slower. The kernel has nn.Conv's
    depthwise layout (3, 3, 1, C) and initialisation.
    """

    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        height, width, channels = x.shape[1:]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, 1, channels))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        step = self.strides
        out = bias
        for row in range(3):
            for col in range(3):
                window = padded[:, row : row + height : step, col : col + width : step]
                out = out + window * kernel[row, col, 0]
        return out


class SeparableConv(nn.Module):
    """Depthwise 3x3 conv (optionally strided) followed by a pointwise (1x1) projection.

    The 1x1 conv is a Dense on channels: same parameters, but XLA:CPU runs it as a matmul,
    about 3x faster than a 1x1 convolution.
    """

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = DepthwiseConv3x3(self.strides, dtype=self.dtype, name="depthwise")(x)
        return nn.Dense(self.features, dtype=self.dtype, name="pointwise")(y)


class SeparableResidualBlock(nn.Module):
    """Two depthwise-separable convs with a ReLU between them and an identity skip."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        y = nn.relu(SeparableConv(width, dtype=self.dtype, name="sep_0")(x))
        return x + SeparableConv(width, dtype=self.dtype, name="sep_1")(y)


class PlainCNN(ImageModel):
    """SRCNN-style plain CNN: conv+ReLU layers of `features` channels, then a conv to RGB.

    `kernel_sizes` has one entry per conv (len(features) + 1); the default is SRCNN 9-5-5.
    """

    features: tuple[int, ...] = (64, 32)
    kernel_sizes: tuple[int, ...] = (9, 5, 5)
    scale: int = 1
    dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        if len(self.kernel_sizes) != len(self.features) + 1:
            raise ValueError(
                f"PlainCNN kernel_sizes {tuple(self.kernel_sizes)} needs exactly one more entry "
                f"than features {tuple(self.features)} (the last conv maps to RGB)."
            )
        super().__post_init__()

    @property
    def feature_names(self) -> tuple[str, ...]:
        return block_names(len(self.features))

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array | tuple[jax.Array, Features]:
        del train  # No train-time behaviour (no dropout, no normalisation statistics).
        y = x.astype(self.dtype)
        features = {}
        for index, (channels, kernel) in enumerate(zip(self.features, self.kernel_sizes)):
            conv = nn.Conv(channels, (kernel, kernel), dtype=self.dtype, name=f"conv_{index}")
            y = nn.relu(conv(y))
            if return_features:
                features[f"block_{index}"] = y
        last = self.kernel_sizes[-1]
        residual = nn.Conv(
            3 * self.scale**2, (last, last), dtype=self.dtype, kernel_init=_zeros, name="conv_last"
        )(y)
        return _output(_reconstruct(x, residual, self.scale), features, return_features)


def _reconstruct(x: jax.Array, residual: jax.Array, scale: int, multiple: int = 1) -> jax.Array:
    """The output from a residual with scale**2 times the channels of the image (computed on x
    padded to `multiple`), at scale times x's size."""
    return add_global_residual(x, pixel_shuffle(residual, scale), scale, multiple)


def _residual_trunk(
    x: jax.Array, width: int, num_blocks: int, out_channels: int, dtype: Any, return_features: bool
) -> tuple[jax.Array, Features]:
    """3x3 head to `width`, residual blocks "block_{i}", zero-initialised 3x3 "conv_last".

    Called from a parent's `nn.compact` method, so the layers are the parent's own.
    """
    y = nn.Conv(width, (3, 3), dtype=dtype, name="head")(x)
    features = {}
    for index in range(num_blocks):
        y = ResidualBlock(dtype=dtype, name=f"block_{index}")(y)
        if return_features:
            features[f"block_{index}"] = y
    y = nn.Conv(out_channels, (3, 3), dtype=dtype, kernel_init=_zeros, name="conv_last")(y)
    return y, features


class _BlockStudent(ImageModel):
    """Fields of the students made of `num_blocks` blocks of `width` channels."""

    width: int = 32
    num_blocks: int = 4
    scale: int = 1
    dtype: Any = jnp.float32

    @property
    def feature_names(self) -> tuple[str, ...]:
        return block_names(self.num_blocks)


class ResidualCNN(_BlockStudent):
    """Full-resolution residual CNN: 3x3 head to `width`, `num_blocks` residual blocks, 3x3 tail."""

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array | tuple[jax.Array, Features]:
        del train  # No train-time behaviour.
        residual, features = _residual_trunk(
            x.astype(self.dtype), self.width, self.num_blocks, 3 * self.scale**2, self.dtype, return_features
        )
        return _output(_reconstruct(x, residual, self.scale), features, return_features)


class SeparableUNet(_BlockStudent):
    """Depthwise-separable encoder-decoder with one downsampling and one upsampling.

    3x3 conv to `width` at full resolution; a stride-2 separable conv to 2*width;
    `num_blocks` separable residual blocks at half resolution; a 1x1 conv to 4*width
    pixel-shuffled back to `width` at full resolution, plus the full-resolution encoder
    features (U-Net skip); a separable conv and a 3x3 conv to RGB.
    """

    @property
    def size_multiple(self) -> int:
        return 2  # one stride-2 downsampling

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array | tuple[jax.Array, Features]:
        del train  # No train-time behaviour.
        padded = pad_to_multiple(x, 2).astype(self.dtype)
        encoded = nn.relu(nn.Conv(self.width, (3, 3), dtype=self.dtype, name="stem")(padded))
        down = SeparableConv(2 * self.width, strides=2, dtype=self.dtype, name="down")
        y = nn.relu(down(encoded))
        features = {}
        for index in range(self.num_blocks):
            y = SeparableResidualBlock(dtype=self.dtype, name=f"block_{index}")(y)
            if return_features:
                features[f"block_{index}"] = y
        y = nn.Dense(4 * self.width, dtype=self.dtype, name="up")(y)  # 1x1 conv, see SeparableConv
        y = nn.relu(pixel_shuffle(y, 2)) + encoded
        y = nn.relu(SeparableConv(self.width, dtype=self.dtype, name="fuse")(y))
        residual = nn.Conv(3 * self.scale**2, (3, 3), dtype=self.dtype, kernel_init=_zeros, name="conv_last")(y)
        return _output(_reconstruct(x, residual, self.scale, multiple=2), features, return_features)


class _ShuffledStudent(_BlockStudent):
    """Students whose convolutions all run on the input pixel-unshuffled by `shuffle_factor`,
    and whose last conv predicts every output pixel of its factor x factor input block (scale
    times larger in the upscale task)."""

    shuffle_factor: int = 4

    @property
    def size_multiple(self) -> int:
        return self.shuffle_factor

    def _unshuffled(self, x: jax.Array) -> jax.Array:
        return pixel_unshuffle(pad_to_multiple(x, self.shuffle_factor).astype(self.dtype), self.shuffle_factor)

    @property
    def _out_channels(self) -> int:
        return 3 * (self.shuffle_factor * self.scale) ** 2

    def _to_output(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        shuffled = pixel_shuffle(residual, self.shuffle_factor * self.scale)
        return add_global_residual(x, shuffled, self.scale, multiple=self.shuffle_factor)


class RealtimeCNN(_ShuffledStudent):
    """Real-time student: all convolutions run at 1/`shuffle_factor` resolution.

    pixel-unshuffle, 3x3 conv to `width`, `num_blocks` residual blocks, 3x3 conv to
    3 * (factor * scale)**2 channels, pixel-shuffle to the output size, global residual.
    """

    width: int = 28
    num_blocks: int = 3
    shuffle_factor: int = 4

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array | tuple[jax.Array, Features]:
        del train  # No train-time behaviour.
        y, features = _residual_trunk(
            self._unshuffled(x), self.width, self.num_blocks, self._out_channels, self.dtype, return_features
        )
        return _output(self._to_output(x, y), features, return_features)


class RepCNN(_ShuffledStudent):
    """Re-parameterisable student: RepConv head, `num_blocks` RepConv+PReLU blocks with a long
    residual, RepConv tail predicting the (scale * factor)**2 output pixels of every position.

    All convolutions run at 1/`shuffle_factor` of the input's resolution (2, the default, to
    sharpen at the cost per output pixel of x2 upscaling; 1 for upscaling: the low-resolution
    input itself, preset "rep_x2"). Folded, width 16 with 7 blocks costs 19.3 GFLOPs per 1920x1080
    output at x2 ("rep_x2"); to sharpen, the head reads 12 channels, so preset "rep"
    has 6 blocks (18.1 GFLOPs per frame). `expand` is the width multiplier of the
    expand-squeeze training branch; `folded` selects the inference form, one 3x3 convolution
    per RepConv.
    """

    width: int = 16
    num_blocks: int = 7
    shuffle_factor: int = 2
    # The expand-squeeze branch (SESR) is off by default: on this 2-core CPU it makes a train
    # step 2.5x slower (352 vs 139 ms for batch 16 of 48x48 inputs), more than it can repay
    # within an hour's budget; the 3x3 + 1x1 + identity branches cost 1.3x a plain step.
    expand: int = 0
    folded: bool = False

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array | tuple[jax.Array, Features]:
        del train  # No train-time behaviour: the branches are the same function as the folded conv.

        def conv(features: int, name: str, **kwargs: Any) -> RepConv:
            return RepConv(features, expand=self.expand, folded=self.folded, dtype=self.dtype, name=name, **kwargs)

        def prelu(name: str) -> nn.PReLU:
            return nn.PReLU(negative_slope_init=0.25, param_dtype=jnp.float32, name=name)

        start = prelu("head_act")(conv(self.width, "head")(self._unshuffled(x)))
        y = start
        features = {}
        for index in range(self.num_blocks):
            y = prelu(f"block_{index}_act")(conv(self.width, f"block_{index}", identity=True)(y))
            if return_features:
                features[f"block_{index}"] = y
        residual = conv(self._out_channels, "tail", zero_init=True)(y + start)
        return _output(self._to_output(x, residual), features, return_features)

    def inference_form(self, params: Any) -> tuple[dict[str, Any], Any]:
        if self.folded:
            return {}, params
        identity = {"head": False, "tail": False, **{name: True for name in block_names(self.num_blocks)}}
        folded = {
            name: fold_branches(value, identity[name]) if name in identity else value
            for name, value in params.items()
        }
        return {"folded": True}, folded
