r"""The x2 benchmark: swin_light teacher, realtime students with and without KD, on Set5/Set14.

Data: BSD68 + SunHays80 (``../shared/data``) to train on; Set5 to validate on;
inputs are bicubic x2 down-up (same size as the output). Every model is also
evaluated on Set5 and Set14, PSNR/SSIM on Y with a 2 px border crop, the
published convention. Runs, in ``WORKDIR/<run>``, in this order:

  teacher_light   configs/teacher.py:light (swin_light, 2500 steps, batch 8 of
                  32 px; ~80 min on 2 CPU cores, evaluations included)
  kd_both         configs/distill.py:both    realtime student, output + feature KD
  kd_output       configs/distill.py:output  output KD only
  kd_feature      configs/distill.py:feature feature KD only
  kd_none         configs/distill.py:none    no teacher (the baseline)
  w16_both, w16_none, w48_both, w48_none     the same at widths 16 and 48 (28 above)

Each student: 5000 steps of batch 16 at 48 px on the same pool of 128 batches,
labelled once by the teacher (~5 min, shared by the KD runs); ~3-5 min each.
Then every model is timed on a 1920x1080 frame through ``kdjax.Sharpener``.
The whole suite takes about 2 hours on 2 CPU cores (measured: the teacher
~80 min, everything after it 33 min). Writes ``WORKDIR/results.md`` and
``WORKDIR/results.json``.

Expect (measured, Set5 / Set14 PSNR-Y): bicubic 33.67 / 30.32, teacher
36.43 / 32.31, kd_output 35.74 / 31.85, kd_none 35.56 / 31.74; output KD
+0.18 dB, feature KD -0.35 dB against no KD. Full table: BENCHMARKS.md.

Run (from the repository root):
  kdjax train --config=configs/benchmark.py --workdir=runs/bench

Measured results and their reading: BENCHMARKS.md.
"""

import ml_collections

from kdjax.configs import common, distill, teacher


def get_config(variant=None):
    del variant
    runs = {"teacher_light": teacher.get_config("light")}
    labels = {"teacher_light": "teacher swin_light"}
    for width in (28, 16, 48):
        prefix = "kd" if width == 28 else f"w{width}"
        kd_variants = ("both", "output", "feature", "none") if width == 28 else ("both", "none")
        for kd in kd_variants:
            run = distill.get_config(kd)
            run.model.overrides = ml_collections.ConfigDict({"width": width})
            if kd != "none":
                run.teacher.workdir = "@teacher_light"
            runs[f"{prefix}_{kd}"] = run
            labels[f"{prefix}_{kd}"] = f"realtime w{width}, KD {kd}"
    suite = ml_collections.ConfigDict()
    suite.runs = ml_collections.ConfigDict(runs)
    suite.order = tuple(runs)
    suite.labels = ml_collections.ConfigDict(labels)
    suite.eval_dirs = (f"{common.SHARED_DATA}/Set5", f"{common.SHARED_DATA}/Set14")
    suite.timing = ml_collections.ConfigDict(
        dict(runs=tuple(runs), height=1080, width=1920, repeats=5)
    )
    return suite
