r"""The ``rep`` student for the sharpen task (same-size input and output): two degradations.

The student works pixel-unshuffled by 2 (6 blocks, 18.1 GFLOPs per 1920x1080 frame once folded), on
``../shared/data`` BSD68 + SunHays80 + T91 degraded whole once (``data.cache_variants``), 96 px
patches, 5000 steps of batch 16 (on 2 CPU cores about 6 minutes for ``bicubic`` after 5 of BSRN
labelling once, 11 for ``mix``).

Variants (``--config=configs/student_sharpen.py:<variant>``):
  bicubic  bicubic x2 down-up inputs (the classic benchmark), distilled from the imported BSRN
           x2 teacher: the teacher sees each example's target downscaled by 2 (MATLAB
           bicubic), the low-resolution image the input was made from, labelled once
           (``kdjax.distill.label_degraded_images``); released as ``rep_kd_sharpen_x2``.
  bicubic_none  the same student, stream and steps without a teacher: the baseline of
           ``configs/ablation_x2.py:sharpen``.
  mix      a video-call mix: mild Gaussian blur (sigma 0.2-1.2), Gaussian noise (sigma 0-5 of
           255), JPEG quality 50-95, 4 stored variants per image; trained on ground truth only
           (no teacher here was trained for noise and JPEG: the imported upscalers see only
           bicubic inputs and the Swin teacher trained here is weaker than this student);
           released as ``rep_videocall``. Evaluated with blur 0.8, noise 3, JPEG 75.

Run (from the repository root; the teacher is imported as in configs/student_x2.py):
  kdjax train --config=configs/student_sharpen.py:bicubic --workdir=runs/students/rep_kd_sharpen_x2
  kdjax train --config=configs/student_sharpen.py:mix --workdir=runs/students/rep_videocall

Expect (Set5 / Set14 PSNR-Y, BENCHMARKS.md's sharpen students): ``bicubic`` 36.34 / 32.22 dB
(input 33.67 / 30.32), ``mix`` 35.70 / 32.74 dB (degraded input 33.58 / 30.80).
"""

from kdjax import degradations
from kdjax.configs import student_x2
from kdjax.models import model_config

VARIANTS = ("bicubic", "bicubic_none", "mix")


def video_call_degradation():
    """Mild blur, sensor noise and JPEG at the same resolution: what a video call delivers."""
    return degradations.default_degradation_config(
        ops=("gaussian_blur", "noise", "jpeg"),
        gaussian_blur=dict(train_sigma=(0.2, 1.2), train_anisotropic_prob=0.0, eval_sigma_x=0.8, eval_sigma_y=0.8),
        noise=dict(train_sigma=(0.0, 5.0), eval_sigma=3.0),
        jpeg=dict(train_quality=(50, 95), eval_quality=75),
    )


def get_config(variant=None):
    variant = variant or "bicubic"
    if variant not in VARIANTS:
        raise ValueError(f"Unknown student_sharpen variant {variant!r}; choose one of {VARIANTS}.")
    teacher = student_x2.TEACHER if variant == "bicubic" else ""
    config = student_x2.student_config(model_config("rep", width=16, num_blocks=6, expand=0), 5000, teacher)
    if variant.startswith("bicubic"):
        config.data.degradation = degradations.bicubic_only_config(scale=2)
    else:
        config.data.degradation = video_call_degradation()
        config.data.cache_variants = 4
    return config
