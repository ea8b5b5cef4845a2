r"""Distil the ``realtime`` student from a trained teacher (ground truth + teacher).

The teacher is restored (frozen) from ``config.teacher.workdir`` (a training
workdir or a ``pretrained/`` folder); its own model config is read from there.
Losses: L1 to ground truth, L1 to the teacher's output, and L2 between adapted
student features and teacher features (relative to the teacher feature's RMS).

Variants (``--config=configs/distill.py:<variant>``):
  output    output distillation only (default: the best measured variant; feature KD cost
            this student 0.18-0.35 dB at width 28 and the x2 ``rep`` student 0.16-0.37 dB,
            BENCHMARKS.md)
  both      output + feature distillation
  feature   feature distillation only
  affinity  output + spatial-affinity (FAKD) feature distillation
  none      every KD weight 0: the student-only baseline (= configs/student_only.py)

Budget (2 CPU cores): 5000 steps of batch 16 at 48 px, about 2.5 minutes with
its evaluations, on a pool of 128 batches (~4.7M pixels of BSD68 + SunHays80)
that swin_light labels once in 4.3 minutes; running the teacher inside every
step instead would add at least 2.0 s per step on this machine (its forward
pass over one batch, as timed while labelling the pool).

Run (from the repository root, after configs/teacher.py:light):
  kdjax train --config=configs/distill.py:output --workdir=runs/student_kd \
      --config.teacher.workdir=runs/bench/teacher_light

Expect (measured, Set5 PSNR-Y, teacher 36.43 dB): output 35.74, none 35.56,
both 35.38, feature 35.21 dB (bicubic input 33.67).

``configs/benchmark.py`` runs the teacher and these variants as one suite;
BENCHMARKS.md has the measured results.
"""

from kdjax import config as config_lib
from kdjax.configs import common
from kdjax.models import model_config

KD_WEIGHTS = {
    "both": dict(output_kd_weight=0.5, feature_kd_weight=0.02, feature_kd="l2"),
    "output": dict(output_kd_weight=0.5, feature_kd_weight=0.0, feature_kd="l2"),
    "feature": dict(output_kd_weight=0.0, feature_kd_weight=0.02, feature_kd="l2"),
    "affinity": dict(output_kd_weight=0.5, feature_kd_weight=0.5, feature_kd="affinity"),
    "none": dict(output_kd_weight=0.0, feature_kd_weight=0.0, feature_kd="l2"),
}
# realtime has 3 blocks, swin_light 4 residual groups: match early to early, late to late.
FEATURE_PAIRS = "block_0:group_0,block_2:group_3"


def get_config(variant=None):
    variant = variant or "output"
    if variant not in KD_WEIGHTS:
        raise ValueError(f"Unknown distillation variant {variant!r}; choose one of {sorted(KD_WEIGHTS)}.")
    config = config_lib.base_config()
    config.model = model_config("realtime")
    config.data = common.benchmark_data_config(patch_size=48)
    config.batch_size = 16
    config.num_steps = 5000
    config.optim.learning_rate = 1e-3
    # Every variant, with or without a teacher, trains on the same fixed pool of
    # batches, so the variants differ only in what the teacher adds.
    config.pool_batches = 128
    config.loss.update(KD_WEIGHTS[variant])
    config.loss.feature_pairs = FEATURE_PAIRS
    if variant != "none":
        config.teacher.workdir = "runs/bench/teacher_light"
    # The final teacher, not the one that scored best on Set5 (which is the test set).
    config.teacher.which = "latest"
    config.eval.crop_border = 2
    config.eval.every_steps = 1000
    config.checkpoint.every_steps = 1000
    return config
