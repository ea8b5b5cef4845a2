"""Sources of sharp images and the Grain pipelines that turn them into training and evaluation data.

Sources are random-access (``len`` and ``source[i]``), so Grain can shuffle, shard and resume
them; an example is ``{"image": uint8 (H, W, 3), "name": str}``, or for paired sources of real
blurry/sharp photos ``{"input": ..., "target": ..., "name": str}``:

* ``SkimagePhotos``: the colour photographs that ship with scikit-image (no download), the
  default for the quickstart. Split: ``"eval"`` holds out chelsea and coffee, ``"train"`` is
  astronaut, rocket, hubble_deep_field, immunohistochemistry, motorcycle_left,
  motorcycle_right and retina, ``"all"`` is both.
* ``ImageFolder``: image files (png, jpg, jpeg, bmp, tif, tiff, webp) under one or several
  folders, recursively, in sorted order; other files are skipped and counted in the log.
* ``PairedFolder``: real blurry/sharp pairs laid out as ``<root>/<id>/{blurry,sharp}.<ext>``
  or GoPro-style as ``<dir>/{blur,sharp}/<name>`` (``<dir>`` the root or any folder below it,
  e.g. GoPro's per-sequence folders). Pairs are used as they are, without synthetic degradation.
* ``TfdsImages``: one image feature of a prepared TFDS dataset, read through
  ``tfds.data_source`` (array_record files; TensorFlow is not needed).

Pipelines (Grain ``MapDataset`` transformations, run in ``worker_count`` processes):

* ``make_train_dataset``: an infinite ``IterDataset`` of per-host batches
  ``{"input": uint8 (B, P, P, 3), "target": uint8 (B, P, P, 3)}``: shuffle (reshuffled every
  epoch, ``ShuffledEpochs``), random ``P`` x ``P`` crop, random flip/90-degree rotation, random
  degradation (the same crop and flip for both images of a pair), batches of
  ``global_batch_size // process_count``. The crop degrades a window reaching the
  degradation's ``context`` beyond the patch (where the image has it), with patch and window on
  its ``grid`` (see ``kdjax.degradations``), then keeps the patch: so the input is the whole
  image's degradation restricted to the patch, as evaluation and inference see it, not a
  degradation of the patch that mirrors pixels at its borders. The flip/rotation is applied to
  the sharp window before degradation: isotropic blur commutes with it (bicubic too, up to the
  rounding between its passes), but for anisotropic and motion blur, and JPEG, only this order
  yields an input the degradation could have produced from the target. Decoded source
  examples are kept in a least-recently-used cache of ``cache_mib`` MiB per process
  (``CachedSource``), as decoding whole photographs for every patch dominates the cost;
  every Grain worker process fills its own. Randomness comes from the per-example generator of
  Grain's ``random_map`` (seeded by ``seed`` and the example's position in the stream), so the
  batches depend only on the config, ``seed`` and the host's place; not on the number of worker
  processes. Every host slices its share out of one global example stream, so the hosts' batches
  at a step are disjoint and, together, the same global batch whatever the number of hosts.
  Iterators support ``get_state``/``set_state`` and Orbax checkpointing
  (``grain.checkpoint.CheckpointSave``/``CheckpointRestore``), so a resumed run sees exactly the
  batches it would have seen.
* ``make_eval_dataset``: a ``MapDataset`` of whole images ``{"input", "target", "name"}``, the
  target cropped so that height and width are multiples of the degradation scale, the input its
  degradation with fixed evaluation parameters (noise seeded per image by ``eval_seed``).

Images smaller than the training patch are an error by default (``min_size_policy="error"``,
raised before training starts for file sources, whose sizes are read from the file headers), or
are mirror-padded at the bottom and right to the patch size (``min_size_policy="pad"``).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grain
import ml_collections
import numpy as np
from absl import flags, logging

from kdjax import degradations
from kdjax.images import IMAGE_EXTENSIONS, ImageReadError, image_size, read_image, to_rgb_uint8

__all__ = [
    "SKIMAGE_EVAL_PHOTOS",
    "SKIMAGE_PHOTOS",
    "CachedSource",
    "DataSourceError",
    "ExamplePreparationError",
    "ImageFolder",
    "ImageTooSmallError",
    "PairedFolder",
    "ShuffledEpochs",
    "SkimagePhotos",
    "TfdsImages",
    "build_source",
    "default_data_config",
    "folder_source_config",
    "make_eval_dataset",
    "make_train_dataset",
    "mod_crop",
    "paired_source_config",
    "skimage_source_config",
    "tfds_source_config",
]

# scikit-image's natural colour photographs by name, and their files in ``skimage.data.data_dir``.
SKIMAGE_PHOTOS = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "retina": "retina.jpg",
}
# Held out for evaluation: a close-up of fur and a table top, unlike any training photo.
SKIMAGE_EVAL_PHOTOS = ("chelsea", "coffee")

SOURCE_KINDS = ("skimage", "folder", "paired", "tfds")
MIN_SIZE_POLICIES = ("error", "pad")
_PAIRED_LAYOUTS = "<root>/<id>/{blurry,sharp}.<ext> or <root>/{blur,sharp}/<name>"


class DataSourceError(ValueError):
    """A data source that cannot be used (empty, missing partner file, unknown dataset...)."""


class ImageTooSmallError(ValueError):
    """An image smaller than the training patch under ``min_size_policy="error"``."""


class ExamplePreparationError(ValueError):
    """An unexpected failure while turning one example into training or evaluation data."""


# ---------------------------------------------------------------------------------------------
# Sources.


class ImageFiles:
    """A random-access source over a fixed list of image files.

    The constructor reads every file's header, so files that are not images fail here, at
    once, and ``sizes`` holds each image's (height, width) without decoding it.
    """

    def __init__(self, files: Sequence[Path], names: Sequence[str]):
        self.files = tuple(files)
        self.names = tuple(names)
        self.sizes = tuple(image_size(path) for path in self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": read_image(self.files[index]), "name": self.names[index]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images)"


class SkimagePhotos(ImageFiles):
    """scikit-image's colour photographs; ``split`` is "train", "eval" (chelsea, coffee) or "all"."""

    def __init__(self, split: str = "train"):
        import skimage.data  # pylint: disable=import-outside-toplevel  # only this source needs it

        if split == "train":
            names = [name for name in SKIMAGE_PHOTOS if name not in SKIMAGE_EVAL_PHOTOS]
        elif split == "eval":
            names = list(SKIMAGE_EVAL_PHOTOS)
        elif split == "all":
            names = list(SKIMAGE_PHOTOS)
        else:
            raise DataSourceError(f"Unknown scikit-image split {split!r}; choose 'train', 'eval' or 'all'.")
        data_dir = Path(skimage.data.data_dir)
        super().__init__([data_dir / SKIMAGE_PHOTOS[name] for name in names], names)


