r"""Does distillation pay? The x2 ``rep`` student with and without the BSRN teacher, 3 seeds.

A suite (``kdjax.suite``) of four runs from ``configs/student_x2.py``, each trained with seeds
0, 1 and 2: ``none_short`` (ground truth only), ``kd_short`` (plus L1 to the teacher's output,
weight 1), ``dukd_short`` (output KD plus the teacher's labels on zoomed views, DUKD) and
``kd_only_short`` (the teacher's output as the only target). All read exactly the same stream
(the per-image cache of ``kdjax.data.degraded``: same degraded images, same crops, same order
for a given seed) for the same 2500 steps; only the loss differs. Evaluated on Set5 and Set14
(PSNR/SSIM on Y, border crop 2); the table shows mean ± sample std over the seeds.

Run (from the repository root, after importing the teacher, see configs/student_x2.py):
  kdjax train --config=configs/ablation_x2.py --workdir=runs/ablation_x2

About 4.5 minutes per run on 2 CPU cores (DUKD: 7), plus 8 minutes of teacher labelling once:
about 70 minutes in all. Expect (Set5 PSNR-Y): no teacher 36.87 ± 0.02, output KD 36.89 ±
0.03, DUKD 36.92 ± 0.01, teacher only 36.91 ± 0.01 (BENCHMARKS.md's distillation table).
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
            "kd_only": student_x2.get_config("kd_only_short"),
            "dukd": student_x2.get_config("dukd_short"),
            "dukd_only": student_x2.get_config("dukd_only_short"),
        }
    )
    suite.order = ("none", "kd", "dukd", "kd_only", "dukd_only")
    suite.labels = ml_collections.ConfigDict(
        {
            "none": "rep x2, no teacher",
            "kd": "rep x2, output KD from BSRN",
            "dukd": "rep x2, output KD + zoomed views (DUKD) from BSRN",
            "kd_only": "rep x2, BSRN's output as the only target",
            "dukd_only": "rep x2, BSRN's output as the only target + zoomed views",
        }
    )
    suite.seeds = (0, 1, 2)
    suite.eval_dirs = (f"{common.SHARED_DATA}/Set5", f"{common.SHARED_DATA}/Set14")
    return suite
