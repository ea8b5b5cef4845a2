"""Pieces the experiment configs share: where the benchmark data lives and the x2 data setting."""

import ml_collections

from kdjax import data, degradations

# The benchmark image sets beside the repository (see the README's Data section); paths are
# relative to the repository root, where runs are launched from.
SHARED_DATA = "../shared/data"


def benchmark_data_config(patch_size: int) -> ml_collections.ConfigDict:
    """The classic x2 setting as a sharpen task: bicubic x2 down-up inputs, BSD68 + SunHays80
    to train on, Set5 to validate on."""
    data_config = data.default_data_config()
    data_config.train_source = data.folder_source_config(f"{SHARED_DATA}/BSD68", f"{SHARED_DATA}/SunHays80")
    data_config.eval_source = data.folder_source_config(f"{SHARED_DATA}/Set5")
    data_config.patch_size = patch_size
    data_config.degradation = degradations.bicubic_only_config(scale=2)
    return data_config


def upscale_data_config(patch_size: int, scale: int = 2) -> ml_collections.ConfigDict:
    """The published SR setting: inputs are HR images downscaled by `scale` with MATLAB bicubic,
    BSD68 + SunHays80 + T91 to train on (`patch_size` is the HR patch), Set5 to validate on."""
    data_config = data.default_data_config()
    data_config.train_source = data.folder_source_config(
        f"{SHARED_DATA}/BSD68", f"{SHARED_DATA}/SunHays80", f"{SHARED_DATA}/T91"
    )
    data_config.eval_source = data.folder_source_config(f"{SHARED_DATA}/Set5")
    data_config.patch_size = patch_size
    data_config.degradation = degradations.bicubic_only_config(scale=scale, task="upscale")
    return data_config
