r"""The efficient-frontier student for x2 upscaling, distilled from an imported BSRN teacher.

The student is ``rep`` (width 16, 7 blocks; 19.3 GFLOPs per 1920x1080 output once folded):
re-parameterisable 3x3 convolutions (3x3 + 1x1 + identity branches) with PReLU, at the
low-resolution input's size, pixel-shuffled to x2. Data: ``../shared/data`` BSD68 + SunHays80
+ T91, degraded whole once (``data.cache_variants=1``: bicubic /2 has no randomness) and, with
a teacher, labelled once by it at full size (about 6 minutes of BSRN on this CPU, a
compilation per size bucket included); every
variant trains on exactly the same stream of 96 px HR patches.

Variants (``--config=configs/student_x2.py:<variant>``):
  kd         L1 to ground truth + L1 to the teacher's output (weight 1), 15000 steps: the
             released ``rep_kd_x2``; about 40 minutes on 2 CPU cores.
  none       the same student, stream and steps without a teacher.
  kd_only    the teacher's output as the only target (``loss.pixel_weight=0``): with two L1
             terms of equal weight any output between the ground truth and the teacher's is
             a minimum, so ``kd`` barely pulls towards the teacher; here the student fits
             the teacher alone, the cleaner (better predictable) of the two targets.
  dukd       output KD plus data-upcycling KD (``loss.aux_kd_weight=1``): each step also fits
             the student to the teacher on a patch of a zoomed-in view (a crop of the sharp
             target used as input) or a zoomed-out view (the input downscaled by 2) of each
             example's image, labelled once by the teacher (about 2 more minutes of BSRN).
  dukd_only  DUKD with the teacher as the only target (``loss.pixel_weight=0``): the two
             variants that beat the student alone by more than the seed noise, combined.
  <variant>_short   2500 steps (kd_short, none_short, ...): the distillation ablation
             (configs/ablation_x2.py), run over seeds 0, 1, 2 (``--config.seed=N``); about 4.5
             minutes each on 2 CPU cores (dukd: 7, two student passes).
  <variant>_medium  5000 steps: the ablation's ``medium`` variant (none and dukd).

Run (from the repository root; the teacher is imported once from the authors' checkpoint):
  kdjax import-weights --arch=bsrn --input=../shared/weights/bsrn_x2.pth --output=runs/teachers/bsrn_x2
  kdjax train --config=configs/student_x2.py:kd --workdir=runs/students/rep_kd_x2

Expect (Set5 / Set14 PSNR-Y): ``kd`` 37.27 / 32.85 (the released weights). The ablation's
2500-step variants over 3 seeds, on Set5: none 36.87 ± 0.02, kd 36.89 ± 0.03, dukd 36.92 ±
0.01, kd_only 36.91 ± 0.01, dukd_only 36.91 ± 0.03; the 5000-step ones: none 37.03 ± 0.03,
dukd 37.07 ± 0.01 (BENCHMARKS.md).
"""

from kdjax import config as config_lib
from kdjax.configs import common
from kdjax.models import model_config

TEACHER = "runs/teachers/bsrn_x2"
METHODS = ("kd", "none", "kd_only", "dukd", "dukd_only")
# Budget suffix -> steps: the released run, the ablation's and the ablation's at twice the steps.
BUDGETS = {"": 15000, "_short": 2500, "_medium": 5000}
STEPS = {method + suffix: steps for method in METHODS for suffix, steps in BUDGETS.items()}


def student_config(
    model, num_steps: int, teacher: str = "", aux_kd_weight: float = 0.0, pixel_weight: float = 1.0
):
    """The students' recipe: BSD68 + SunHays80 + T91 degraded once (x2 upscale by default),
    batch 16 of 96 px patches, AdamW 2e-3 with warm-up and cosine decay, no weight decay;
    with a ``teacher``, L1 to its cached output (weight 1) beside L1 to the ground truth, and
    ``aux_kd_weight`` times L1 to its output on zoomed views (DUKD); ``pixel_weight`` scales the
    L1 to the ground truth (0: the teacher's output is the only target)."""
    config = config_lib.base_config()
    config.model = model
    config.data = common.upscale_data_config(patch_size=96, scale=2)
    config.data.cache_variants = 1
    config.data.min_size_policy = "pad"  # T91 has one 78x78 image
    config.batch_size = 16
    config.num_steps = num_steps
    config.optim.learning_rate = 2e-3
    config.optim.warmup_steps = 200
    config.optim.weight_decay = 0.0
    config.loss.pixel_weight = pixel_weight
    if teacher:
        config.teacher.workdir = teacher
        config.teacher.which = "latest"
        config.loss.output_kd_weight = 1.0
        config.loss.aux_kd_weight = aux_kd_weight
    config.eval.crop_border = 2
    config.eval.every_steps = 2000 if num_steps > 5000 else num_steps
    config.checkpoint.every_steps = 1000
    return config


def get_config(variant=None):
    variant = variant or "kd"
    if variant not in STEPS:
        raise ValueError(f"Unknown student_x2 variant {variant!r}; choose one of {sorted(STEPS)}.")
    model = model_config("rep_x2", width=16, num_blocks=7, expand=0)
    teacher = "" if variant.startswith("none") else TEACHER
    return student_config(
        model, STEPS[variant], teacher,
        aux_kd_weight=1.0 if variant.startswith("dukd") else 0.0,
        pixel_weight=0.0 if "_only" in variant else 1.0,
    )
