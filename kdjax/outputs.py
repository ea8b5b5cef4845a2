"""Writing what a command makes without touching what the user owns: every kdjax writer goes here.

This module owns the rules every written file and folder follows (images, videos, exports,
imported weights, the label cache):

* `check_output` refuses, in one sentence and before any work, an output inside a released
  model's folder (the ``kdjax.pretrained`` package) or inside an exported model folder, an
  output that is one of the command's inputs, an existing output of the wrong kind (a folder
  where a file goes, a file where a folder goes), an existing output without ``overwrite``,
  an output under a file, and an output folder kdjax cannot write to; `check_folder` does the
  same for a folder that files are written into (sharpened images, the label cache).
* `atomic_file` and `atomic_folder` write under a temporary name in the destination's folder,
  renamed onto the destination only when complete. The temporary name holds this process's id
  and a random token and is created exclusively, so it is never a file that already exists
  (an input named like kdjax's temporaries included), nor another process's temporary.
* Every temporary is recorded in this process's registry while it exists; cleanup, on an error
  or a signal, removes only the recorded paths: never a name found by a pattern.
* `install_signal_handlers` turns SIGINT and SIGTERM into `Interrupted`, which unwinds the
  command (each writer removes its temporary); `remove_temporaries` is the backstop for the
  command line, which ends with one sentence and exit code 130 (SIGINT) or 143 (SIGTERM). A
  second signal while unwinding removes the temporaries and exits at once.

It imports nothing heavy, so serving, weights, the torch importer and the data cache share it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

__all__ = [
    "Interrupted",
    "OutputError",
    "atomic_file",
    "atomic_folder",
    "check_folder",
    "check_output",
    "install_signal_handlers",
    "remove_temporaries",
]

# The files of a model folder (kdjax.weights' CONFIG_FILE, PARAMS_FILE and EXPORT_FILE; weights
# imports this module, so the names are repeated rather than imported; test_robustness checks
# they agree), the one that makes a folder a model folder, and the package of the released ones.
MODEL_FOLDER_FILES = ("config.json", "params.msgpack", "export.json")
_MODEL_FOLDER_MARKER = MODEL_FOLDER_FILES[1]
_RELEASED_PACKAGE = "kdjax.pretrained"
_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

_registry: dict[Path, bool] = {}  # temporary -> whether it is a folder
_registry_lock = threading.Lock()


class OutputError(ValueError):
    """An output kdjax refuses to write; the message names it and the fix."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while a command ran."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signal_name = signal.Signals(signum).name
        self.exit_code = _EXIT_CODES[signum]


def _released_root() -> Path:
    return Path(str(resources.files(_RELEASED_PACKAGE))).resolve()


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _refuse_protected(shown: Path, written: Path, holders: Iterable[Path]) -> None:
    """Refuses writing ``written`` (resolved) when it is in the released models' folder or one of
    ``holders`` (the folders that would hold what is written) is a model folder."""
    root = _released_root()
    if _is_within(written, root):
        raise OutputError(
            f"Output {shown} is inside the released models' folder {root}, which kdjax never writes to; choose an "
            "output outside it."
        )
    for folder in holders:
        if (folder / _MODEL_FOLDER_MARKER).is_file():
            raise OutputError(
                f"Output {shown} is inside the model folder {folder}, which kdjax never writes into; choose an "
                "output outside it."
            )


def _refuse_unwritable(shown: Path, path: Path) -> None:
    """Refuses ``path`` when the nearest existing folder above it is a file or cannot be written."""
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"Output {shown} is under {ancestor}, which is a file, not a folder; choose another output.")
    try:
        with _temporary(ancestor / "probe", folder=False):
            pass
    except OSError as error:
        raise OutputError(
            f"Cannot write {shown}: folder {ancestor} is not writable ({error.strerror or error}); choose another "
            "output folder."
        ) from None


def check_folder(folder: str | os.PathLike) -> Path:
    """Refuses, with a one-sentence `OutputError`, a folder kdjax would write files into (a
    folder of sharpened images, a cache folder) that is or is inside a released or exported
    model folder, is under a file, or cannot be written; returns it as a Path."""
    folder = Path(folder)
    resolved = folder.resolve()
    _refuse_protected(folder, resolved, [resolved, *resolved.parents])
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"Output folder {folder} is a file; pass a folder.")
    _refuse_unwritable(folder, folder / "file")
    return folder


