"""The train state (what a checkpoint holds) and the optimizer that updates it.

The state holds only what is trained: the model (student or teacher being
trained) and, for distillation, the feature adapters. A frozen teacher's
parameters are never part of it, so they are never written to a student's
checkpoint.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from kdjax.data import input_size
from kdjax.distill import AdapterSpec

Params = Any


@flax.struct.dataclass
class TrainState:
    """Step counter, trainable parameters, optimizer state and their EMA.

    ``params`` is ``{"model": ..., "adapters": ...}``; ``adapters`` is an empty
    dict when no feature distillation is configured. ``ema_params`` mirrors
    ``params`` (a copy when EMA is disabled, so the tree shape never changes).
    """

    step: jax.Array
    params: Params
    opt_state: optax.OptState
    ema_params: Params


def learning_rate_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warm-up to ``optim.learning_rate``, then cosine decay to ``end_lr_factor`` of it."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=optim.learning_rate,
        warmup_steps=min(optim.warmup_steps, max(num_steps - 1, 0)),
        decay_steps=max(num_steps, 1),
        end_value=optim.learning_rate * optim.end_lr_factor,
    )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with warm-up + cosine schedule and global-norm gradient clipping."""
    optim = config.optim
    steps = [optax.clip_by_global_norm(optim.grad_clip_norm)] if optim.grad_clip_norm else []
    steps.append(
        optax.adamw(
            learning_rate_schedule(optim, config.num_steps),
            b1=optim.b1,
            b2=optim.b2,
            eps=optim.eps,
            weight_decay=optim.weight_decay,
        )
    )
    return optax.chain(*steps)


def create_train_state(params: Params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params),
    )


def init_params(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    rng: jax.Array,
    adapters: AdapterSpec | None = None,
) -> Params:
    """Initial trainable parameters ``{"model": ..., "adapters": ...}`` for a training patch."""
    patch = input_size(config.data)
    model_rng, adapter_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, patch, patch, 3), jnp.float32)
    return {
        "model": model.init(model_rng, dummy, train=False)["params"],
        "adapters": {} if adapters is None else adapters.init(adapter_rng),
    }
