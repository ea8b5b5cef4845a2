r"""Train the Swin teacher on ground truth, x2 sharpening (input: bicubic x2 down-up).

Variants (``--config=configs/teacher.py:<variant>``):
  tiny   swin_tiny, a CPU-sized check that the pipeline learns.
  light  swin_light (0.9M parameters), the teacher of the benchmark runs.
  base   swin_base (11.5M parameters), for GPU/TPU budgets.

Run (from the repository root):
  python launch.py --config=configs/teacher.py:light --workdir=runs/teacher_light

Data: ../shared/data/BSD68 + SunHays80 to train, Set5 to validate (PSNR/SSIM on
Y, border crop 2). Point ``--config.data.train_source.paths`` at a larger set
(e.g. DIV2K) for real training. Expect the validation PSNR to pass the bicubic
input's 33.66 dB within the first thousand steps; SwinIR-light reaches 38.1 dB
on Set5 with DIV2K and a GPU budget of 500k steps.
"""

from kdjax import config as config_lib
from kdjax.models import model_config

VARIANTS = {
    "tiny": dict(model="swin_tiny", batch_size=8, patch_size=48, num_steps=2000, learning_rate=2e-4),
    # Sized for a 2-core CPU: 32 px patches (4x4 windows of 8) and batch 8 train at
    # ~1.7 s/step, so 2500 steps take ~75 min; more small steps beat fewer big ones
    # at this budget, and the short cosine schedule affords a higher peak rate.
    "light": dict(model="swin_light", batch_size=8, patch_size=32, num_steps=2500, learning_rate=5e-4),
    "base": dict(model="swin_base", batch_size=32, patch_size=64, num_steps=200000, learning_rate=2e-4),
}


def get_config(variant=None):
    variant = variant or "light"
    if variant not in VARIANTS:
        raise ValueError(f"Unknown teacher variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    settings = VARIANTS[variant]
    config = config_lib.base_config()
    config.model = model_config(settings["model"])
    config.data = config_lib.benchmark_data_config(settings["patch_size"])
    config.batch_size = settings["batch_size"]
    config.num_steps = settings["num_steps"]
    config.optim.learning_rate = settings["learning_rate"]
    config.optim.warmup_steps = 200
    config.eval.crop_border = 2
    config.eval.every_steps = 500
    config.checkpoint.every_steps = 500
    return config
