r"""Does distillation pay? The x2 ``rep`` student with and without the BSRN teacher, 3 seeds.

A suite (``kdjax.suite``) of runs from ``configs/student_x2.py``, each trained with seeds 0, 1
and 2: ``none`` (ground truth only), ``kd`` (plus L1 to the teacher's output, weight 1),
``dukd`` (output KD plus the teacher's labels on zoomed views, DUKD), ``kd_only`` (the
teacher's output as the only target) and ``dukd_only`` (the last two combined). All read
exactly the same stream (the per-image cache of ``kdjax.data.degraded``: same degraded
images, same crops, same order for a given seed) for the same steps; only the loss differs.
Evaluated on Set5 and Set14 (PSNR/SSIM on Y, border crop 2); the table shows mean ± sample
std over the seeds.

Variants (``--config=configs/ablation_x2.py:<variant>``):
  short   (default) all five runs at 2500 steps.
  medium  ``none`` and ``dukd`` (the best method of ``short``) at 5000 steps: does the gain
          grow with the budget?
  sharpen the sharpen student of configs/student_sharpen.py (bicubic x2 down-up inputs, 5000
          steps) with output KD from BSRN (the released ``rep_kd_sharpen_x2`` recipe) and
          without a teacher (``bicubic_none``).
  stream  the student of configs/stream_x2.py on the ``stream_x2`` task (blur, noise, bicubic
          /2, H.264), 2500 steps: no teacher, and the teacher's output as the only target (the
          method that beat output KD on clean inputs at no extra cost), from RLFN fine-tuned on
          the task (``stream_x2.py:teacher``, trained first); evaluated at the task's
          ``moderate`` strength on Set5 and Set14 (Urban100 is for the released models only:
          about 2 minutes of evaluation a run here).

Run (from the repository root, after importing the teacher, see configs/student_x2.py):
  kdjax train --config=configs/ablation_x2.py --workdir=runs/ablation_x2
  kdjax train --config=configs/ablation_x2.py:medium --workdir=runs/ablation_x2_medium
  kdjax train --config=configs/ablation_x2.py:sharpen --workdir=runs/ablation_sharpen
  kdjax train --config=configs/ablation_x2.py:stream --workdir=runs/ablation_stream_x2

``short``: about 4.5 minutes per run on 2 CPU cores (DUKD's second patch: 7), plus 8 minutes
of teacher labelling once: about 95 minutes in all. Expect (Set5 PSNR-Y): no teacher 36.87 ±
0.02, output KD 36.89 ± 0.03, DUKD 36.92 ± 0.01, teacher only 36.91 ± 0.01, teacher only +
zoomed views 36.91 ± 0.03 (BENCHMARKS.md's distillation table). ``medium``: about 7
minutes per ``none`` run and 13 per ``dukd`` run, 66 minutes in all; expect no teacher 37.03 ±
0.03, DUKD 37.07 ± 0.01. ``sharpen``: about 6 minutes a run, 38 in all; expect no teacher
36.27 ± 0.02, output KD 36.33 ± 0.03.
"""

import ml_collections

from kdjax.configs import common, stream_x2, student_sharpen, student_x2


def methods(teacher: str) -> dict[str, str]:
    """Each run's method as the table names it, distilling from ``teacher``."""
    return {
        "none": "no teacher",
        "kd": f"output KD from {teacher}",
        "dukd": f"output KD + zoomed views (DUKD) from {teacher}",
        "kd_only": f"{teacher}'s output as the only target",
        "dukd_only": f"{teacher}'s output as the only target + zoomed views",
    }


METHODS = methods("BSRN")


def upscale_runs(budget: str, names: tuple[str, ...]) -> dict:
    """The x2 upscale student's runs ``names`` at a budget suffix of configs/student_x2.py."""
    return {name: student_x2.get_config(name + budget) for name in names}


EVAL_SETS = ("Set5", "Set14")
# Variant -> (the student as the table names it, its runs by method, their labels, eval sets).
VARIANTS = {
    "short": ("rep x2", lambda: upscale_runs("_short", ("none", "kd", "dukd", "kd_only", "dukd_only")), METHODS,
              EVAL_SETS),
    "medium": ("rep x2", lambda: upscale_runs("_medium", ("none", "dukd")), METHODS, EVAL_SETS),
    "sharpen": (
        "rep, sharpen x2",
        lambda: {"none": student_sharpen.get_config("bicubic_none"), "kd": student_sharpen.get_config("bicubic")},
        METHODS, EVAL_SETS,
    ),
    "stream": (
        "rep x2, stream_x2",
        lambda: {name: stream_x2.get_config(f"{name}_short") for name in ("none", "kd_only")},
        methods("fine-tuned RLFN"), EVAL_SETS,
    ),
}


def get_config(variant=None):
    variant = variant or "short"
    if variant not in VARIANTS:
        raise ValueError(f"Unknown ablation_x2 variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    student, make_runs, labels, sets = VARIANTS[variant]
    runs = make_runs()
    suite = ml_collections.ConfigDict()
    suite.runs = ml_collections.ConfigDict(runs)
    suite.order = tuple(runs)
    suite.labels = ml_collections.ConfigDict({name: f"{student}, {labels[name]}" for name in runs})
    suite.seeds = (0, 1, 2)
    suite.eval_dirs = tuple(f"{common.SHARED_DATA}/{name}" for name in sets)
    return suite
