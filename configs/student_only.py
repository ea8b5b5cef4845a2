r"""The ``realtime`` student trained on ground truth alone: the ablation's baseline.

Identical to ``configs/distill.py`` (same student, data, steps and optimizer)
with every distillation weight at 0 and no teacher.

Run (from the repository root):
  python launch.py --config=configs/student_only.py --workdir=runs/student_only
"""

from kdjax import config as config_lib


def get_config(variant=None):
    del variant
    return config_lib.sibling_config_module(__file__, "distill").get_config("none")
