r"""The ``kdjax`` command line: a thin layer of flags over importable modules.

``kdjax`` (or ``kdjax --help``) lists the commands, ``kdjax <command> --help`` one command's flags
with their defaults and an example; the `COMMANDS` table below is the single source of both and
of which flags a command accepts. Each command's body checks its flags and files, then imports
what it needs: nothing heavier than absl and ml_collections is imported before that, so a usage
error arrives at once and ``kdjax sharpen`` never imports training code (Orbax, Grain,
tensorboardX). ``python launch.py`` is the same program, which also accepts the command as
``--mode=<command>``. Errors are printed as one sentence; --debug shows the traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging as std_logging
import os
import re
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from kdjax import outputs
from kdjax.errors import BackendError, NonFiniteLossError

COMMAND_NAMES = ("sharpen", "upscale", "stream", "models", "evaluate", "train", "export", "import-weights")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with a variant (configs/teacher.py:light), or a shipped config's "
    "name (teacher:light).", lock_config=True
)
_MODE = flags.DEFINE_enum("mode", None, COMMAND_NAMES, "The command, for `python launch.py --mode=...`.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The run folder (checkpoints, logs, results).")
_MODEL = flags.DEFINE_string("model", None, "A released model's name or alias, a model folder or a training workdir.")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint of a workdir to use.")
_EVAL_DIR = flags.DEFINE_multi_string("eval_dir", [], "Image folder(s) instead of the validation set.")
_INPUT = flags.DEFINE_multi_string("input", [], "Input file(s), folder(s) or glob pattern(s).")
_OUTPUT = flags.DEFINE_string("output", None, "Output file or folder.")
_FORMAT = flags.DEFINE_enum("format", "folder", ["folder", "stablehlo", "onnx"], "What export writes.")
_ARCH = flags.DEFINE_string("arch", None, "The checkpoint's architecture (rlfn, rlfn_s, bsrn).")
_TILE = flags.DEFINE_string("tile", "auto", "Tile size in pixels, 0 for whole images, or 'auto'.")
_OVERLAP = flags.DEFINE_integer("overlap", 32, "Overlap between tiles in pixels.", lower_bound=0)
_SELF_ENSEMBLE = flags.DEFINE_bool("self_ensemble", False, "Average the 8 flips/rotations (8x slower).")
_BIT_DEPTH = flags.DEFINE_enum("bit_depth", "auto", ["auto", "8", "16"], "Bits per sample of output images.")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "The model's compute dtype.")
_SIZE = flags.DEFINE_string("size", None, "Frame size of the stream, WIDTHxHEIGHT.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace existing outputs (never inputs or released models)."
)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir with a config that differs from the one it started with."
)
_DEBUG = flags.DEFINE_bool("debug", False, "Show tracebacks instead of one-sentence errors.")

# Flags every command accepts.
COMMON_FLAGS = {"debug": "show the traceback of an error instead of one sentence", "mode": ""}
# --workdir is accepted wherever --model is, as the same thing.
MODEL_SYNONYM = "workdir"


class UsageError(ValueError):
    """A command line that cannot run; printed as one sentence plus a pointer to the command's help."""


@dataclasses.dataclass(frozen=True)
class Command:
    """A command: its one-line summary, its flags (name -> what it means here), an example,
    the function that runs it, the defaults that differ from the flag's own, and whether the
    arguments after its flags are more inputs (a shell's expansion of photos/*.jpg)."""

    summary: str
    flags: dict[str, str]
    example: str
    run: Callable[[], None]
    defaults: dict[str, str] = dataclasses.field(default_factory=dict)
    inputs_after_flags: bool = False


def _require(value: str | None, flag: str, command: str, example: str) -> str:
    if not value:
        raise UsageError(f"kdjax {command} needs --{flag}, e.g. --{flag}={example}")
    return value


def _model_source(command: str) -> str:
    default = COMMANDS[command].defaults.get("model")
    return _MODEL.value or _WORKDIR.value or _require(default, "model", command, "sharpen_x2")


