"""The complete default run config, and its validation.

Every file under ``configs/`` starts from ``base_config()`` and changes what its
experiment needs, so that every key a run reads exists (and ``--config.x=...``
overrides of a misspelt key fail at once, naming the key). Experiment presets live in
``configs/``, never here.
"""

from __future__ import annotations

import ml_collections

from kdjax import data, distill, losses, models


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    # The model being trained: the teacher in teacher runs, the student in distillation.
    config.model = models.model_config("swin_tiny")
    # A frozen teacher for distillation, restored from its own training workdir
    # (its model config is read from there); empty means no teacher.
    # in_step: run the teacher inside every step (accelerators) rather than reading its labels
    # from the per-image cache, which data.cache_variants > 0 enables (kdjax.data.degraded).
    config.teacher = ml_collections.ConfigDict(
        dict(workdir="", which="best", ema=True, in_step=False, model=ml_collections.ConfigDict())
    )
    # Where the trained model's parameters start: "" draws them at random; a model folder or a
    # training workdir (its `which` checkpoint, EMA weights if `ema`) makes the run a fine-tuning
    # of that model (config.model must be the same network). A resumed run starts from its own
    # checkpoint instead.
    config.init = ml_collections.ConfigDict(dict(workdir="", which="latest", ema=True))
    config.data = data.default_data_config()
    config.batch_size = 16  # global, over all devices and hosts
    config.num_steps = 2000
    config.optim = ml_collections.ConfigDict(
        dict(
            learning_rate=2e-4,
            warmup_steps=100,
            end_lr_factor=0.01,
            weight_decay=1e-4,
            b1=0.9,
            b2=0.99,
            eps=1e-8,
            grad_clip_norm=1.0,  # 0 disables clipping
        )
    )
    config.ema_decay = 0.999  # the EMA's final decay (it ramps up to it); 0 disables the EMA
    config.loss = ml_collections.ConfigDict(
        dict(
            pixel="l1",  # l1 | mse | charbonnier
            pixel_weight=1.0,
            charbonnier_eps=1e-3,
            ssim_weight=0.0,
            output_kd="l1",  # pixel loss between student and teacher outputs
            output_kd_weight=0.0,
            feature_kd="l2",  # l1 | l2 | affinity
            feature_kd_weight=0.0,
            feature_pairs="",  # "student_feature:teacher_feature,..."
            affinity_max_side=32,
            # Data-upcycling KD (DUKD): L1 (loss.output_kd) between the student's and the teacher's
            # outputs on auxiliary views of each patch's image that the ground truth cannot label
            # (zoomed in / out, kdjax.data.degraded.zoom_views), labelled once in the per-image
            # cache; one auxiliary patch per example, so a step runs the student on twice the patches.
            aux_kd_weight=0.0,
        )
    )
    # 0: train on the endless data stream. N > 0: train on its first N batches,
    # cycled; with a teacher, its outputs and tapped features are computed once
    # per pool batch, so a slow teacher costs N forward passes instead of one per
    # step (what makes distilling from a Swin teacher affordable on a CPU).
    config.pool_batches = 0
    config.eval = ml_collections.ConfigDict(
        dict(every_steps=500, crop_border=2, num_grid_images=3)
    )
    config.checkpoint = ml_collections.ConfigDict(
        dict(every_steps=500, keep_latest=2, keep_best=1, async_save=True)
    )
    config.log_every_steps = 50
    config.distributed = ml_collections.ConfigDict(
        dict(
            enabled=False,
            coordinator_address="",  # host:port of process 0; empty = auto-detect
            num_processes=ml_collections.config_dict.placeholder(int),
            process_id=ml_collections.config_dict.placeholder(int),
        )
    )
    return config


def _check_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ValueError(f"config.{key}={value!r} is not one of {choices}; set --config.{key} to one of them.")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises a one-sentence ``ValueError`` for settings that cannot run."""
    _check_choice(config.loss.pixel, losses.PIXEL_LOSSES, "loss.pixel")
    _check_choice(config.loss.output_kd, losses.PIXEL_LOSSES, "loss.output_kd")
    distill.validate(config)
    for key in (
        "num_steps", "batch_size", "log_every_steps", "eval.every_steps", "checkpoint.every_steps", "data.patch_size"
    ):
        value = config
        for part in key.split("."):
            value = value[part]
        if value <= 0:
            raise ValueError(f"config.{key}={value} must be a positive integer.")
    if config.pool_batches < 0:
        raise ValueError(f"config.pool_batches={config.pool_batches} must be 0 (no pool) or positive.")
    data.check_task(config.data)
    model = models.build_model(config.model)
    scale = data.output_scale(config.data)
    if model.scale != scale:
        raise ValueError(
            f"config.model ({config.model.name}) outputs images {model.scale}x the input's size but the data's "
            f"task ({config.data.degradation.task}, scale {config.data.degradation.scale}) needs {scale}x; set "
            f"--config.model.overrides.scale={scale} or change data.degradation.task."
        )