def _is_image_file(path: Path) -> bool:
    # Dotfiles such as macOS "._photo.jpg" resource forks carry image suffixes but no image.
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _existing_folder(path: str | os.PathLike, what: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {folder} does not exist or is not a folder; check the path.")
    return folder


class ImageFolder(ImageFiles):
    """Every image file under one or several folders (recursively), sorted by path within each folder.

    Example names are paths relative to the folder, prefixed by the folder's own name when
    there are several folders. Files without an image suffix (and dotfiles) are skipped and
    their count is logged.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike]):
        roots = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if not roots:
            raise DataSourceError("ImageFolder got no folders; pass at least one folder of images.")
        files, names = [], []
        for root in [_existing_folder(r, "Image folder") for r in roots]:
            found = sorted(path for path in root.rglob("*") if path.is_file())
            images = [path for path in found if _is_image_file(path)]
            if len(images) < len(found):
                logging.info("Skipped %d non-image files under %s.", len(found) - len(images), root)
            files += images
            names += [
                path.relative_to(root).as_posix() if len(roots) == 1 else f"{root.name}/{path.relative_to(root).as_posix()}"
                for path in images
            ]
        if not files:
            raise DataSourceError(
                f"No image files ({', '.join(IMAGE_EXTENSIONS)}) found under {', '.join(map(str, roots))}; "
                "point the source at a folder that contains images."
            )
        super().__init__(files, names)


class PairedFolder:
    """Real blurry/sharp image pairs under ``root``, in either layout (see the module docstring).

    Every blurry image needs its sharp partner and vice versa, of the same size; the
    constructor checks this from the file headers and names the first offending file.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = _existing_folder(root, "Paired image folder")
        pairs: list[tuple[Path, Path, str]] = []
        for folder, subfolders, files in os.walk(self.root):
            folder = Path(folder)
            subfolders.sort()  # os.walk descends in this (now sorted) order
            if "blur" in subfolders and "sharp" in subfolders:
                pairs += self._folder_pairs(folder)
                subfolders[:] = [s for s in subfolders if s not in ("blur", "sharp")]
            pairs += self._id_pair(folder, files)
        if not pairs:
            raise DataSourceError(
                f"No blurry/sharp image pairs found under {self.root}; lay them out as {_PAIRED_LAYOUTS}."
            )
        self.blurry_files, self.files, self.names = map(tuple, zip(*pairs))  # files: the sharp ones
        self.sizes = tuple(self._pair_size(blurry, sharp) for blurry, sharp, _ in pairs)

    def _folder_pairs(self, folder: Path) -> list[tuple[Path, Path, str]]:
        """GoPro layout: ``folder/blur/<name>`` pairs with ``folder/sharp/<name>``."""
        blur = {p.name: p for p in (folder / "blur").iterdir() if p.is_file() and _is_image_file(p)}
        sharp = {p.name: p for p in (folder / "sharp").iterdir() if p.is_file() and _is_image_file(p)}
        for lonely, partner_folder in ((blur.keys() - sharp.keys(), "sharp"), (sharp.keys() - blur.keys(), "blur")):
            if lonely:
                name = min(lonely)
                path = (blur if partner_folder == "sharp" else sharp)[name]
                raise DataSourceError(
                    f"{path} has no partner {folder / partner_folder / name}; add it or remove {path.name}."
                )
        prefix = folder.relative_to(self.root).as_posix()
        return [
            (blur[name], sharp[name], name if prefix == "." else f"{prefix}/{name}") for name in sorted(blur)
        ]

    def _id_pair(self, folder: Path, files: list[str]) -> list[tuple[Path, Path, str]]:
        """Per-id layout: ``folder/blurry.<ext>`` pairs with ``folder/sharp.<ext>``."""
        by_stem = {Path(f).stem: folder / f for f in sorted(files) if _is_image_file(folder / f)}
        blurry, sharp = by_stem.get("blurry"), by_stem.get("sharp")
        if blurry is None and sharp is None:
            return []
        if blurry is None or sharp is None:
            present, missing = (sharp, "blurry") if blurry is None else (blurry, "sharp")
            raise DataSourceError(
                f"{present} has no partner {folder / missing}.<ext> in its folder; add it or remove the folder."
            )
        return [(blurry, sharp, folder.relative_to(self.root).as_posix())]

    @staticmethod
    def _pair_size(blurry: Path, sharp: Path) -> tuple[int, int]:
        blurry_size, sharp_size = image_size(blurry), image_size(sharp)
        if blurry_size != sharp_size:
            raise DataSourceError(
                f"{blurry} is {blurry_size[0]}x{blurry_size[1]} but its partner {sharp} is "
                f"{sharp_size[0]}x{sharp_size[1]}; pairs must have the same size."
            )
        return sharp_size

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "input": read_image(self.blurry_files[index]),
            "target": read_image(self.files[index]),
            "name": self.names[index],
        }

    def __repr__(self) -> str:
        return f"PairedFolder({self.root}, {len(self)} pairs)"


