r"""The ``realtime`` student trained on ground truth alone: the ablation's baseline.

Identical to ``configs/distill.py`` (same student, data, steps and optimizer)
with every distillation weight at 0 and no teacher.

Run (from the repository root):
  python launch.py --config=configs/student_only.py --workdir=runs/student_only
"""

import importlib.util
from pathlib import Path


def get_config(variant=None):
    del variant
    spec = importlib.util.spec_from_file_location("distill", Path(__file__).with_name("distill.py"))
    distill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(distill)
    return distill.get_config("none")
