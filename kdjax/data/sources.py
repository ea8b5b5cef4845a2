"""Sources of sharp images: random-access collections that Grain can shuffle, shard and resume.

Every source has ``len`` and ``source[i]``; an example is ``{"image": uint8 (H, W, 3), "name":
str}``, or for paired sources of real blurry/sharp photos ``{"input": ..., "target": ...,
"name": str}``:

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
  ``tfds.data_source`` (array_record files; TensorFlow is not needed). Needs the optional
  extra: ``pip install 'kdjax[tfds]'``.
* ``CachedSource``: the most recently decoded examples of another source, kept in memory.

A run config describes its sources with ``folder_source_config`` and its siblings;
``build_source`` makes the source a config describes.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from kdjax.images import IMAGE_EXTENSIONS, image_size, read_image, to_rgb_uint8

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
_PAIRED_LAYOUTS = "<root>/<id>/{blurry,sharp}.<ext> or <root>/{blur,sharp}/<name>"


class DataSourceError(ValueError):
    """A data source that cannot be used (empty, missing partner file, unknown dataset...)."""


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
        try:
            import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel  # optional extra
        except ImportError:
            raise DataSourceError(
                f"The TFDS source {name!r} needs tensorflow-datasets, which is not installed; "
                "install it with pip install 'kdjax[tfds]'."
            ) from None

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