class TfdsImages:
    """One image feature of a prepared TFDS dataset, e.g. ``TfdsImages("div2k/bicubic_x2", "train", feature="hr")``.

    Reads through ``tfds.data_source`` (the dataset must be prepared in array_record format
    under ``data_dir``, or TFDS's default data folder when it is None; nothing is downloaded).
    Example names are ``"<name>/<split>/<index>"``.
    """

    def __init__(self, name: str, split: str = "train", feature: str = "image", data_dir: str | None = None):
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel  # slow, rarely needed

        self.dataset, self.split, self.feature = name, split, feature
        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
        except tfds.core.registered.DatasetNotFoundError:
            raise DataSourceError(
                f"TFDS has no dataset named {name!r}; check the spelling against tfds.list_builders()."
            ) from None
        except Exception as error:  # pylint: disable=broad-except  # TFDS raises many kinds here
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DataSourceError(
                f"TFDS dataset {name!r} (split {split!r}) could not be opened from "
                f"{data_dir or 'the default TFDS data_dir'} ({first_line}); prepare it in array_record format "
                "or pass the data_dir that holds it."
            ) from None
        features = list(self._source.dataset_info.features.keys())
        if feature not in features:
            raise DataSourceError(
                f"TFDS dataset {name!r} has no feature {feature!r}; choose the image feature among {features}."
            )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = f"{self.dataset}/{self.split}/{index}"
        try:
            image = to_rgb_uint8(self._source[index][self.feature], name=f"TFDS example {name}")
        except Exception as error:  # pylint: disable=broad-except  # re-raised naming the example
            raise DataSourceError(
                f"Reading TFDS example {name} failed ({type(error).__name__}: {' '.join(str(error).split())}); "
                "check the prepared dataset files."
            ) from error
        return {"image": image, "name": name}

    def __repr__(self) -> str:
        return f"TfdsImages({self.dataset!r}, {self.split!r}, {len(self)} images)"


