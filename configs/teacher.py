r"""Train the Swin teacher on ground truth: x2 sharpening (input: bicubic x2 down-up) or x2
upscaling (input: bicubic /2, the published SR setting).

Variants (``--config=configs/teacher.py:<variant>``):
  tiny      swin_tiny, a CPU-sized check that the pipeline learns.
  light     swin_light (0.9M parameters), the teacher of the sharpen benchmark runs.
  base      swin_base (11.5M parameters), for GPU/TPU budgets.
  light_x2  swin_light with SwinIR-light's x2 upsampler (910,152 parameters, the
            SwinIR-light x2 architecture) in the upscale task, on BSD68 + SunHays80 + T91,
            6000 steps of batch 8 at 64 px HR (32 px LR), about 2.0 s a step here. Not yet
            trained to the end on this CPU; Set5 PSNR-Y 35.24 at step 500, 35.87 at 1,000,
            36.49 at 1,500, 36.74 at 2,000 (BENCHMARKS.md's teachers section).
  light_x2_short  light_x2 with a 3000-step schedule, so that the whole cosine decay fits one CPU
            session (96 minutes here, alone). Released as ``swin_light_x2_upscale``:
            Set5 PSNR-Y 35.22 at step 500, 35.69 at 1,000, 36.45 at 1,500, 36.67 at 2,000,
            36.77 at 2,500, 36.81 at 3,000; Set14 32.48.

Run (from the repository root):
  kdjax train --config=configs/teacher.py:light --workdir=runs/bench/teacher_light
  kdjax train --config=configs/teacher.py:light_x2_short --workdir=runs/swin_light_x2_upscale

Data: ../shared/data/BSD68 + SunHays80 to train, Set5 to validate (PSNR/SSIM on
Y, border crop 2). Point ``--config.data.train_source.paths`` at a larger set
(e.g. DIV2K) for real training.

Expect (light, measured on 2 CPU cores, ~80 min with evaluations): Set5 PSNR-Y
35.98 dB at step 1000, 36.20 at 1500, 36.37 at 2000, 36.43 at 2500 (bicubic
input: 33.67). SwinIR-light reaches 38.14 dB with DIV2K and 500k GPU steps.
"""

from kdjax import config as config_lib
from kdjax.configs import common
from kdjax.models import model_config

VARIANTS = {
    "tiny": dict(model="swin_tiny", batch_size=8, patch_size=48, num_steps=2000, learning_rate=2e-4),
    # Sized for a 2-core CPU: batch 8 of 32 px patches (4x4 windows of 8) trains at
    # ~1.75 s/step here, so 2500 steps take ~75 min (batch 16 of 32 px took 3.6 s/step,
    # batch 8 of 48 px 4.2 s/step: the same images per second, fewer updates).
    "light": dict(model="swin_light", batch_size=8, patch_size=32, num_steps=2500, learning_rate=5e-4),
    "base": dict(model="swin_base", batch_size=32, patch_size=64, num_steps=200000, learning_rate=2e-4),
    # The upscale x2 task (SwinIR-light x2): the body runs on 32x32 low-resolution patches
    # (64 px HR), so a step costs what a 32 px sharpen step does while covering 4x the output.
    "light_x2": dict(model="swin_light", batch_size=8, patch_size=64, num_steps=6000, learning_rate=5e-4, scale=2),
}
# The same at half the steps, so that the whole cosine schedule fits one CPU session here.
VARIANTS["light_x2_short"] = dict(VARIANTS["light_x2"], num_steps=3000)


def get_config(variant=None):
    variant = variant or "light"
    if variant not in VARIANTS:
        raise ValueError(f"Unknown teacher variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    settings = VARIANTS[variant]
    config = config_lib.base_config()
    scale = settings.get("scale", 1)
    if scale > 1:
        config.model = model_config(settings["model"], scale=scale)
        config.data = common.upscale_data_config(settings["patch_size"], scale)
    else:
        config.model = model_config(settings["model"])
        config.data = common.benchmark_data_config(settings["patch_size"])
    config.batch_size = settings["batch_size"]
    config.num_steps = settings["num_steps"]
    config.optim.learning_rate = settings["learning_rate"]
    config.optim.warmup_steps = 200
    config.eval.crop_border = 2
    config.eval.every_steps = 500
    config.checkpoint.every_steps = 500
    return config
