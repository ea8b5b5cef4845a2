r"""The ``kdjax`` command line: train, evaluate, sharpen, export.

    kdjax train    --config=configs/teacher.py:light --workdir=runs/teacher
    kdjax evaluate --model=runs/teacher --eval_dir=../shared/data/Set5
    kdjax sharpen  --model=rep_kd_sharpen_x2 --input=photo.png --output=photo_sharp.png
    kdjax export   --model=runs/student --output=my_model
    kdjax export   --model=rep_kd_sharpen_x2 --format=onnx --output=rep_kd_sharpen_x2.onnx
    kdjax import-weights --arch=rlfn --input=../shared/weights/rlfn_x2.pth --output=teachers/rlfn_x2

Commands:
  train     Train the run in --config (a teacher, or a student with or without a teacher),
            or every run of a suite config (quickstart, ablations), in --workdir. Resumes
            from --workdir's checkpoints; refuses a model folder, or a workdir started with
            another config (unless --allow_config_change).
  evaluate  Evaluate --model on its run's validation set, or on the folders --eval_dir.
  sharpen   Sharpen (or upscale) --input, an image, a folder of images or a video file
            (.mp4, .mov, .mkv, ...; H.264 out, frame times and audio kept), into --output.
            Images keep their alpha, 16 bits (--bit_depth), ICC profile and EXIF.
  export    Write --model (the --which checkpoint of a workdir) as a model folder
            (config.json + params.msgpack: how pretrained/ is made), or with
            --format=stablehlo|onnx as one file to run outside JAX (students).
  import-weights
            Convert the authors' PyTorch checkpoint --input of a published model (--arch:
            rlfn, rlfn_s or bsrn) into the model folder --output (no PyTorch needed).

--model is a released model's name (e.g. rep_kd_sharpen_x2), a model folder or a training
workdir (--workdir is accepted too). --config is a config file (``file.py:variant``), or the
name of a config shipped with kdjax (``teacher:light``). ``python launch.py`` is the same
program, which also accepts the command as ``--mode=<command>``.
Errors are printed as one sentence; --debug shows the traceback.
"""

from __future__ import annotations

import logging as std_logging
import re
import sys
import time
from importlib import resources
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from kdjax import outputs

COMMANDS = ("train", "evaluate", "sharpen", "export", "import-weights")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with a variant (configs/teacher.py:light), or a shipped config's "
    "name (teacher:light).", lock_config=True
)
_MODE = flags.DEFINE_enum("mode", None, COMMANDS, "The command, for `python launch.py --mode=...`.")
_WORKDIR = flags.DEFINE_string("workdir", None, "train: the run folder (checkpoints, logs, results).")
_MODEL = flags.DEFINE_string(
    "model", None, "evaluate/sharpen/export: a released model's name, a model folder or a training workdir."
)
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint of a workdir to use.")
_EVAL_DIR = flags.DEFINE_multi_string("eval_dir", [], "evaluate: image folder(s) instead of the validation set.")
_INPUT = flags.DEFINE_string(
    "input", None, "sharpen: an image file, a folder of images or a video; import-weights: the PyTorch checkpoint."
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "sharpen: output file or folder; export, import-weights: the model folder to write."
)
_FORMAT = flags.DEFINE_enum(
    "format", "folder", ["folder", "stablehlo", "onnx"],
    "export: a model folder (config.json + params.msgpack), a serialized StableHLO module (jax.export) "
    "or an ONNX graph.",
)
_ARCH = flags.DEFINE_string("arch", None, "import-weights: the checkpoint's architecture (rlfn, rlfn_s, bsrn).")
_TILE = flags.DEFINE_string(
    "tile", "auto", "sharpen: tile size in pixels, 0 for whole images, or 'auto' (whole images when they fit)."
)
_OVERLAP = flags.DEFINE_integer("overlap", 32, "sharpen: overlap between tiles in pixels.", lower_bound=0)
_SELF_ENSEMBLE = flags.DEFINE_bool("self_ensemble", False, "sharpen: average the 8 flips/rotations (8x slower).")
_BIT_DEPTH = flags.DEFINE_enum(
    "bit_depth", "auto", ["auto", "8", "16"],
    "sharpen: bits per sample of output images; auto: the input's (16 for 16-bit PNG and TIFF) where the "
    "output format holds it.",
)
_DTYPE = flags.DEFINE_enum(
    "dtype", None, ["float32", "bfloat16"], "sharpen: the model's compute dtype (default: its config's, float32)."
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "sharpen, export, import-weights: replace existing outputs (never inputs or released models)."
)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "train: resume a workdir with a config that differs from the one it started with."
)
_DEBUG = flags.DEFINE_bool("debug", False, "Show tracebacks instead of one-sentence errors.")


