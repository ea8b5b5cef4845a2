"""Model accounting: parameter counts, feature-tap shapes, and FLOPs / memory of the
compiled forward pass from XLA's cost and memory analysis.

`params` everywhere is the "params" collection (what `model.init(...)["params"]` returns),
real arrays or `jax.ShapeDtypeStruct`s: nothing here runs the model, it is only traced
(`jax.eval_shape`) or lowered and compiled, so even swin_base at 1080p costs no compute.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


FRAME_HEIGHT, FRAME_WIDTH = 1080, 1920
# Parameters do not depend on the spatial size; 16 is a multiple of every window/factor.
_INIT_SHAPE = (1, 16, 16, 3)


def abstract_params(model: nn.Module) -> Any:
    """Shapes and dtypes of the model's "params" collection, without allocating or computing."""
    spec = jax.ShapeDtypeStruct(_INIT_SHAPE, jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x)["params"], spec)


def count_params(params: Any) -> int:
    """Number of scalar parameters in a pytree of arrays or ShapeDtypeStructs."""
    return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree.leaves(params)))


def feature_shapes(
    model: nn.Module, input_shape: tuple[int, int, int, int]
) -> dict[str, tuple[int, ...]]:
    """Shapes of the feature taps for an input of `input_shape` (N, H, W, 3), via eval_shape."""

    def forward_features(x: jax.Array) -> dict[str, jax.Array]:
        variables = model.init(jax.random.key(0), x)
        return model.apply(variables, x, return_features=True)[1]

    spec = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    features = jax.eval_shape(forward_features, spec)
    return {name: tuple(leaf.shape) for name, leaf in features.items()}


@dataclasses.dataclass(frozen=True)
class ForwardCost:
    """XLA's estimate for one compiled inference forward pass.

    flops counts a multiply-add as 2 flops (plus elementwise ops); temp_bytes is the scratch
    memory XLA plans for activations, None where the backend does not report it.
    """

    flops: float
    temp_bytes: int | None
    argument_bytes: int | None
    output_bytes: int | None


def forward_cost(
    model: nn.Module,
    params: Any = None,
    *,
    height: int = FRAME_HEIGHT,
    width: int = FRAME_WIDTH,
    batch: int = 1,
) -> ForwardCost:
    """Cost analysis of `model.apply` on a (batch, height, width, 3) float32 input.

    Lowers and compiles without running; `params` defaults to the abstract parameters.
    """
    if params is None:
        params = abstract_params(model)
    params_spec = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), params)
    input_spec = jax.ShapeDtypeStruct((batch, height, width, 3), jnp.float32)
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
    compiled = forward.lower(params_spec, input_spec).compile()
    # jax 0.10 returns one dict for the whole executable.
    cost = compiled.cost_analysis()
    memory = compiled.memory_analysis()
    return ForwardCost(
        flops=float(cost["flops"]),
        temp_bytes=None if memory is None else int(memory.temp_size_in_bytes),
        argument_bytes=None if memory is None else int(memory.argument_size_in_bytes),
        output_bytes=None if memory is None else int(memory.output_size_in_bytes),
    )


def gflops_per_frame(
    model: nn.Module, params: Any = None, height: int = FRAME_HEIGHT, width: int = FRAME_WIDTH
) -> float:
    """GFLOPs (multiply-add = 2) of one forward pass on a single height x width frame."""
    return forward_cost(model, params, height=height, width=width).flops / 1e9
