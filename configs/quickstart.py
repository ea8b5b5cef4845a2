r"""Quickstart: teacher, distilled student and the student without KD, on a laptop CPU.

Data: the colour photographs that ship with scikit-image (no download); seven to
train on, chelsea and coffee held out for evaluation. Degradation: mild Gaussian
blur then bicubic x2 down-up. Runs, in ``WORKDIR/<run>``:
  teacher       swin_tiny trained on ground truth;
  student_kd    realtime student, ground truth + output and feature distillation
                (L1 to the teacher's output, L2 between adapted features) from
                the frozen teacher;
  student_only  the same student, same steps, ground truth only.
Writes ``WORKDIR/results.json`` and ``WORKDIR/results.md`` (PSNR/SSIM of the
input and of each model, parameters, GFLOPs per 1080p frame), and grids
input | teacher | model | ground truth under ``WORKDIR/<run>/grids/``.

Run:
  make quickstart      # = kdjax train --config=configs/quickstart.py --workdir=runs/quickstart

Expect (2 CPU cores, about 12 minutes): the teacher and both students above the
degraded input in PSNR; see the README for the measured table.
"""

import ml_collections

from kdjax import config as config_lib
from kdjax import data, degradations
from kdjax.models import model_config

FEATURE_PAIRS = "block_0:group_0,block_2:group_1"


def _run(model, num_steps, learning_rate):
    config = config_lib.base_config()
    config.model = model
    config.data.train_source = data.skimage_source_config("train")
    config.data.eval_source = data.skimage_source_config("eval")
    config.data.patch_size = 48
    config.data.degradation = degradations.default_degradation_config(
        ops=("gaussian_blur", "bicubic"),
        scale=2,
        gaussian_blur=dict(train_sigma=(0.2, 1.0), train_anisotropic_prob=0.0, eval_sigma_x=0.6, eval_sigma_y=0.6),
    )
    config.batch_size = 8
    config.num_steps = num_steps
    config.optim.learning_rate = learning_rate
    config.optim.warmup_steps = 50
    config.ema_decay = 0.99
    config.log_every_steps = 50
    config.eval.every_steps = num_steps
    config.eval.crop_border = 2
    config.eval.num_grid_images = 2
    config.checkpoint.every_steps = 250
    return config


def get_config(variant=None):
    del variant
    teacher = _run(model_config("swin_tiny"), num_steps=1200, learning_rate=1e-3)
    student_kd = _run(model_config("realtime"), num_steps=1500, learning_rate=2e-3)
    student_kd.teacher.workdir = "@teacher"
    # Mild weights: at this budget the teacher is only a little stronger than the
    # student, and stronger pulls towards it (or towards its features) cost PSNR.
    student_kd.loss.output_kd_weight = 0.2
    student_kd.loss.feature_kd_weight = 0.005
    student_kd.loss.feature_pairs = FEATURE_PAIRS
    student_only = _run(model_config("realtime"), num_steps=1500, learning_rate=2e-3)
    suite = ml_collections.ConfigDict()
    suite.runs = ml_collections.ConfigDict(
        dict(teacher=teacher, student_kd=student_kd, student_only=student_only)
    )
    suite.order = ("teacher", "student_kd", "student_only")
    suite.labels = ml_collections.ConfigDict(
        dict(teacher="teacher (swin_tiny)", student_kd="student with KD (realtime)",
             student_only="student without KD (realtime)")
    )
    return suite
