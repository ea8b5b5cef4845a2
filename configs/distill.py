r"""Distil the ``realtime`` student from a trained teacher (ground truth + teacher).

The teacher is restored (frozen) from ``config.teacher.workdir``; its own model
config is read from there. Losses: L1 to ground truth, L1 to the teacher's
output, and L2 between adapted student features and teacher features.

Variants (``--config=configs/distill.py:<variant>``):
  both      output + feature distillation (default)
  output    output distillation only
  feature   feature distillation only
  affinity  output + spatial-affinity (FAKD) feature distillation
  none      every KD weight 0: the student-only baseline (= configs/student_only.py)

Run (from the repository root, after configs/teacher.py):
  python launch.py --config=configs/distill.py:both --workdir=runs/student_kd \
      --config.teacher.workdir=runs/teacher_light

Expect the student's Set5 PSNR (Y) to pass bicubic (33.66 dB) early and to end
above the same student trained without KD (configs/student_only.py).
"""

from kdjax import config as config_lib
from kdjax.models import model_config

KD_WEIGHTS = {
    "both": dict(output_kd_weight=1.0, feature_kd_weight=0.1, feature_kd="l2"),
    "output": dict(output_kd_weight=1.0, feature_kd_weight=0.0, feature_kd="l2"),
    "feature": dict(output_kd_weight=0.0, feature_kd_weight=0.1, feature_kd="l2"),
    "affinity": dict(output_kd_weight=1.0, feature_kd_weight=1.0, feature_kd="affinity"),
    "none": dict(output_kd_weight=0.0, feature_kd_weight=0.0, feature_kd="l2"),
}
# realtime has 3 blocks, swin_light 4 residual groups: match early to early, late to late.
FEATURE_PAIRS = "block_0:group_0,block_2:group_3"


def get_config(variant=None):
    variant = variant or "both"
    if variant not in KD_WEIGHTS:
        raise ValueError(f"Unknown distillation variant {variant!r}; choose one of {sorted(KD_WEIGHTS)}.")
    config = config_lib.base_config()
    config.model = model_config("realtime")
    config.data = config_lib.benchmark_data_config(patch_size=64)
    config.batch_size = 16
    config.num_steps = 20000
    config.optim.learning_rate = 1e-3
    config.loss.update(KD_WEIGHTS[variant])
    config.loss.feature_pairs = FEATURE_PAIRS
    if variant != "none":
        config.teacher.workdir = "runs/teacher_light"
    config.eval.crop_border = 2
    config.eval.every_steps = 1000
    config.checkpoint.every_steps = 1000
    return config
