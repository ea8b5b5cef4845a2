r"""The ``realtime`` student trained on ground truth alone: the ablation's baseline.

Identical to ``configs/distill.py`` (same student, data, steps and optimizer)
with every distillation weight at 0 and no teacher.

Run (from the repository root):
  kdjax train --config=configs/student_only.py --workdir=runs/student_only
"""

from kdjax.configs import distill


def get_config(variant=None):
    del variant
    return distill.get_config("none")
