r"""Feature KD for the x2 ``rep`` student: a weight sweep with BSRN in the step, one seed.

The distillation ablation (configs/ablation_x2.py) compares output-level methods only: the
per-image label cache stores BSRN's outputs, not its features. This suite tunes the one
method left out, on the same student, stream (seed 0) and 2500 steps: output KD (L1 to
BSRN's output, weight 1) plus relative L2 between 1x1-adapted student features and BSRN's
(``loss.feature_kd="l2"``, in units of the teacher feature's RMS), the student's middle and
last blocks matched to BSRN's middle and last ESDBs, at weights 0.01 and 0.001; the teacher
runs inside every step (``teacher.in_step``) to give its features. ``none`` and ``kd`` are
the ablation's rows for seed 0, retrained here so that the table compares like with like.

Run (from the repository root, after importing the teacher, see configs/student_x2.py):
  kdjax train --config=configs/feature_kd_x2.py --workdir=runs/feature_kd_x2

About 3.5 minutes for each of ``none`` and ``kd`` on 2 CPU cores and 20 for each feature-KD
run (BSRN's forward pass over every batch is about 5 student steps), as measured: 47 in all.

Expect (Set5 / Set14 PSNR-Y): none 36.89 / 32.56, kd 36.93 / 32.57, feature 0.01 36.52 /
32.35, feature 0.001 36.73 / 32.46: feature KD costs 0.16-0.37 dB against no teacher, so it
is dropped from the recommended recipes (BENCHMARKS.md, "Feature KD").
"""

import ml_collections

from kdjax.configs import ablation_x2, common, student_x2

# rep_x2 has 7 blocks, BSRN 8 ESDBs: match the middle to the middle, the last to the last.
FEATURE_PAIRS = "block_3:block_3,block_6:block_7"
WEIGHTS = {"feature_1e-2": 0.01, "feature_1e-3": 0.001}


def feature_kd_config(weight: float) -> ml_collections.ConfigDict:
    config = student_x2.get_config("kd_short")
    config.teacher.in_step = True
    config.loss.feature_kd = "l2"
    config.loss.feature_kd_weight = weight
    config.loss.feature_pairs = FEATURE_PAIRS
    return config


def get_config(variant=None):
    del variant
    suite = ml_collections.ConfigDict()
    runs = ablation_x2.upscale_runs("_short", ("none", "kd"))
    runs.update({name: feature_kd_config(weight) for name, weight in WEIGHTS.items()})
    suite.runs = ml_collections.ConfigDict(runs)
    suite.order = ("none", "kd", *WEIGHTS)
    suite.labels = ml_collections.ConfigDict(
        {
            **{name: f"rep x2, {ablation_x2.METHODS[name]}" for name in ("none", "kd")},
            **{
                name: f"rep x2, output + feature KD (weight {weight}) from BSRN"
                for name, weight in WEIGHTS.items()
            },
        }
    )
    suite.seeds = (0,)
    suite.eval_dirs = (f"{common.SHARED_DATA}/Set5", f"{common.SHARED_DATA}/Set14")
    return suite
