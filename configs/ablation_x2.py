r"""Does distillation pay? The x2 ``rep`` student with and without the BSRN teacher, 3 seeds.

A suite (``kdjax.suite``) of two runs from ``configs/student_x2.py``, each trained with seeds
0, 1 and 2: ``none_short`` (ground truth only) and ``kd_short`` (plus L1 to the teacher's
output, weight 1). Both read exactly the same stream (the per-image cache of
``kdjax.data.degraded``: same degraded images, same crops, same order for a given seed) for
the same 2500 steps; only the teacher's labels differ. Evaluated on Set5 and Set14 (PSNR/SSIM
on Y, border crop 2); the table shows mean ± sample std over the seeds.

Run (from the repository root, after importing the teacher, see configs/student_x2.py):
  kdjax train --config=configs/ablation_x2.py --workdir=runs/ablation_x2

About 7 minutes per run on 2 CPU cores (45 minutes in all). Expect: BENCHMARKS.md's
distillation table.
"""

import ml_collections

from kdjax.configs import common, student_x2


def get_config(variant=None):
    del variant
    suite = ml_collections.ConfigDict()
    suite.runs = ml_collections.ConfigDict(
        {
            "none": student_x2.get_config("none_short"),
            "kd": student_x2.get_config("kd_short"),
            "dukd": student_x2.get_config("dukd_short"),
        }
    )
    suite.order = ("none", "kd", "dukd")
    suite.labels = ml_collections.ConfigDict(
        {
            "none": "rep x2, no teacher",
            "kd": "rep x2, output KD from BSRN",
            "dukd": "rep x2, output KD + zoomed views (DUKD) from BSRN",
        }
    )
    suite.seeds = (0, 1, 2)
    suite.eval_dirs = (f"{common.SHARED_DATA}/Set5", f"{common.SHARED_DATA}/Set14")
    return suite