def _tile() -> int | str | None:
    if _TILE.value == "auto":
        return "auto"
    if not re.fullmatch(r"[0-9]+", _TILE.value):
        raise UsageError(f"--tile={_TILE.value} must be a whole number of pixels, 0 for whole images, or 'auto'")
    return int(_TILE.value) or None


def _load(source: str, tile: int | str | None):
    """The `Sharpener` for --model, `tile` and the other tiling flags, once JAX's backend starts."""
    from kdjax import devices, serving  # pylint: disable=import-outside-toplevel  # JAX

    devices.check_backend()
    return serving.load(
        source, which=_WHICH.value, tile=tile, overlap=_OVERLAP.value, self_ensemble=_SELF_ENSEMBLE.value,
        dtype=_DTYPE.value,
    )


def _refuse_existing(output: str) -> None:
    if Path(output).exists() and not _OVERWRITE.value:
        raise ValueError(f"Output {output} already exists; delete it, choose another output, or pass --overwrite.")


def _train() -> None:
    config = _CONFIG.value
    if config is None:
        raise UsageError("kdjax train needs --config, e.g. --config=configs/quickstart.py")
    workdir = _require(_WORKDIR.value, "workdir", "train", "runs/my_run")
    from kdjax import devices, parallel, suite, train  # pylint: disable=import-outside-toplevel  # heavy

    devices.check_backend()
    if suite.is_suite(config):
        suite.run_suite(config, workdir)
        return
    parallel.initialize_distributed(config)
    train.train_and_evaluate(config, workdir, allow_config_change=_ALLOW_CONFIG_CHANGE.value)


def _evaluate() -> None:
    source = _model_source("evaluate")
    from kdjax import devices, evaluation  # pylint: disable=import-outside-toplevel

    devices.check_backend()
    results = evaluation.evaluate_workdir(source, which=_WHICH.value, eval_dirs=_EVAL_DIR.value)
    evaluation.print_workdir_results(results)


def _sharpen(command: str) -> None:
    inputs = _INPUT.value
    if not inputs:
        raise UsageError(f"kdjax {command} needs --input, e.g. --input=photo.png (repeat it, or give a folder or photos/*.jpg)")
    output = _require(_OUTPUT.value, "output", command, "photo_sharp.png")
    tile = _tile()
    from kdjax.serving import files, video  # pylint: disable=import-outside-toplevel  # no JAX
    bit_depth = "auto" if _BIT_DEPTH.value == "auto" else int(_BIT_DEPTH.value)
    if bit_depth != "auto" and all(video.is_video_path(path) for path in inputs):
        raise UsageError(f"--bit_depth={bit_depth} is for images; a video is always written as 8-bit H.264, so drop it")
    plan = files.plan_paths(inputs, output, overwrite=_OVERWRITE.value)
    source = _model_source(command)
    sharpener = _load(source, tile)
    if command == "upscale" and sharpener.scale == 1:
        from kdjax import catalog  # pylint: disable=import-outside-toplevel

        upscalers = [f"{m.aliases[0]} ({m.name})" if m.aliases else m.name for m in catalog.catalogue() if m.scale > 1]
        raise UsageError(
            f"--model={source} keeps the image size (it sharpens); kdjax upscale needs an upscaling model such as "
            f"{' or '.join(upscalers)}, or use kdjax sharpen"
        )
    report = files.sharpen_planned(sharpener, plan, bit_depth=bit_depth)
    print(report.summary())
    if report.failed:
        sys.exit(1)


def _stream() -> None:
    from kdjax.serving import stream  # pylint: disable=import-outside-toplevel  # no JAX

    size = stream.parse_size(_require(_SIZE.value, "size", "stream", "1280x720"))
    tile = _tile()
    if sys.stdin.isatty():
        raise UsageError(
            "kdjax stream reads raw RGB24 frames on standard input, so pipe them in, e.g. ffmpeg -i in.mp4 "
            f"-f rawvideo -pix_fmt rgb24 - | kdjax stream --size={size[1]}x{size[0]} > out.rgb"
        )
    source = _model_source("stream")
    sharpener = _load(source, tile)
    height, width = size[0] * sharpener.scale, size[1] * sharpener.scale
    print(f"kdjax stream: {source}, {size[1]}x{size[0]} RGB24 in, {width}x{height} RGB24 out.", file=sys.stderr)
    report = stream.sharpen_stream(sharpener, size, sys.stdin.buffer, sys.stdout.buffer)
    if report.output_closed:
        # Nothing more can reach the reader; without this, the interpreter's final flush of
        # standard output raises BrokenPipeError again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    print(report.summary(), file=sys.stderr)


