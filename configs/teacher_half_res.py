r"""Sharpen-task teacher: the Swin body at full or at half resolution, for the same CPU time.

A suite (``kdjax.suite``) of two runs of ``configs/teacher.py:light`` (bicubic x2 down-up inputs,
BSD68 + SunHays80, batch 8 of 32 px patches) that differ only in the model: ``full``
(``swin_light``, the attention body at the input's resolution) and ``half``
(``swin_light_half``: pixel-unshuffled by 2 after the shallow conv, 3.8x fewer FLOPs per frame).
Each gets ``MINUTES`` of this CPU: its step count is the budget divided by its measured step
time (``STEP_SECONDS``), with its own cosine schedule ending there, so the half-resolution body
takes about 4x the steps. Evaluated once at the end on Set5 and Set14 (PSNR/SSIM on Y, border
crop 2).

``STEP_SECONDS`` were measured on this machine's 2 CPU cores with nothing else running, as the
rate between steps 20 and 40 of
  kdjax train --config=configs/teacher.py:light --config.model.name=<model> \
      --config.num_steps=40 --config.log_every_steps=20 --workdir=/tmp/time_<model>
(0.55 steps/s for ``swin_light``, 2.16 for ``swin_light_half``).

Run (from the repository root):
  kdjax train --config=configs/teacher_half_res.py --workdir=runs/teacher_half_res

About 30 minutes on 2 CPU cores (two 10-minute trainings plus compilation and evaluation).
Expect (Set5 / Set14 PSNR-Y; BENCHMARKS.md, "The sharpen task's teacher with its Swin body at
half resolution"): full 34.92 / 31.29 dB after 328 steps, half 36.06 / 32.06 after 1,296
(bicubic input 33.67 / 30.32).
"""

import ml_collections

from kdjax.configs import common, teacher
from kdjax.models import model_config

MINUTES = 10
STEP_SECONDS = {"swin_light": 1.83, "swin_light_half": 0.463}
MODELS = {"full": "swin_light", "half": "swin_light_half"}


def run_config(model_name: str) -> ml_collections.ConfigDict:
    """``teacher.py:light`` with `model_name`, trained for ``MINUTES`` of this CPU."""
    config = teacher.get_config("light")
    config.model = model_config(model_name)
    config.num_steps = round(MINUTES * 60 / STEP_SECONDS[model_name])
    config.optim.warmup_steps = min(config.optim.warmup_steps, config.num_steps // 10)
    config.eval.every_steps = config.num_steps  # once, at the end: evaluating is not training time
    config.checkpoint.every_steps = config.num_steps // 4
    return config


def get_config(variant=None):
    del variant
    suite = ml_collections.ConfigDict()
    suite.runs = ml_collections.ConfigDict({name: run_config(model) for name, model in MODELS.items()})
    suite.order = tuple(MODELS)
    suite.labels = ml_collections.ConfigDict(
        {
            "full": f"swin_light, full-resolution body, {MINUTES} CPU min",
            "half": f"swin_light_half, half-resolution body, {MINUTES} CPU min",
        }
    )
    suite.eval_dirs = (f"{common.SHARED_DATA}/Set5", f"{common.SHARED_DATA}/Set14")
    return suite