class UsageError(ValueError):
    """A command line that cannot run; printed as one sentence plus a pointer to --help."""


def _require(value: str | None, flag: str, command: str, example: str) -> str:
    if not value:
        raise UsageError(f"kdjax {command} needs --{flag}, e.g. --{flag}={example}")
    return value


def _model_source(command: str) -> str:
    return _MODEL.value or _require(_WORKDIR.value, "model", command, "rep_kd_sharpen_x2")


def _train() -> None:
    from kdjax import parallel, suite, train  # pylint: disable=import-outside-toplevel  # heavy

    config = _CONFIG.value
    if config is None:
        raise UsageError("kdjax train needs --config, e.g. --config=configs/quickstart.py")
    workdir = _require(_WORKDIR.value, "workdir", "train", "runs/my_run")
    if suite.is_suite(config):
        suite.run_suite(config, workdir)
        return
    parallel.initialize_distributed(config)
    train.train_and_evaluate(config, workdir, allow_config_change=_ALLOW_CONFIG_CHANGE.value)


def _evaluate() -> None:
    from kdjax import evaluation  # pylint: disable=import-outside-toplevel

    results = evaluation.evaluate_workdir(_model_source("evaluate"), which=_WHICH.value, eval_dirs=_EVAL_DIR.value)
    evaluation.print_workdir_results(results)


def _tile() -> int | str | None:
    if _TILE.value == "auto":
        return "auto"
    if not re.fullmatch(r"[0-9]+", _TILE.value):
        raise UsageError(f"--tile={_TILE.value} must be a whole number of pixels, 0 for whole images, or 'auto'")
    return int(_TILE.value) or None


def _sharpen() -> None:
    from kdjax import serving  # pylint: disable=import-outside-toplevel
    from kdjax.serving import files, video  # pylint: disable=import-outside-toplevel

    source = _model_source("sharpen")
    input_path = _require(_INPUT.value, "input", "sharpen", "photo.png")
    output_path = _require(_OUTPUT.value, "output", "sharpen", "photo_sharp.png")
    start = time.perf_counter()
    bit_depth = "auto" if _BIT_DEPTH.value == "auto" else int(_BIT_DEPTH.value)
    if video.is_video_path(input_path) and bit_depth != "auto":
        raise UsageError(f"--bit_depth={bit_depth} is for images; a video is always written as 8-bit H.264, so drop it")
    sharpener = serving.load(
        source, which=_WHICH.value, tile=_tile(), overlap=_OVERLAP.value, self_ensemble=_SELF_ENSEMBLE.value,
        dtype=_DTYPE.value,
    )
    if video.is_video_path(input_path):
        report = sharpener.sharpen_video(input_path, output_path, overwrite=_OVERWRITE.value)
        print(
            f"Wrote {report.frames} frames of {report.output_size[1]}x{report.output_size[0]} to {output_path} in "
            f"{report.seconds:.1f} s ({report.frames_per_second:.1f} frames/s)."
        )
        return
    written = files.sharpen_paths(sharpener, input_path, output_path, overwrite=_OVERWRITE.value, bit_depth=bit_depth)
    seconds = time.perf_counter() - start
    where = written[0] if len(written) == 1 else f"{len(written)} images under {output_path}"
    print(f"Wrote {where} in {seconds:.1f} s.")


