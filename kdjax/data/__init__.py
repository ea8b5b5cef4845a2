"""Training and evaluation data: image sources, per-example transformations, Grain pipelines.

``sources`` owns where sharp images come from, ``transforms`` what one example becomes
(patches, degraded inputs), ``degraded`` the training images degraded whole once and stored
with their teacher labels, ``pipeline`` how examples become batches (Grain). The names most
runs need are re-exported here: ``from kdjax import data; data.folder_source_config(...)``.
"""

from kdjax.data.degraded import DegradedImages, cache_folder, write_degraded_images
from kdjax.data.pipeline import (
    ShuffledEpochs,
    check_task,
    default_data_config,
    input_size,
    make_eval_dataset,
    make_train_dataset,
    output_scale,
)
from kdjax.data.sources import (
    SKIMAGE_EVAL_PHOTOS,
    SKIMAGE_PHOTOS,
    CachedSource,
    DataSourceError,
    ImageFolder,
    PairedFolder,
    SkimagePhotos,
    TfdsImages,
    build_source,
    folder_source_config,
    paired_source_config,
    skimage_source_config,
    tfds_source_config,
)
from kdjax.data.transforms import ExamplePreparationError, ImageTooSmallError, mod_crop

__all__ = [
    "SKIMAGE_EVAL_PHOTOS",
    "SKIMAGE_PHOTOS",
    "CachedSource",
    "DataSourceError",
    "DegradedImages",
    "ExamplePreparationError",
    "ImageFolder",
    "ImageTooSmallError",
    "PairedFolder",
    "ShuffledEpochs",
    "SkimagePhotos",
    "TfdsImages",
    "build_source",
    "cache_folder",
    "check_task",
    "default_data_config",
    "folder_source_config",
    "input_size",
    "make_eval_dataset",
    "make_train_dataset",
    "mod_crop",
    "output_scale",
    "paired_source_config",
    "skimage_source_config",
    "tfds_source_config",
    "write_degraded_images",
]