class CachedSource:
    """A source whose most recently read examples stay decoded in memory, up to ``max_bytes`` of arrays.

    Least recently read examples are dropped first; an example larger than ``max_bytes`` is
    never kept. The cache belongs to the process that reads: a pickled copy, as sent to each
    Grain worker process, starts empty, so a pipeline holds up to ``max_bytes`` per worker.
    Cached arrays are made read-only, so nothing downstream can change what later reads return.
    Safe to read from several threads.
    """

    def __init__(self, source: ImageFiles | PairedFolder | TfdsImages, max_bytes: int):
        self.source = source
        self.max_bytes = max_bytes
        self._clear()

    def _clear(self) -> None:
        # index -> (example, its bytes), least recently read first.
        self._examples: collections.OrderedDict[int, tuple[dict[str, Any], int]] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._clear()

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        with self._lock:
            if index in self._examples:
                self._examples.move_to_end(index)
                return dict(self._examples[index][0])  # callers may change the dict, not the arrays
        # Decoded outside the lock, so threads decode different images at once.
        example = self.source[index]
        arrays = [value for value in example.values() if isinstance(value, np.ndarray)]
        for array in arrays:
            array.flags.writeable = False
        size = sum(array.nbytes for array in arrays)
        with self._lock:
            if size <= self.max_bytes and index not in self._examples:
                self._examples[index] = (example, size)
                self._bytes += size
                while self._bytes > self.max_bytes:
                    self._bytes -= self._examples.popitem(last=False)[1][1]
        return dict(example)

    def __repr__(self) -> str:
        return f"CachedSource({self.source!r}, {self.max_bytes / 2**20:g} MiB)"


Source = ImageFiles | PairedFolder | TfdsImages | CachedSource


def _source_config(kind: str, **fields: Any) -> ml_collections.ConfigDict:
    """A source config with every key of every kind, so command-line overrides can switch kinds.

    Fields: ``kind`` ("skimage", "folder", "paired" or "tfds"); ``split`` (skimage: "train",
    "eval" or "all"; tfds: a TFDS split such as "train" or "validation[:10]"); ``paths``
    (folder: tuple of folders); ``root`` (paired: the folder holding the pairs); ``name``,
    ``feature``, ``data_dir`` (tfds: dataset name, image feature, data folder or "" for TFDS's
    default).
    """
    config = ml_collections.ConfigDict(
        dict(kind=kind, split="train", paths=(), root="", name="", feature="image", data_dir="")
    )
    config.update(fields)
    return config


def skimage_source_config(split: str = "train") -> ml_collections.ConfigDict:
    """scikit-image's photographs, ``split`` "train", "eval" or "all"."""
    return _source_config("skimage", split=split)


def folder_source_config(*paths: str | os.PathLike) -> ml_collections.ConfigDict:
    """Every image under the given folders."""
    return _source_config("folder", paths=tuple(str(path) for path in paths))


def paired_source_config(root: str | os.PathLike) -> ml_collections.ConfigDict:
    """Real blurry/sharp pairs under ``root``."""
    return _source_config("paired", root=str(root))