def _export() -> None:
    from kdjax import weights  # pylint: disable=import-outside-toplevel

    source = _model_source("export")
    output = _require(_OUTPUT.value, "output", "export", "my_model")
    if _FORMAT.value == "folder":
        folder = weights.export_params(source, output, which=_WHICH.value, overwrite=_OVERWRITE.value)
        print(f"Exported the {_WHICH.value} checkpoint of {source} to {folder}.")
        return
    from kdjax.models import build_model, inference_form  # pylint: disable=import-outside-toplevel
    from kdjax.serving import export  # pylint: disable=import-outside-toplevel

    config, params = weights.restore_params(source, which=_WHICH.value)
    model_config, params = inference_form(config.model, params)
    model = build_model(model_config)
    if _FORMAT.value == "stablehlo":
        export.export_stablehlo(model, params, output, overwrite=_OVERWRITE.value)
    else:
        export.export_onnx(model, params, output, overwrite=_OVERWRITE.value)
    print(f"Exported {source} ({config.model.name}) as {_FORMAT.value} to {output} (any batch, height and width).")


def _import_weights() -> None:
    from kdjax import torch_import  # pylint: disable=import-outside-toplevel

    arch = _require(_ARCH.value, "arch", "import-weights", "rlfn")
    if arch not in torch_import.ARCHITECTURES:
        raise UsageError(f"--arch={arch} is not one of {', '.join(torch_import.ARCHITECTURES)}")
    checkpoint = _require(_INPUT.value, "input", "import-weights", "../shared/weights/rlfn_x2.pth")
    output = _require(_OUTPUT.value, "output", "import-weights", "teachers/rlfn_x2")
    folder = torch_import.import_to_folder(arch, checkpoint, output, overwrite=_OVERWRITE.value)
    print(f"Imported {arch} from {checkpoint} into {folder}.")


class _QuietLibraries(std_logging.Filter):
    """Keeps Orbax's and Grain's per-save INFO chatter (and JAX's search for a TPU) out of the log.

    Also Orbax's warning that a checkpoint has no metrics (checkpoints between
    evaluations have none by design, and the best-checkpoint policy ignores them)
    and its warnings that a manager opened to read weights is read-only.
    """

    NOISY = ("/orbax/", "/grain/", "xla_bridge.py")
    EXPECTED_WARNINGS = ("did not provide metrics", "read_only=True", "is read only")

    def filter(self, record: std_logging.LogRecord) -> bool:
        if not any(part in record.pathname for part in self.NOISY):
            return True
        message = record.getMessage()
        return record.levelno >= std_logging.WARNING and not any(w in message for w in self.EXPECTED_WARNINGS)


