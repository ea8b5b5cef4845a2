r"""The ``stream_x2`` task (kdjax.tasks): a teacher fine-tuned for compressed low-resolution
frames, and real-time students distilled from it.

Data: ``../shared/data`` BSD68 + SunHays80 + T91, each image degraded whole 4 times by the
task's training chain (mild blur and noise, bicubic /2, H.264 at CRF 18-40; ``kdjax.tasks``)
into the per-image cache (``data.cache_variants=4``), 96 px HR patches, batch 16. Validation:
Set5 at the task's ``moderate`` strength (CRF 28).

Variants (``--config=configs/stream_x2.py:<variant>``):
  teacher    RLFN x2 fine-tuned from its authors' weights (``config.init``, imported as in
             configs/student_x2.py), AdamW 2e-4 with cosine decay, 2,000 steps of batch 8.
  kd         the ``rep_x2`` student (width 16, 7 blocks, as ``rep_kd_x2``) distilled from the
             fine-tuned teacher's labels (L1 to the ground truth + L1 to the teacher, weight 1),
             computed once per stored image.
  kd_only    the teacher's output as the only target; at 5,000 steps (seed 0) the released
             ``stream_x2``.
  none       the same student, stream and steps without a teacher.
  <variant>_short   the ablation's budget (configs/ablation_x2.py:stream), 2,500 steps;
             without the suffix 5,000 steps.

Run (from the repository root):
  kdjax import-weights --arch=rlfn --input=../shared/weights/rlfn_x2.pth --output=runs/teachers/rlfn_x2
  kdjax train --config=configs/stream_x2.py:teacher --workdir=runs/teachers/stream_x2_rlfn
  kdjax train --config=configs/stream_x2.py:kd_only --workdir=runs/students/stream_x2
  kdjax export --model=runs/students/stream_x2 --which=latest --output=runs/release/stream_x2
  cp -r runs/release/stream_x2 pretrained/   # kdjax itself never writes into pretrained/

Results: benchmarks/results/stream_x2.json (every model at both evaluation strengths on Set5,
Set14 and Urban100) and benchmarks/results/ablation_stream_x2.json (the 3-seed ablation).
"""

from kdjax import tasks
from kdjax.configs import common, student_x2
from kdjax.models import model_config

TEACHER_INIT = "runs/teachers/rlfn_x2"
TEACHER = "runs/teachers/stream_x2_rlfn"
CACHE_VARIANTS = 4
METHODS = ("kd", "kd_only", "none")
BUDGETS = {"": 5000, "_short": 2500}
STUDENTS = {method + suffix: steps for method in METHODS for suffix, steps in BUDGETS.items()}


def data_config(patch_size: int = 96):
    """The task's training stream (stored degraded variants) and its validation on Set5."""
    data = common.upscale_data_config(patch_size=patch_size, scale=2)
    data.degradation = tasks.degradation("stream_x2")
    data.cache_variants = CACHE_VARIANTS
    data.min_size_policy = "pad"  # T91 has one 78x78 image
    return data


def teacher_config():
    """RLFN x2 fine-tuned on the task's stream from the authors' weights."""
    config = student_x2.student_config(model_config("rlfn"), 2000)
    config.init.workdir = TEACHER_INIT
    config.data = data_config()
    config.batch_size = 8  # a step of RLFN costs about 7x the student's on this CPU
    config.optim.learning_rate = 2e-4
    config.optim.warmup_steps = 100
    config.eval.every_steps = 500
    config.checkpoint.every_steps = 250
    return config


def get_config(variant=None):
    variant = variant or "kd"
    if variant == "teacher":
        return teacher_config()
    if variant not in STUDENTS:
        raise ValueError(f"Unknown stream_x2 variant {variant!r}; choose teacher or one of {sorted(STUDENTS)}.")
    model = model_config("rep_x2", width=16, num_blocks=7, expand=0)
    teacher = "" if variant.startswith("none") else TEACHER
    config = student_x2.student_config(
        model, STUDENTS[variant], teacher, pixel_weight=0.0 if variant.startswith("kd_only") else 1.0
    )
    config.data = data_config()
    return config