def _models() -> None:
    from kdjax import catalog  # pylint: disable=import-outside-toplevel  # no JAX

    print(catalog.format_table(catalog.catalogue()))
    print(
        "\nms/1080p: milliseconds per 1920x1080 output frame on the 2-core CPU of the benchmarks; PSNR-Y in dB; "
        "'-': not measured (benchmarks/results/*.json).\nsharpen keeps the size (x1), upscale multiplies it; "
        "use a name or its alias, e.g. kdjax upscale --model=upscale_x2 --input=photo.png --output=big.png"
    )


def _export() -> None:
    source = _model_source("export")
    output = _require(_OUTPUT.value, "output", "export", "my_model")
    _refuse_existing(output)
    from kdjax import devices, weights  # pylint: disable=import-outside-toplevel

    devices.check_backend()
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
    arch = _require(_ARCH.value, "arch", "import-weights", "rlfn")
    if len(_INPUT.value) > 1:
        raise UsageError(f"kdjax import-weights converts one checkpoint, not {len(_INPUT.value)}; pass --input once")
    checkpoint = _require(next(iter(_INPUT.value), None), "input", "import-weights", "../shared/weights/rlfn_x2.pth")
    output = _require(_OUTPUT.value, "output", "import-weights", "teachers/rlfn_x2")
    _refuse_existing(output)
    from kdjax import devices, torch_import  # pylint: disable=import-outside-toplevel

    if arch not in torch_import.ARCHITECTURES:
        raise UsageError(f"--arch={arch} is not one of {', '.join(torch_import.ARCHITECTURES)}")
    devices.check_backend()
    folder = torch_import.import_to_folder(arch, checkpoint, output, overwrite=_OVERWRITE.value)
    print(f"Imported {arch} from {checkpoint} into {folder}.")


