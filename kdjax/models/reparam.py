"""Re-parameterisable convolutions: trained as several linear branches, run as one convolution.

``RepConv`` (k x k, ``C_in -> C_out``) trains as the sum of (ECBSR, Zhang et al. 2021; SESR,
Bhardwaj et al. 2022; RepVGG, Ding et al. 2021):

* a k x k convolution,
* a 1 x 1 convolution,
* an expand-squeeze pair: a k x k convolution to ``expand * C_out`` channels, then a 1 x 1
  back to ``C_out`` (SESR's linear block; the over-parameterisation that eases training),
* the identity, when ``identity`` (``C_in == C_out``),

each with its own bias. Every branch is linear, so the sum is a single k x k convolution:
``fold_branches`` computes its kernel and bias exactly, borders included, since the 1 x 1
conv of the pair comes *after* the zero-padded k x k conv. With ``folded=True`` the module
is that single convolution (parameter ``conv``), which is what inference and export run.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_BRANCHES = ("conv_kxk", "conv_1x1", "expand", "squeeze")


class RepConv(nn.Module):
    """A k x k convolution trained as linear branches (see the module docstring).

    Attributes:
      features: output channels.
      kernel_size: k.
      expand: width multiplier of the expand-squeeze branch (0: no such branch).
      identity: add the input (needs as many input as output channels).
      zero_init: start as the zero map (the output layer of a residual network), so the
        expand conv keeps its random initialisation and everything after it starts at zero.
      folded: the inference form: one k x k convolution ``conv``.
    """

    features: int
    kernel_size: int = 3
    expand: int = 2
    identity: bool = False
    zero_init: bool = False
    folded: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = (self.kernel_size, self.kernel_size)
        if self.folded:
            return nn.Conv(self.features, k, dtype=self.dtype, name="conv")(x)
        init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
        y = nn.Conv(self.features, k, kernel_init=init, dtype=self.dtype, name="conv_kxk")(x)
        y = y + nn.Conv(self.features, (1, 1), kernel_init=init, dtype=self.dtype, name="conv_1x1")(x)
        if self.expand:
            hidden = nn.Conv(self.expand * self.features, k, dtype=self.dtype, name="expand")(x)
            y = y + nn.Conv(self.features, (1, 1), kernel_init=init, dtype=self.dtype, name="squeeze")(hidden)
        if self.identity:
            y = y + x
        return y


def fold_branches(params: dict[str, Any], identity: bool) -> dict[str, Any]:
    """The parameters ``{"conv": {"kernel", "bias"}}`` of the single convolution equal to a
    trained ``RepConv``'s branches (``identity`` as the module had it)."""
    params = jax.tree.map(jnp.asarray, params)  # numpy when read from a model folder
    kernel = params["conv_kxk"]["kernel"]
    bias = params["conv_kxk"]["bias"] + params["conv_1x1"]["bias"]
    k = kernel.shape[0]
    centre = k // 2
    kernel = kernel.at[centre, centre].add(params["conv_1x1"]["kernel"][0, 0])
    if "expand" in params:
        squeeze = params["squeeze"]["kernel"][0, 0]  # (hidden, out)
        kernel = kernel + jnp.einsum("hwim,mo->hwio", params["expand"]["kernel"], squeeze)
        bias = bias + params["expand"]["bias"] @ squeeze + params["squeeze"]["bias"]
    if identity:
        channels = kernel.shape[2]
        if kernel.shape[3] != channels:
            raise ValueError(
                f"An identity branch needs as many input as output channels, not {channels} and {kernel.shape[3]}."
            )
        kernel = kernel.at[centre, centre].add(jnp.eye(channels, dtype=kernel.dtype))
    return {"conv": {"kernel": kernel, "bias": bias}}


def is_unfolded(params: Any) -> bool:
    """Whether a parameter subtree is a ``RepConv`` in its training (branch) form."""
    return isinstance(params, dict) and "conv_kxk" in params and set(params) <= set(_BRANCHES)
