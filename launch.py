r"""kdjax command line: train, evaluate, or sharpen images.

Modes:
  train     Train the run in --config (a teacher, a student with or without a
            teacher), or every run of a suite config (quickstart, ablations), in
            --workdir. Resumes automatically from --workdir's checkpoints.
  evaluate  Evaluate a trained --workdir on its validation set, or on the image
            folders given by --eval_dir, and print PSNR/SSIM.
  sharpen   Sharpen --input (an image or a folder) into --output with the model
            trained in --workdir.
  export    Write the --which checkpoint's parameters of --workdir to the folder
            --output (config.json + params.msgpack), which every mode and
            kdjax.load read like a workdir: how pretrained/ is made.

Examples:
  python launch.py --config=configs/quickstart.py --workdir=runs/quickstart
  python launch.py --config=configs/teacher.py:light --workdir=runs/teacher \
      --config.num_steps=20000
  python launch.py --mode=evaluate --workdir=runs/teacher --eval_dir=../shared/data/Set5
  python launch.py --mode=sharpen --workdir=runs/quickstart/student_kd \
      --input=photo.png --output=photo_sharp.png
  python launch.py --mode=sharpen --workdir=pretrained/realtime_kd_x2 \
      --input=photo.png --output=photo_sharp.png
  python launch.py --mode=export --workdir=runs/bench/kd_both --which=latest \
      --output=pretrained/realtime_kd_x2
"""

from __future__ import annotations

import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with a variant: configs/teacher.py:light.", lock_config=True
)
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate", "sharpen", "export"], "What to do.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, results.", required=True)
_WHICH = flags.DEFINE_enum(
    "which", "best", ["best", "latest"], "Checkpoint to evaluate, sharpen with or export."
)
_EVAL_DIR = flags.DEFINE_multi_string(
    "eval_dir", [], "evaluate: image folder(s) to evaluate on instead of the run's validation set."
)
_INPUT = flags.DEFINE_string("input", None, "sharpen: an image file or a folder of images.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "sharpen: output file (for a file) or folder; export: the folder to write."
)
_TILE = flags.DEFINE_string(
    "tile", "auto", "sharpen: tile size in pixels, 0 for whole images, or 'auto' (whole images when they fit in memory)."
)
_OVERLAP = flags.DEFINE_integer("overlap", 32, "sharpen: overlap between tiles in pixels.")
_SELF_ENSEMBLE = flags.DEFINE_bool("self_ensemble", False, "sharpen: average the 8 flips/rotations (8x slower).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "sharpen: replace existing output files (inputs never).")


def _train() -> None:
    from kdjax import parallel, suite, train

    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--mode=train needs --config, e.g. --config=configs/quickstart.py.")
    if suite.is_suite(config):
        suite.run_suite(config, _WORKDIR.value)
        return
    parallel.initialize_distributed(config)
    train.train_and_evaluate(config, _WORKDIR.value)


def _evaluate() -> None:
    from kdjax import evaluation

    evaluation.print_workdir_results(
        evaluation.evaluate_workdir(_WORKDIR.value, which=_WHICH.value, eval_dirs=_EVAL_DIR.value)
    )


def _sharpen() -> None:
    import kdjax
    from kdjax import inference

    if not _INPUT.value or not _OUTPUT.value:
        raise app.UsageError("--mode=sharpen needs --input and --output.")
    if _TILE.value != "auto" and not _TILE.value.isdigit():
        raise app.UsageError(f"--tile={_TILE.value} must be a number of pixels, 0 or 'auto'.")
    tile = _TILE.value if _TILE.value == "auto" else (int(_TILE.value) or None)
    sharpener = kdjax.load(
        _WORKDIR.value,
        which=_WHICH.value,
        tile=tile,
        overlap=_OVERLAP.value,
        self_ensemble=_SELF_ENSEMBLE.value,
    )
    inference.sharpen_paths(sharpener, _INPUT.value, _OUTPUT.value, overwrite=_OVERWRITE.value)


def _export() -> None:
    from kdjax import checkpoints

    if not _OUTPUT.value:
        raise app.UsageError("--mode=export needs --output, the folder to write (e.g. pretrained/realtime_x2).")
    output = checkpoints.export_params(_WORKDIR.value, _OUTPUT.value, which=_WHICH.value)
    print(f"Exported the {_WHICH.value} checkpoint of {_WORKDIR.value} to {output}.")


class _QuietLibraries(std_logging.Filter):
    """Keeps Orbax's and Grain's per-save INFO chatter out of the training log.

    Also Orbax's warning that a checkpoint has no metrics (checkpoints between
    evaluations have none by design, and the best-checkpoint policy ignores them)
    and its warnings that a manager opened to read weights is read-only.
    """

    NOISY = ("/orbax/", "/grain/")
    EXPECTED_WARNINGS = ("did not provide metrics", "read_only=True", "is read only")

    def filter(self, record: std_logging.LogRecord) -> bool:
        if not any(part in record.pathname for part in self.NOISY):
            return True
        message = record.getMessage()
        return record.levelno >= std_logging.WARNING and not any(w in message for w in self.EXPECTED_WARNINGS)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}.")
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_QuietLibraries())
    try:
        {"train": _train, "evaluate": _evaluate, "sharpen": _sharpen, "export": _export}[_MODE.value]()
    except (ValueError, FileNotFoundError, PermissionError) as error:
        # User-facing errors are single sentences; a traceback would bury them.
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    app.run(main)