def _resolve_config_argument(argv: list[str]) -> list[str]:
    """Maps ``--config=NAME[:variant]`` to the shipped config file when NAME is not a file.

    A config given by path that does not exist is reported here, in one sentence, rather than
    by ml_collections' loader.
    """
    resolved = []
    for index, arg in enumerate(argv):
        match = re.fullmatch(r"--config=(.*)", arg)
        if match is None or index == 0:
            resolved.append(arg)
            continue
        path, sep, variant = match.group(1).partition(":")
        if not Path(path).is_file():
            shipped = resources.files("kdjax.configs") / f"{Path(path).stem}.py"
            if Path(path).suffix not in ("", ".py") or not shipped.is_file() or Path(path).parent != Path("."):
                names = sorted(
                    entry.name[:-3] for entry in resources.files("kdjax.configs").iterdir()
                    if entry.name.endswith(".py") and not entry.name.startswith(("_", "common"))
                )
                raise UsageError(
                    f"--config={match.group(1)}: config file {path} does not exist; pass a file such as "
                    f"configs/teacher.py:light or a shipped config's name ({', '.join(names)})"
                )
            path = str(shipped)
        resolved.append(f"--config={path}{sep}{variant}")
    return resolved


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with every bad flag or config reported as one sentence."""
    argv = list(argv)
    command = argv.pop(1) if len(argv) > 1 and argv[1] in COMMANDS else None
    try:
        rest = flags.FLAGS(_resolve_config_argument(argv))
    except UsageError as error:
        _exit_usage(str(error))
    except (KeyError, AttributeError) as error:
        # ml_collections reports an override of a key the config lacks as "'key'", sometimes
        # followed by a suggestion.
        text = str(error.args[0] if error.args else "")
        first_word = re.search(r"\w+", text)
        key = first_word.group(0) if first_word else ""
        suggestion = re.search(r'Did you mean "(\w+)"', text)
        overrides = [arg.split("=")[0] for arg in argv if re.match(rf"--config\.(.*\.)?{re.escape(key)}(=|$)", arg)]
        _exit_usage(
            f"{overrides[0] if overrides else '--config'}: the config has no key {key!r}"
            f"{f' (did you mean {suggestion.group(1)!r}?)' if suggestion else ''}; check its spelling against "
            "the config file"
        )
    except Exception as error:  # pylint: disable=broad-except  # absl and config loading raise many kinds
        _exit_usage(_one_line(error))
    if command is not None:
        flags.FLAGS.mode = command
    return rest


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    if "Traceback (most recent call last)" in text:
        # ml_collections wraps an error raised by a config file in that file's traceback: the
        # last line is the config's own sentence, after its exception type.
        last = text.splitlines()[-1]
        flag = text.split(":", 1)[0]
        text = f"{flag}: {last.split(': ', 1)[-1]}"
    return " ".join(text.split()) or type(error).__name__


def _exit_usage(message: str) -> None:
    sys.exit(f"error: {message.rstrip('.')}; see kdjax --help.")


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    logging.debug("Ignored at exit: %r in %r.", unraisable.exc_value, unraisable.object)


def _run(argv: list[str]) -> None:
    if len(argv) > 1:
        _exit_usage(f"unexpected arguments: {' '.join(argv[1:])}")
    if flags.FLAGS.mode is None:
        if _CONFIG.value is None:
            _exit_usage(f"name a command, one of {', '.join(COMMANDS)} (kdjax train --config=... --workdir=...)")
        flags.FLAGS.mode = "train"  # `python launch.py --config=... --workdir=...`, as before commands existed
    logging.set_verbosity(logging.INFO)
    if not _DEBUG.value:
        # Orbax's abandoned reads of a damaged checkpoint (which the command falls back from)
        # are finalized at exit and would print tracebacks although the command succeeded.
        sys.unraisablehook = _log_unraisable
    logging.get_absl_handler().addFilter(_QuietLibraries())
    from kdjax.train import NonFiniteLossError  # pylint: disable=import-outside-toplevel

    command = {
        "train": _train, "evaluate": _evaluate, "sharpen": _sharpen, "export": _export,
        "import-weights": _import_weights,
    }[flags.FLAGS.mode]
    try:
        command()
    except UsageError as error:
        if _DEBUG.value:
            raise
        _exit_usage(str(error))
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NonFiniteLossError) as error:
        if _DEBUG.value:
            raise
        # User-facing errors are single sentences; a traceback would bury them.
        sys.exit(f"error: {' '.join(str(error).split())}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kdjax`` command (and of ``launch.py``).

    SIGINT and SIGTERM end any command with one sentence and exit code 130 or 143, after the
    unfinished outputs of this process are removed (`kdjax.outputs`).
    """
    outputs.install_signal_handlers()
    try:
        app.run(_run, argv=argv or sys.argv, flags_parser=_parse_flags)
    except KeyboardInterrupt as error:
        outputs.remove_temporaries()
        name = getattr(error, "signal_name", "SIGINT")
        print(f"\nerror: Interrupted by {name}; unfinished outputs were removed and finished ones kept.", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 130))
