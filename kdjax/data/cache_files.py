"""The files of a cache folder kept whole: a manifest of each file's size and SHA-256, checked at start.

This module owns the integrity of the per-image cache's folders (``kdjax.data.degraded``'s
stored images, ``kdjax.distill``'s teacher labels), whatever they hold. `fill` is the only way
files get into them:

* a folder being built (never one in a model folder: `kdjax.outputs.check_folder`) gets
  ``make(name)`` for every name it lacks, each file written under a
  temporary name of this process and renamed when complete (`kdjax.outputs.atomic_file`); then
  ``MANIFEST.json`` (each file's size and SHA-256) and, last, ``COMPLETE``;
* a complete folder is verified against its manifest every time `fill` is called on it (at the
  start of every run that uses it): a missing file, one of another size or one whose checksum
  differs (garbage of the right size) is made again, with a warning naming it, and the manifest
  updated. A file the manifest does not list yet (a folder from before manifests, or one an
  interrupted build finished) is recorded as it is.

Several processes may fill one folder at once: temporaries never collide, and as every file is
a deterministic function of its name (the image's degradation is seeded by its name, the
teacher is the one the folder is named after), a file another process finished first is
replaced by the same bytes, and the manifests they write are identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import tqdm

from kdjax import outputs

COMPLETE = "COMPLETE"
MANIFEST = "MANIFEST.json"

logger = logging.getLogger(__name__)


def _digest(data: bytes) -> dict[str, int | str]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _write(path: Path, data: bytes) -> None:
    with outputs.atomic_file(path) as temporary:
        temporary.write_bytes(data)


def _damage(path: Path, entry: dict[str, int | str]) -> str | None:
    """What is wrong with ``path`` given its manifest entry, or None when it is whole."""
    if not path.is_file():
        return "it is missing"
    size = path.stat().st_size
    if size != entry["size"]:
        return f"{size} bytes where {entry['size']} were written"
    if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
        return "its checksum differs from the one recorded when it was written"
    return None


def is_complete(folder: Path) -> bool:
    """Whether `fill` finished ``folder`` (it may still need repairs, which `fill` makes)."""
    return (folder / COMPLETE).is_file()


def fill(
    folder: Path,
    names: Sequence[str],
    make: Callable[[str], bytes],
    *,
    description: str,
    remedy: str,
    complete_text: str,
) -> None:
    """Makes ``folder/<name>`` hold ``make(name)`` for every name, whole (see the module docstring).

    Args:
      folder: the cache folder (created if missing).
      names: the file names it must hold.
      make: the bytes of a file, from its name alone.
      description: the progress bar's label while building.
      remedy: what remaking a damaged file is called in its warning, e.g. "re-degrading it".
      complete_text: what ``COMPLETE`` holds (what the folder was made from).
    """
    outputs.check_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    complete = is_complete(folder)
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if complete and manifest_path.is_file() else {}
    changed = False
    for name in tqdm.tqdm(names, desc=description, unit="file", disable=complete):
        path = folder / name
        if name in manifest:
            damage = _damage(path, manifest[name])
            if damage is None:
                continue
            logger.warning("Cache file %s is damaged (%s); %s.", path, damage, remedy)
        elif path.is_file():  # finished by an interrupted build, another process, or before manifests
            manifest[name] = _digest(path.read_bytes())
            changed = True
            continue
        elif complete:
            logger.warning("Cache file %s is damaged (it is missing); %s.", path, remedy)
        data = make(name)
        _write(path, data)
        manifest[name] = _digest(data)
        changed = True
    if changed or not manifest_path.is_file():
        _write(manifest_path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    if not complete:
        _write(folder / COMPLETE, complete_text.encode())
