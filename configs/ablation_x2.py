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

Run (from the repository root, after importing the teacher, see configs/student_x2.py):
  kdjax train --config=configs/ablation_x2.py --workdir=runs/ablation_x2
  kdjax train --config=configs/ablation_x2.py:medium --workdir=runs/ablation_x2_medium

``short``: about 4.5 minutes per run on 2 CPU cores (DUKD's second patch: 7), plus 8 minutes
of teacher labelling once: about 95 minutes in all. Expect (Set5 PSNR-Y): no teacher 36.87 ±
0.02, output KD 36.89 ± 0.03, DUKD 36.92 ± 0.01, teacher only 36.91 ± 0.01, teacher only +
zoomed views 36.91 ± 0.03 (BENCHMARKS.md's distillation table). ``medium``: about 6.5
minutes per ``none`` run and 13 per ``dukd`` run, 60 minutes in all.
"""

import ml_collections

from kdjax.configs import common, student_x2


LABELS = {
    "none": "rep x2, no teacher",
    "kd": "rep x2, output KD from BSRN",
    "dukd": "rep x2, output KD + zoomed views (DUKD) from BSRN",
    "kd_only": "rep x2, BSRN's output as the only target",
    "dukd_only": "rep x2, BSRN's output as the only target + zoomed views",
}
# Variant -> (budget suffix of configs/student_x2.py, the runs it trains).
VARIANTS = {
    "short": ("_short", ("none", "kd", "dukd", "kd_only", "dukd_only")),
    "medium": ("_medium", ("none", "dukd")),
}


def get_config(variant=None):
    variant = variant or "short"
    if variant not in VARIANTS:
        raise ValueError(f"Unknown ablation_x2 variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    suffix, order = VARIANTS[variant]
    suite = ml_collections.ConfigDict()
    suite.runs = ml_collections.ConfigDict({name: student_x2.get_config(name + suffix) for name in order})
    suite.order = order
    suite.labels = ml_collections.ConfigDict({name: LABELS[name] for name in order})
    suite.seeds = (0, 1, 2)
    suite.eval_dirs = (f"{common.SHARED_DATA}/Set5", f"{common.SHARED_DATA}/Set14")
    return suite