def tfds_source_config(
    name: str, split: str = "train", feature: str = "image", data_dir: str = ""
) -> ml_collections.ConfigDict:
    """One image feature of a prepared TFDS dataset, e.g. ``tfds_source_config("div2k/bicubic_x2", feature="hr")``."""
    return _source_config("tfds", name=name, split=split, feature=feature, data_dir=data_dir)


def build_source(cfg: ml_collections.ConfigDict) -> Source:
    """The source a source config describes (``kind`` picks which of its fields are read)."""
    if cfg.kind == "skimage":
        return SkimagePhotos(cfg.split)
    if cfg.kind == "folder":
        if not cfg.paths:
            raise DataSourceError("A folder source needs paths; set e.g. paths=('../shared/data/BSD68',).")
        return ImageFolder(list(cfg.paths))
    if cfg.kind == "paired":
        if not cfg.root:
            raise DataSourceError("A paired source needs root; set it to the folder that holds the pairs.")
        return PairedFolder(cfg.root)
    if cfg.kind == "tfds":
        if not cfg.name:
            raise DataSourceError("A tfds source needs name; set it to a dataset such as 'div2k/bicubic_x2'.")
        return TfdsImages(cfg.name, cfg.split, feature=cfg.feature, data_dir=cfg.data_dir or None)
    raise DataSourceError(f"Unknown data source kind {cfg.kind!r}; choose one of {', '.join(SOURCE_KINDS)}.")


# ---------------------------------------------------------------------------------------------
# Data config.


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
        )
    )


# ---------------------------------------------------------------------------------------------
# Per-example transformations. They run in Grain's worker processes: anything unexpected is
# re-raised as one sentence naming the example, and they are picklable dataclasses.


