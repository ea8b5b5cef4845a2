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

from kdjax.losses import FeatureAdapters
from kdjax.models import feature_shapes

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


def parse_feature_pairs(spec: str) -> list[tuple[str, str]]:
    """Parses ``"block_1:group_0,block_3:group_1"`` into (student, teacher) name pairs."""
    pairs = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        student, sep, teacher = item.partition(":")
        if not sep or not student or not teacher:
            raise ValueError(
                f"config.loss.feature_pairs entry {item!r} is not of the form "
                "'student_feature:teacher_feature' (e.g. 'block_1:group_0')."
            )
        pairs.append((student.strip(), teacher.strip()))
    return pairs


def build_adapters(
    config: ml_collections.ConfigDict, model: nn.Module, teacher: nn.Module | None
) -> tuple[FeatureAdapters | None, dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """The feature adapters for ``config.loss.feature_pairs`` (None without feature KD).

    Also returns the student's and teacher's feature shapes for a training patch,
    after checking that every named feature exists.
    """
    if not config.loss.feature_kd_weight:
        return None, {}, {}
    if teacher is None:
        raise ValueError(
            "config.loss.feature_kd_weight > 0 needs a teacher; set config.teacher.workdir "
            "to a trained teacher's workdir, or set --config.loss.feature_kd_weight=0."
        )
    pairs = parse_feature_pairs(config.loss.feature_pairs)
    if not pairs:
        raise ValueError(
            "config.loss.feature_kd_weight > 0 but config.loss.feature_pairs is empty; "
            "name the pairs to match, e.g. --config.loss.feature_pairs=block_1:group_0."
        )
    patch = config.data.patch_size
    image_shape = (1, patch, patch, 3)
    student_shapes = feature_shapes(model, image_shape)
    teacher_shapes = feature_shapes(teacher, image_shape)
    for student_name, teacher_name in pairs:
        for name, shapes, who in ((student_name, student_shapes, "student"), (teacher_name, teacher_shapes, "teacher")):
            if name not in shapes:
                raise ValueError(
                    f"config.loss.feature_pairs names {who} feature {name!r}, which the "
                    f"{who} does not have; choose among {sorted(shapes)}."
                )
    adapters = FeatureAdapters(
        pairs=tuple(pairs), teacher_channels=tuple(teacher_shapes[t][-1] for _, t in pairs)
    )
    return adapters, student_shapes, teacher_shapes


def init_params(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    rng: jax.Array,
    teacher: nn.Module | None = None,
) -> Params:
    """Initial trainable parameters ``{"model": ..., "adapters": ...}`` for a training patch."""
    patch = config.data.patch_size
    model_rng, adapter_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, patch, patch, 3), jnp.float32)
    params = {"model": model.init(model_rng, dummy, train=False)["params"], "adapters": {}}
    adapters, student_shapes, teacher_shapes = build_adapters(config, model, teacher)
    if adapters is not None:
        student_features = {name: jnp.zeros(shape, jnp.float32) for name, shape in student_shapes.items()}
        params["adapters"] = adapters.init(
            adapter_rng, student_features, [teacher_shapes[t] for _, t in adapters.pairs]
        )["params"]
    return params