_MODEL_HELP = "a released model's name or alias (see kdjax models), a model folder or a training workdir"
_TILING = {
    "tile": "tile size in pixels, 0 for whole images, or 'auto' (whole images when they fit)",
    "overlap": "overlap between tiles in pixels",
    "dtype": "the model's compute dtype (default: its config's, float32)",
}
_FILES = {
    "input": "an image, a video, a folder of them or a glob pattern (photos/*.jpg); repeat it, or list more files "
    "after the flags",
    "output": "the output file (one input) or folder (images become .png, videos keep H.264 containers)",
    "overwrite": "replace existing outputs (inputs never)",
    "bit_depth": "bits per sample of output images; auto: the input's (16 for 16-bit PNG and TIFF)",
    "self_ensemble": "average the 8 flips/rotations (8x slower, a little better)",
    **_TILING,
}
COMMANDS = {
    "sharpen": Command(
        "Sharpen images, videos and folders of them (same size out; an upscaling model upscales).",
        {"model": _MODEL_HELP, **_FILES},
        "kdjax sharpen --model=sharpen_x2 --input=photo.jpg --input=clips/ --output=sharp/",
        functools.partial(_sharpen, "sharpen"),
        {"model": "sharpen_x2"},
        inputs_after_flags=True,
    ),
    "upscale": Command(
        "Upscale images, videos and folders of them with an upscaling model (x2 bigger out).",
        {"model": _MODEL_HELP, **_FILES},
        "kdjax upscale --model=upscale_x2 --input=photo.png --output=photo_x2.png",
        functools.partial(_sharpen, "upscale"),
        {"model": "upscale_x2"},
        inputs_after_flags=True,
    ),
    "stream": Command(
        "Sharpen raw RGB24 frames from standard input to standard output, for ffmpeg pipes.",
        {"model": _MODEL_HELP, "size": "the frame size of the input stream, WIDTHxHEIGHT", **_TILING},
        "ffmpeg -i in.mp4 -f rawvideo -pix_fmt rgb24 - | kdjax stream --size=1280x720 "
        "| ffmpeg -f rawvideo -pix_fmt rgb24 -s 1280x720 -r 30 -i - out.mp4",
        _stream,
        {"model": "videocall"},
    ),
    "models": Command(
        "List the released models: task, scale, parameters, speed and PSNR.", {}, "kdjax models", _models
    ),
    "evaluate": Command(
        "Evaluate --model on its run's validation set, or on the folders --eval_dir (PSNR/SSIM).",
        {
            "model": _MODEL_HELP,
            "which": "checkpoint of a workdir: best (highest validation PSNR) or latest",
            "eval_dir": "an image folder to evaluate on instead of the validation set; repeat for more",
        },
        "kdjax evaluate --model=sharpen_x2 --eval_dir=../shared/data/Set5",
        _evaluate,
    ),
    "train": Command(
        "Train the run in --config (teacher or student, with or without a teacher) or a suite, in --workdir.",
        {
            "config": "a config file with an optional variant (configs/teacher.py:light) or a shipped config's "
            "name (teacher:light); --config.KEY=VALUE overrides one value, e.g. --config.num_steps=1000",
            "workdir": "the run folder (checkpoints, logs, results); an existing one is resumed",
            "allow_config_change": "resume a workdir with a config that differs from the one it started with",
        },
        "kdjax train --config=configs/quickstart.py --workdir=runs/quickstart",
        _train,
    ),
    "export": Command(
        "Write --model as a model folder (config.json + params.msgpack) or one StableHLO/ONNX file.",
        {
            "model": _MODEL_HELP,
            "output": "the model folder or file to write",
            "format": "folder (what pretrained/ holds), stablehlo (jax.export) or onnx (needs the export extra)",
            "which": "checkpoint of a workdir: best or latest",
            "overwrite": "replace an existing output",
        },
        "kdjax export --model=sharpen_x2 --format=stablehlo --output=sharpen_x2.stablehlo",
        _export,
    ),
    "import-weights": Command(
        "Convert a published model's PyTorch checkpoint into a model folder (no PyTorch needed).",
        {
            "arch": "the checkpoint's architecture: rlfn, rlfn_s or bsrn",
            "input": "the PyTorch checkpoint (.pth)",
            "output": "the model folder to write",
            "overwrite": "replace an existing output",
        },
        "kdjax import-weights --arch=rlfn --input=../shared/weights/rlfn_x2.pth --output=teachers/rlfn_x2",
        _import_weights,
    ),
}
assert tuple(COMMANDS) == COMMAND_NAMES


def _default_text(command: Command, name: str) -> str:
    default = command.defaults.get(name, flags.FLAGS[name].default)
    if default is None or default == []:
        return ""
    if isinstance(default, bool):
        default = str(default).lower()
    return f" (default: {default})"


def overview() -> str:
    """What ``kdjax`` and ``kdjax --help`` print: every command in one line."""
    width = max(map(len, COMMANDS))
    lines = [
        "kdjax: sharpen and upscale images, videos and live streams with small JAX models, and train them.",
        "",
        "usage: kdjax <command> [flags]     (kdjax <command> --help lists its flags)",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {command.summary}" for name, command in COMMANDS.items()),
        "",
        "Errors are one sentence (--debug shows the traceback). JAX picks the device; JAX_PLATFORMS=cpu, cuda or tpu",
        "forces one (see the README's Accelerators section).",
    ]
    return "\n".join(lines)


def command_help(name: str) -> str:
    """What ``kdjax <command> --help`` prints: the command's flags, their defaults and an example."""
    command = COMMANDS[name]
    entries = {**command.flags, "debug": COMMON_FLAGS["debug"]}
    labels = {flag: f"--{flag}" for flag in entries}
    width = max(map(len, labels.values()))
    lines = [f"usage: kdjax {name} [flags]", "", command.summary, "", "flags:"]
    lines += [f"  {labels[flag].ljust(width)}  {text}{_default_text(command, flag)}" for flag, text in entries.items()]
    lines += ["", "example:", f"  {command.example}"]
    return "\n".join(lines)


