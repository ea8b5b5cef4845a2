"""The Grain pipelines: the endless training stream and the evaluation images.

* ``make_train_dataset``: an infinite ``IterDataset`` of per-host batches
  ``{"input": uint8 (B, P, P, 3), "target": uint8 (B, P, P, 3)}``: shuffle (reshuffled every
  epoch, ``ShuffledEpochs``), ``TrainPatch`` (crop, flip/rotation, degradation; see
  ``kdjax.data.transforms``), batches of ``global_batch_size // process_count``. Decoded
  source examples are kept in a least-recently-used cache of ``cache_mib`` MiB per process
  (``CachedSource``), as decoding whole photographs for every patch dominates the cost; every
  Grain worker process fills its own. Randomness comes from the per-example generator of
  Grain's ``random_map`` (seeded by ``seed`` and the example's position in the stream), so the
  batches depend only on the config, ``seed`` and the host's place; not on the number of worker
  processes. Every host slices its share out of one global example stream, so the hosts' batches
  at a step are disjoint and, together, the same global batch whatever the number of hosts.
  Iterators support ``get_state``/``set_state`` and Orbax checkpointing
  (``grain.checkpoint.CheckpointSave``/``CheckpointRestore``), so a resumed run sees exactly the
  batches it would have seen.
  With ``cache_variants`` > 0 the examples are stored degraded images instead
  (``kdjax.data.degraded``), with the teacher's labels in distillation.
* ``make_eval_dataset``: a ``MapDataset`` of whole images ``{"input", "target", "name"}``
  (``EvalExample``), in source order.

``default_data_config`` is the complete data config every run starts from. Images smaller
than the training patch stop file sources before training starts (their sizes are read from
the file headers) unless ``min_size_policy="pad"``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import grain
import ml_collections
import numpy as np
from absl import flags

from kdjax import degradations
from kdjax.data.degraded import DegradedImages, write_degraded_images
from kdjax.data.sources import (
    CachedSource,
    PairedFolder,
    Source,
    build_source,
    skimage_source_config,
)
from kdjax.data.transforms import (
    MIN_SIZE_POLICIES,
    EvalExample,
    ImageTooSmallError,
    TrainPatch,
    too_small_message,
)


def default_data_config() -> ml_collections.ConfigDict:
    """The complete data config that training configs start from.

    Fields:
      train_source: source config of the sharp training images (``skimage_source_config``,
        ``folder_source_config``, ``paired_source_config`` or ``tfds_source_config``);
        default: scikit-image's training photographs.
      eval_source: source config of the evaluation images; default: scikit-image's two
        held-out photographs (chelsea, coffee).
      patch_size: side of the square training crops, pixels.
      min_size_policy: what to do with images smaller than the patch: "error" (stop with the
        file's name) or "pad" (mirror-pad bottom and right up to the patch size).
      augment: random horizontal flips and 90-degree rotations of training crops.
      degradation: how sharp images become inputs, see ``kdjax.degradations`` (ignored for
        paired sources); default: x2 bicubic down-up, the published SR benchmark setting.
      eval_seed: seed of the (fixed) evaluation degradation's noise.
      cache_mib: MiB of decoded training examples each data process keeps in memory
        (``CachedSource``; every worker process has its own), 0 to decode every read.
      worker_count: processes preparing training batches; 0 prepares them in the training
        process (with ``read_threads`` threads).
      read_threads: threads per process preparing batches (image decoding and numpy release
        the GIL for part of the work).
      prefetch: batches each process prepares ahead of the training loop.
      cache_variants: 0 degrades training patches on the fly; K > 0 degrades every training
        image whole K times, once, and cuts patches from these stored pairs (and from the
        teacher's labels of them in distillation), see ``kdjax.data.degraded``.
      cache_dir: where those degraded images (and teacher labels) are stored, one folder per
        source, degradation and K.
    """
    return ml_collections.ConfigDict(
        dict(
            train_source=skimage_source_config("train"),
            eval_source=skimage_source_config("eval"),
            patch_size=96,
            min_size_policy="error",
            augment=True,
            degradation=degradations.default_degradation_config(),
            eval_seed=0,
            cache_mib=1024,
            worker_count=0,
            read_threads=2,
            prefetch=2,
            cache_variants=0,
            cache_dir="runs/cache",
        )
    )


class ShuffledEpochs:
    """``source`` repeated forever, every epoch in its own random order drawn from (``seed``, epoch).

    Stands in for Grain's ``shuffle().repeat()``, whose per-index permutation costs milliseconds
    per example for sources of a few images (about 3.5 ms each for 7 images, several times the
    cost of preparing a patch); drawing one permutation per epoch costs next to nothing.
    """

    def __init__(self, source: Source, seed: int):
        self.source = source
        self.seed = seed
        self._epoch_order: tuple[int, np.ndarray] = (-1, np.empty(0, np.int64))

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, index: int) -> dict[str, Any]:
        epoch, position = divmod(index, len(self.source))
        last_epoch, order = self._epoch_order  # one read: other threads may replace it meanwhile
        if last_epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))
            self._epoch_order = (epoch, order)
        return self.source[int(order[position])]

    def __repr__(self) -> str:
        return f"ShuffledEpochs({self.source!r}, seed={self.seed})"


def _check_patch_fits(source: Source, cfg: ml_collections.ConfigDict) -> None:
    """Fails before training starts when a file source holds an image smaller than the patch."""
    if cfg.min_size_policy not in MIN_SIZE_POLICIES:
        raise ValueError(
            f"data.min_size_policy={cfg.min_size_policy!r} is unknown; choose one of {', '.join(MIN_SIZE_POLICIES)}."
        )
    if cfg.min_size_policy != "error" or not hasattr(source, "sizes"):
        return
    for path, (height, width) in zip(source.files, source.sizes):
        if height < cfg.patch_size or width < cfg.patch_size:
            raise ImageTooSmallError(too_small_message(str(path), height, width, cfg.patch_size))


def input_size(data_cfg: ml_collections.ConfigDict) -> int:
    """Side of the model's input patch: ``patch_size``, divided by the scale in the upscale task."""
    degradation = data_cfg.degradation
    return data_cfg.patch_size // degradation.scale if degradation.task == "upscale" else data_cfg.patch_size


def output_scale(data_cfg: ml_collections.ConfigDict) -> int:
    """How much larger a model's output is than its input: the scale (upscale task) or 1 (sharpen)."""
    return data_cfg.degradation.scale if data_cfg.degradation.task == "upscale" else 1


def check_task(data_cfg: ml_collections.ConfigDict, paired: bool = False) -> None:
    """One-sentence errors for data settings the upscale task cannot use."""
    degradation = data_cfg.degradation
    if degradation.task != "upscale":
        return
    if paired:
        raise ValueError(
            "Paired blurry/sharp sources hold same-size pairs; use them with data.degradation.task='sharpen'."
        )
    if data_cfg.patch_size % degradation.scale:
        raise ValueError(
            f"data.patch_size={data_cfg.patch_size} must be a multiple of data.degradation.scale="
            f"{degradation.scale} in the upscale task, so the input patch has a whole size."
        )


def make_train_dataset(
    data_cfg: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    worker_count: int | None = None,
    teacher_labels: str | os.PathLike | None = None,
    zoom_views: bool = False,
) -> grain.IterDataset:
    """The infinite training stream of this host's batches (see the module docstring).

    Args:
      data_cfg: a data config such as ``default_data_config()``.
      global_batch_size: examples per step over all hosts; each host gets
        ``global_batch_size // process_count``.
      seed: seeds shuffling, cropping, augmentation and degradation.
      process_index: this host's index; default ``jax.process_index()``.
      process_count: number of hosts; default ``jax.process_count()``.
      worker_count: processes preparing batches; default ``data_cfg.worker_count``.
      teacher_labels: with ``data_cfg.cache_variants`` > 0, the folder of the teacher's labels
        of the stored degraded images (``kdjax.distill.label_degraded_images``); batches then
        carry ``teacher_output`` (uint8) too.
      zoom_views: with ``teacher_labels``, batches also carry ``aux_input`` and
        ``aux_teacher_output``: a patch of one of each example's labelled zoomed views (drawn
        after the main patch, which is therefore the same as without views).

    Returns:
      A Grain ``IterDataset``; ``iter()`` it, and checkpoint the iterator with Orbax.
    """
    if process_index is None or process_count is None:
        import jax  # pylint: disable=import-outside-toplevel  # keeps worker processes free of jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size < process_count or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} does not split evenly over {process_count} hosts; "
            f"use a multiple of {process_count}."
        )
    worker_count = data_cfg.worker_count if worker_count is None else worker_count
    if data_cfg.cache_mib < 0:
        raise ValueError(f"data.cache_mib={data_cfg.cache_mib} is negative; set it to 0 (no cache) or more MiB.")
    if data_cfg.cache_variants < 0:
        raise ValueError(
            f"data.cache_variants={data_cfg.cache_variants} is negative; set 0 (degrade on the fly) or K > 0."
        )
    if data_cfg.cache_variants:
        check_task(data_cfg)
        source = DegradedImages(write_degraded_images(data_cfg), teacher_labels, views=zoom_views)
        pre_degraded = True
    else:
        source = build_source(data_cfg.train_source)
        _check_patch_fits(source, data_cfg)
        pre_degraded = isinstance(source, PairedFolder)
        check_task(data_cfg, pre_degraded)
    if data_cfg.cache_mib:
        source = CachedSource(source, max_bytes=int(data_cfg.cache_mib * 2**20))
    transform = TrainPatch(
        patch_size=data_cfg.patch_size,
        degradation=None if pre_degraded else degradations.build_degradation(data_cfg.degradation, train=True),
        min_size_policy=data_cfg.min_size_policy,
        augment=data_cfg.augment,
    )
    dataset = (
        grain.MapDataset.source(ShuffledEpochs(source, seed))
        .seed(seed)
        .random_map(transform)
        # Slicing after random_map: each host takes every process_count-th example of one
        # global stream, so hosts never share an example nor its random draws.
        .slice(slice(process_index, None, process_count))
        .batch(global_batch_size // process_count, drop_remainder=True)
    )
    # Batches (not examples) are spread over the workers, which therefore only change speed.
    iter_dataset = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=data_cfg.read_threads, prefetch_buffer_size=data_cfg.prefetch)
    )
    if worker_count > 0:
        # Grain's worker processes read an absl flag; programs not started by absl.app
        # (notebooks, pytest) have not parsed flags and would fail there.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=data_cfg.prefetch)
        )
    return iter_dataset


def make_eval_dataset(data_cfg: ml_collections.ConfigDict) -> grain.MapDataset:
    """Whole evaluation images ``{"input", "target", "name"}`` (see the module docstring), in source order."""
    source = build_source(data_cfg.eval_source)
    paired = isinstance(source, PairedFolder)
    check_task(data_cfg, paired)
    transform = EvalExample(
        scale=data_cfg.degradation.scale,
        degradation=None if paired else degradations.build_degradation(data_cfg.degradation, train=False),
        seed=data_cfg.eval_seed,
    )
    return grain.MapDataset.source(source).map_with_index(transform)
