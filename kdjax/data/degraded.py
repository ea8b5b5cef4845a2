"""Training images degraded whole, once, and stored with their teacher labels: the per-image cache.

With ``data.cache_variants = K > 0`` a run does not degrade patches on the fly: every training
image is degraded whole ``K`` times (variant ``k`` of image ``i`` draws its random degradation
from the generator seeded ``[i, k]``, fixed whatever the run's seed), and training patches are
cut from these stored (input, target) pairs. A distillation run adds the teacher's output on
each whole degraded image, computed once (``kdjax.distill.label_degraded_images``); crops,
flips and rotations are then cut from the (input, teacher output, target) triple, so a student
trains on the full stream at the cost of a student step, not a teacher step.

Layout of ``<data.cache_dir>/<key>/`` (the key hashes the source, degradation and K, so any
change writes a new folder; runs sharing the data share it):

* ``images/<i>_<k>.npz``: ``input`` and ``target`` (uint8; target mod-cropped to the scale),
* ``teacher-<digest>/<i>_<k>.npy``: the teacher's output on that input, uint8 (the digest
  hashes the teacher's parameters),
* ``teacher-<digest>/views/<i>_<k>.npz``: with ``loss.aux_kd_weight`` > 0, two auxiliary
  views of the example the ground truth cannot label and the teacher's output on each
  (``zoom_views``; data-upcycling KD, DUKD, Zhang et al. 2023),
* ``MANIFEST.json`` and ``COMPLETE`` in ``images/`` and in each teacher folder: every file's size and SHA-256,
  and the marker written last, so an interrupted build is finished rather than read
  (``kdjax.data.cache_files``: files are checked against the manifest at the start of every
  run, and a damaged one is degraded, or labelled, again with a warning naming it).

A run with and one without a teacher on the same data config read the same inputs and cut
the same patches: the no-KD baseline sees exactly the KD run's stream.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from kdjax import degradations
from kdjax.data import cache_files
from kdjax.data.sources import PairedFolder, build_source
from kdjax.data.transforms import mod_crop
from kdjax.imresize import imresize

# np.load parses each array's header with ast.literal_eval, which CPython 3.11 can fail with
# "SystemError: AST constructor recursion depth mismatch" when Grain's read threads parse at
# once (python/cpython#106905); reads of stored examples therefore take turns.
_READ_LOCK = threading.Lock()
VIEWS = "views"  # the labelled auxiliary views' folder inside a teacher's labels


def cache_folder(data_cfg: ml_collections.ConfigDict) -> Path:
    """Where the degraded copies of ``data_cfg``'s training images live."""
    key = json.dumps(
        [data_cfg.train_source.to_dict(), data_cfg.degradation.to_dict(), data_cfg.cache_variants],
        sort_keys=True, default=str,
    )
    return Path(data_cfg.cache_dir) / hashlib.sha256(key.encode()).hexdigest()[:16]


def example_names(folder: Path) -> list[str]:
    """The stored examples' file stems, ``<i>_<k>``, in stream order (image-major)."""
    return sorted(path.stem for path in (folder / "images").glob("*.npz"))