def _help_request(args: list[str]) -> str | None:
    """The help that ``args`` (the arguments after the program) ask for, if they ask for help."""
    if not args or args[0] in ("-h", "--help", "help"):
        if len(args) > 1 and args[1] in COMMANDS:
            return command_help(args[1])
        return overview()
    asks = any(arg in ("-h", "--help") for arg in args)
    modes = [arg.split("=", 1)[1] for arg in args if arg.startswith("--mode=")]
    name = args[0] if args[0] in COMMANDS else next((mode for mode in modes if mode in COMMANDS), None)
    if asks:
        return command_help(name) if name else overview()
    return None


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
    if command is None and len(argv) > 1 and not argv[1].startswith("-"):
        close = difflib.get_close_matches(argv[1], COMMANDS, n=1)
        _exit_usage(f"{argv[1]} is not a kdjax command{f' (did you mean {close[0]}?)' if close else ''}")
    try:
        rest = flags.FLAGS(_resolve_config_argument(argv))
    except UsageError as error:
        _exit_usage(str(error), command)
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
            "the config file",
            command,
        )
    except Exception as error:  # pylint: disable=broad-except  # absl and config loading raise many kinds
        _exit_usage(_one_line(error), command)
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


def _exit_usage(message: str, command: str | None = None) -> None:
    sys.exit(f"error: {message.rstrip('.')}; see kdjax {f'{command} ' if command else ''}--help.")


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    logging.debug("Ignored at exit: %r in %r.", unraisable.exc_value, unraisable.object)


def _check_flags(name: str, extra_args: list[str]) -> None:
    """Refuses flags of other commands; arguments after the flags are a batch's further inputs."""
    command = COMMANDS[name]
    allowed = {*command.flags, *COMMON_FLAGS}
    if "model" in allowed:
        allowed.add(MODEL_SYNONYM)
    for flag in ("config", *(flag for other in COMMANDS.values() for flag in other.flags)):
        if flags.FLAGS[flag].present and flag not in allowed:
            raise UsageError(f"--{flag} is not a flag of kdjax {name}")
    if extra_args and not command.inputs_after_flags:
        raise UsageError(f"unexpected arguments: {' '.join(extra_args)}")
    if extra_args:
        flags.FLAGS.input = [*_INPUT.value, *extra_args]


def _run(argv: list[str]) -> None:
    if flags.FLAGS.mode is None:
        if _CONFIG.value is None:
            _exit_usage(f"name a command, one of {', '.join(COMMANDS)}")
        flags.FLAGS.mode = "train"  # `python launch.py --config=... --workdir=...`, as before commands existed
    name = flags.FLAGS.mode
    logging.set_verbosity(logging.INFO)
    if not _DEBUG.value:
        # Orbax's abandoned reads of a damaged checkpoint (which the command falls back from)
        # are finalized at exit and would print tracebacks although the command succeeded.
        sys.unraisablehook = _log_unraisable
    logging.get_absl_handler().addFilter(_QuietLibraries())
    try:
        _check_flags(name, argv[1:])
        COMMANDS[name].run()
    except UsageError as error:
        if _DEBUG.value:
            raise
        _exit_usage(str(error), name)
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NonFiniteLossError, BackendError) as error:
        if _DEBUG.value:
            raise
        # User-facing errors are single sentences; a traceback would bury them.
        sys.exit(f"error: {' '.join(str(error).split())}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kdjax`` command (and of ``launch.py``).

    SIGINT and SIGTERM end any command with one sentence and exit code 130 or 143, after the
    unfinished outputs of this process are removed (`kdjax.outputs`).
    """
    argv = list(argv or sys.argv)
    help_text = _help_request(argv[1:])
    if help_text is not None:
        print(help_text)
        sys.exit(0)
    outputs.install_signal_handlers()
    try:
        app.run(_run, argv=argv, flags_parser=_parse_flags)
    except KeyboardInterrupt as error:
        outputs.remove_temporaries()
        name = getattr(error, "signal_name", "SIGINT")
        print(f"\nerror: Interrupted by {name}; unfinished outputs were removed and finished ones kept.", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 130))
