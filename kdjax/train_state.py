"""The train state (what a checkpoint holds) and the optimizer that updates it.

The state holds only what is trained: the model (student or teacher being
trained) and, for distillation, the feature adapters. A frozen teacher's
parameters are never part of it, so they are never written to a student's
checkpoint. A fine-tuning run's state starts from another model's trained parameters
(``config.init``, ``fine_tuning_start``).
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import traverse_util

from kdjax import weights
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


def fine_tuning_start(config: ml_collections.ConfigDict, params: Params) -> Params:
    """``params`` with the model's replaced by the trained ones ``config.init`` names (a
    fine-tuning run), or unchanged when ``config.init.workdir`` is empty.

    Raises a one-sentence ``ValueError`` when those parameters are of another network.
    """
    if not config.init.workdir:
        return params
    init_config, trained = weights.restore_params(config.init.workdir, which=config.init.which, ema=config.init.ema)
    def shapes(tree) -> dict[tuple[str, ...], tuple[int, ...]]:
        return {key: np.shape(leaf) for key, leaf in traverse_util.flatten_dict(flax.core.unfreeze(tree)).items()}

    if shapes(params["model"]) != shapes(trained):
        raise ValueError(
            f"config.init.workdir={config.init.workdir} holds a {init_config.model.name} whose parameters do not "
            f"fit config.model ({config.model.name}); set config.model to its model config or start from "
            "another folder."
        )
    return {**params, "model": jax.tree.map(np.asarray, trained)}