def check_output(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    folder: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> Path:
    """Refuses, with a one-sentence `OutputError`, an output kdjax must not write; returns it as a Path.

    Args:
      path: the file (or, with ``folder``, the folder) the command will write.
      overwrite: an existing output of the right kind may be replaced.
      folder: the output is a folder (a model folder): an existing one is replaced whole, and
        only when it is empty or an exported model folder holding nothing else (not a released one).
      inputs: the command's input files and folders; the output may be none of them, nor (for
        a folder) hold one.
    """
    path = Path(path)
    resolved = path.resolve()
    # A folder output may replace an exported model folder (with overwrite), never go inside one.
    _refuse_protected(path, resolved, resolved.parents if folder else [resolved.parent, *resolved.parent.parents])
    for source in map(Path, inputs):
        if not source.exists():
            continue
        if path.exists() and os.path.samefile(path, source):
            raise OutputError(f"Output {path} is the input {source}; choose another output so the input is kept.")
        if folder and _is_within(source.resolve(), resolved):
            raise OutputError(f"Output folder {path} holds the input {source}; choose another output folder.")
    if path.exists():
        if folder and not path.is_dir():
            raise OutputError(f"Output {path} is a file, not a folder; pass a new folder name.")
        if not folder and path.is_dir():
            raise OutputError(f"Output {path} is a folder, not a file; pass a file name, e.g. {path / 'output'}.")
        empty_folder = folder and not any(path.iterdir())
        if folder and not empty_folder and not (path / _MODEL_FOLDER_MARKER).is_file():
            raise OutputError(f"Output {path} exists and is not an exported model; choose an empty or new folder.")
        others = sorted(entry.name for entry in path.iterdir() if entry.name not in MODEL_FOLDER_FILES) if folder else []
        if others:
            raise OutputError(
                f"Output {path} holds {', '.join(others[:3])} besides a model, which replacing it would delete; "
                "choose an empty or new folder."
            )
        if not empty_folder and not overwrite:
            raise OutputError(
                f"Output {path} already exists; delete it, choose another output, or pass --overwrite (overwrite=True "
                "from Python)."
            )
    _refuse_unwritable(path, path)
    return path


def _register(temporary: Path, is_folder: bool) -> None:
    with _registry_lock:
        _registry[temporary] = is_folder


def _discard(temporary: Path, *, remove: bool) -> None:
    """Forgets a temporary of this process, removing it first when ``remove``."""
    with _registry_lock:
        is_folder = _registry.pop(temporary, None)
    if remove and is_folder is not None:
        if is_folder:
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def _temporary(path: Path, *, folder: bool) -> Iterator[Path]:
    """A new, recorded file or folder beside ``path`` (its suffix kept: writers pick formats by it),
    removed on leaving unless the caller renamed it away and let it go (``_discard(remove=False)``)."""
    while True:
        name = f".{path.stem}.kdjax-{os.getpid()}-{secrets.token_hex(4)}.partial{path.suffix}"
        temporary = path.with_name(name)
        try:
            # Recorded before it exists, so that a signal between the two never leaves it unrecorded.
            _register(temporary, folder)
            if folder:
                temporary.mkdir()
            else:
                os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            break
        except FileExistsError:
            _discard(temporary, remove=False)  # someone else's: never removed
        except BaseException:
            _discard(temporary, remove=False)
            raise
    try:
        yield temporary
    finally:
        _discard(temporary, remove=True)


def _made_parents(path: Path) -> list[Path]:
    """Creates the missing folders above ``path``; returns them, innermost first."""
    missing = []
    folder = path.absolute().parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for made in folders:
        with contextlib.suppress(OSError):
            made.rmdir()


def atomic_file(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """Yields a temporary file beside ``path`` to write; renames it onto ``path`` when the block ends.

    An error or a signal inside the block removes the temporary (and the folders made for it)
    and leaves ``path`` as it was. ``path`` is replaced atomically: a reader sees the old file or
    the new one, and another process finishing the same file first is simply replaced.
    """
    return _atomic(Path(path), folder=False)


def atomic_folder(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """Yields a temporary folder beside ``path`` to fill; it becomes ``path`` when the block ends.

    An existing ``path`` (which `check_output` allowed: empty, or a model folder with overwrite)
    is swapped out with signals held back, so ``path`` always names a whole folder, then removed.
    """
    return _atomic(Path(path), folder=True)


@contextlib.contextmanager
def _atomic(path: Path, *, folder: bool) -> Iterator[Path]:
    made = _made_parents(path)
    done = False
    try:
        with _temporary(path, folder=folder) as temporary:
            yield temporary
            if folder and path.is_dir() and any(path.iterdir()):
                with _temporary(path, folder=True) as aside, _signals_held():
                    os.replace(path, aside)
                    try:
                        os.replace(temporary, path)
                    except BaseException:
                        os.replace(aside, path)  # the old folder back, whole
                        raise
            else:
                os.replace(temporary, path)
            _discard(temporary, remove=False)
            done = True
    finally:
        if not done:
            _remove_if_empty(made)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Defers SIGINT and SIGTERM (delivered on leaving) where the main thread runs; else nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, set(_EXIT_CODES))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def remove_temporaries() -> int:
    """Removes every temporary this process has recorded and not yet renamed; returns how many."""
    with _registry_lock:
        temporaries = list(_registry)
    for temporary in temporaries:
        _discard(temporary, remove=True)
    return len(temporaries)


def _on_signal(signum: int, frame) -> None:
    del frame
    for other in _EXIT_CODES:
        signal.signal(other, _on_second_signal)
    raise Interrupted(signum)


def _on_second_signal(signum: int, frame) -> None:
    del frame
    remove_temporaries()
    sys.stderr.write(f"\nerror: Interrupted again by {signal.Signals(signum).name}; stopped at once.\n")
    sys.stderr.flush()
    os._exit(_EXIT_CODES[signum])  # pylint: disable=protected-access  # unwinding is what hung


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM raise `Interrupted` in the main thread (see the module docstring)."""
    for signum in _EXIT_CODES:
        signal.signal(signum, _on_signal)