def _too_small_message(name: str, height: int, width: int, patch_size: int) -> str:
    return (
        f"Image {name} is {height}x{width} pixels, smaller than the {patch_size}x{patch_size} training patch; "
        "lower data.patch_size, set data.min_size_policy='pad', or remove the image."
    )


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crops the bottom and right so that height and width are multiples of ``scale``."""
    height, width = image.shape[0] - image.shape[0] % scale, image.shape[1] - image.shape[1] % scale
    return image[:height, :width]


def _prepare(fn, example: dict[str, Any], what: str):
    """Runs ``fn(example)``; unexpected errors become one sentence naming the example."""
    try:
        return fn(example)
    except (ImageReadError, ImageTooSmallError, ExamplePreparationError):
        raise
    except Exception as error:  # pylint: disable=broad-except  # re-raised with the example's name
        raise ExamplePreparationError(
            f"Preparing the {what} of {example.get('name', 'an example')} failed "
            f"({type(error).__name__}: {' '.join(str(error).split())}); "
            "check that image and the data config."
        ) from error


def _patch_and_window(
    length: int, patch_size: int, context: int, grid: int, rng: np.random.Generator
) -> tuple[int, int, int]:
    """Draws a patch along one image axis and the window around it that gets degraded.

    Returns ``(start, low, high)``: the patch covers ``[start, start + patch_size)`` and the window
    ``[low, high)``, reaching ``context`` (a multiple of ``grid``) beyond the patch where the
    image has it. Patch and window start on multiples of ``grid`` and the window ends on one,
    within the part of the axis that evaluation's mod crop keeps, so that the window's
    bicubic downscaling groups the same pixels as the whole image's. An axis too short for
    an aligned patch (e.g. padded to the patch size) is used whole, unaligned.
    """
    usable = length - length % grid
    if usable < patch_size:
        usable, grid = length, 1
    start = int(rng.integers(0, (usable - patch_size) // grid + 1)) * grid
    low = max(start - context, 0)
    high = min(math.ceil((start + patch_size + context) / grid) * grid, usable)
    return start, low, high


def _rotate_flip(
    windows: list[np.ndarray], top: int, left: int, size: int, transform: int
) -> tuple[list[np.ndarray], int, int]:
    """Applies one of the 8 symmetries of the square to every window: ``transform % 4`` quarter
    turns, then a horizontal flip when ``transform >= 4``; returns the windows and where the
    ``size`` x ``size`` patch at (``top``, ``left``) has moved."""
    for _ in range(transform % 4):
        width = windows[0].shape[1]
        windows = [np.rot90(window) for window in windows]
        top, left = width - left - size, top
    if transform >= 4:
        windows = [window[:, ::-1] for window in windows]
        left = windows[0].shape[1] - left - size
    return windows, top, left


@dataclasses.dataclass(frozen=True)
class TrainPatch:
    """Random crop, flip/rotation and degradation of one example into ``{"input", "target"}`` patches.

    The degradation sees the patch's real surroundings (see the module docstring): it degrades
    a window ``degradation.context`` pixels (rounded up to its ``grid``) wider on each side,
    clipped to the image, and the patch is cut out of the result.
    """

    patch_size: int
    degradation: degradations.Degradation | None  # None for paired sources, which bring their inputs
    min_size_policy: str
    augment: bool

    def __call__(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return _prepare(lambda e: self._patch(e, rng), example, "training patch")

    def _patch(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        images = [example["input"], example["target"]] if "target" in example else [example["image"]]
        height, width = images[-1].shape[:2]
        size = self.patch_size
        if height < size or width < size:
            if self.min_size_policy == "error":
                raise ImageTooSmallError(_too_small_message(example["name"], height, width, size))
            # Mirrored with the edge repeated (numpy's "symmetric"), which also works for 1-pixel sides.
            padding = ((0, max(0, size - height)), (0, max(0, size - width)), (0, 0))
            images = [np.pad(image, padding, mode="symmetric") for image in images]
            height, width = images[-1].shape[:2]
        grid = 1 if self.degradation is None else self.degradation.grid
        context = 0 if self.degradation is None else math.ceil(self.degradation.context / grid) * grid
        top, row_low, row_high = _patch_and_window(height, size, context, grid, rng)
        left, col_low, col_high = _patch_and_window(width, size, context, grid, rng)
        windows = [image[row_low:row_high, col_low:col_high] for image in images]
        top, left = top - row_low, left - col_low
        if self.augment:
            windows, top, left = _rotate_flip(windows, top, left, size, int(rng.integers(8)))
        if self.degradation is not None:
            windows = [self.degradation(np.ascontiguousarray(windows[0]), rng), windows[0]]
        patch_input, target = (np.ascontiguousarray(window[top : top + size, left : left + size]) for window in windows)
        return {"input": patch_input, "target": target}


@dataclasses.dataclass(frozen=True)
class EvalExample:
    """Mod-crop and fixed degradation of one whole image; noise is seeded by (seed, index)."""

    scale: int
    degradation: degradations.Degradation | None  # None for paired sources
    seed: int

    def __call__(self, index: int, example: dict[str, Any]) -> dict[str, Any]:
        return _prepare(lambda e: self._example(index, e), example, "evaluation image")

    def _example(self, index: int, example: dict[str, Any]) -> dict[str, Any]:
        target = mod_crop(example["target"] if "target" in example else example["image"], self.scale)
        if min(target.shape[:2]) == 0:
            raise ImageTooSmallError(
                f"Image {example['name']} is smaller than the scale {self.scale}; remove it from the evaluation set."
            )
        if self.degradation is None:
            degraded = mod_crop(example["input"], self.scale)
        else:
            degraded = self.degradation(target, np.random.default_rng([self.seed, index]))
        return {"input": degraded, "target": target, "name": example["name"]}


# ---------------------------------------------------------------------------------------------
# Pipelines.


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
            raise ImageTooSmallError(_too_small_message(str(path), height, width, cfg.patch_size))


def make_train_dataset(
    data_cfg: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    worker_count: int | None = None,
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
    source = build_source(data_cfg.train_source)
    _check_patch_fits(source, data_cfg)
    paired = isinstance(source, PairedFolder)
    if data_cfg.cache_mib:
        source = CachedSource(source, max_bytes=int(data_cfg.cache_mib * 2**20))
    transform = TrainPatch(
        patch_size=data_cfg.patch_size,
        degradation=None if paired else degradations.build_degradation(data_cfg.degradation, train=True),
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
    transform = EvalExample(
        scale=data_cfg.degradation.scale,
        degradation=None if paired else degradations.build_degradation(data_cfg.degradation, train=False),
        seed=data_cfg.eval_seed,
    )
    return grain.MapDataset.source(source).map_with_index(transform)