def serialized(save) -> bytes:
    """The bytes ``save(file)`` writes (``np.save`` or ``np.savez`` of one cache file)."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


def write_degraded_images(data_cfg: ml_collections.ConfigDict) -> Path:
    """Degrades every training image ``data_cfg.cache_variants`` times, once; returns the folder.

    An already complete folder is reused once its files are verified (`cache_files.fill`: a
    damaged one is degraded again from its image, with a warning).
    """
    folder = cache_folder(data_cfg)
    source = build_source(data_cfg.train_source)
    if isinstance(source, PairedFolder):
        raise ValueError(
            "data.cache_variants > 0 degrades sharp images; paired sources bring their own inputs, "
            "so set data.cache_variants=0 for them."
        )
    degradation = degradations.build_degradation(data_cfg.degradation, train=True)

    @functools.lru_cache(maxsize=1)  # the variants of an image are made one after the other
    def target(index: int) -> np.ndarray:
        return mod_crop(source[index]["image"], degradation.scale)

    def degrade(name: str) -> bytes:
        index, variant = (int(part) for part in Path(name).stem.split("_"))
        degraded = degradation(target(index), np.random.default_rng([index, variant]))
        return serialized(lambda file: np.savez(file, input=degraded, target=target(index)))

    names = [f"{index:05d}_{variant}.npz" for index in range(len(source)) for variant in range(data_cfg.cache_variants)]
    cache_files.fill(
        folder / "images", names, degrade, description="Degrading training images", remedy="re-degrading it",
        complete_text=json.dumps(data_cfg.to_dict(), indent=2, default=str) + "\n",
    )
    return folder


# The side, in input pixels, that the auxiliary views are cropped to at most: labelling them
# then costs the teacher a few fixed shapes (one compilation each) and about 0.1 output
# megapixels per example, instead of a compilation per image size and the whole image.
ZOOM_VIEW_SIZE = 128


def zoom_views(low: np.ndarray, target: np.ndarray, scale: int, name: str) -> dict[str, np.ndarray]:
    """The auxiliary inputs of an upscale example (``low`` is ``target`` downscaled by ``scale``):

    * ``zoom_in_input``: a crop of the sharp target used as an input: the scene magnified by
      ``scale``, with finer detail than any training input has;
    * ``zoom_out_input``: a crop of ``low`` downscaled by ``scale`` (MATLAB bicubic): the
      scene shrunk.

    Each is at most ``ZOOM_VIEW_SIZE`` pixels a side. Only the teacher can label them (their
    ground truth would be the scene at ``scale`` times the target's resolution, or the
    degraded ``low``). The crops' corners are drawn from a generator seeded by the example's
    name, so the views are fixed like the stored images.
    """
    rng = np.random.default_rng([int(part) for part in name.split("_")])

    def crop(image: np.ndarray) -> np.ndarray:
        height, width = min(image.shape[0], ZOOM_VIEW_SIZE), min(image.shape[1], ZOOM_VIEW_SIZE)
        top = int(rng.integers(0, image.shape[0] - height + 1))
        left = int(rng.integers(0, image.shape[1] - width + 1))
        return np.ascontiguousarray(image[top : top + height, left : left + width])

    shrunk = imresize(low, output_shape=(max(1, low.shape[0] // scale), max(1, low.shape[1] // scale)))
    return {"zoom_in_input": crop(target), "zoom_out_input": crop(shrunk)}


class DegradedImages:
    """The stored examples of a cache folder: ``{"input", "target", "name"}`` and, when
    ``teacher_dir`` is given, ``"teacher_output"`` (uint8, the target's size); with ``views``
    also the ``zoom_in_*`` / ``zoom_out_*`` inputs and teacher outputs of ``zoom_views``."""

    def __init__(
        self, folder: str | os.PathLike, teacher_dir: str | os.PathLike | None = None, views: bool = False
    ):
        self.folder = Path(folder)
        self.teacher_dir = None if teacher_dir is None else Path(teacher_dir)
        self.views = views
        self.names = tuple(example_names(self.folder))
        if not cache_files.is_complete(self.folder / "images") or not self.names:
            raise ValueError(f"{self.folder} is not a complete degraded-image cache; delete it so the run rebuilds it.")
        if self.teacher_dir is not None and not cache_files.is_complete(self.teacher_dir):
            raise ValueError(f"{self.teacher_dir} holds no complete teacher labels; delete it so the run relabels.")
        if views and (self.teacher_dir is None or not cache_files.is_complete(self.teacher_dir / VIEWS)):
            raise ValueError(
                f"{self.teacher_dir} holds no complete labelled views; delete its {VIEWS} folder so the run relabels."
            )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        with _READ_LOCK:
            with np.load(self.folder / "images" / f"{name}.npz") as stored:
                example = {"input": stored["input"], "target": stored["target"], "name": name}
            if self.teacher_dir is not None:
                example["teacher_output"] = np.load(self.teacher_dir / f"{name}.npy")
            if self.views:
                with np.load(self.teacher_dir / VIEWS / f"{name}.npz") as views:
                    example.update(views)
        return example

    def __repr__(self) -> str:
        teacher_dir = self.teacher_dir and str(self.teacher_dir)
        return f"DegradedImages({str(self.folder)!r}, teacher_dir={teacher_dir!r}, views={self.views})"
