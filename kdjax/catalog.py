"""The released models as a catalogue: names, aliases, task, scale, parameters and measured numbers.

Everything is read from files, never restated here:

* each model folder under ``pretrained/`` (shipped as ``kdjax.pretrained``): ``config.json``
  gives the task (``data.degradation.task``: ``sharpen`` keeps the size, ``upscale`` multiplies
  it by ``data.degradation.scale``) and ``export.json`` the parameter count and the training
  run the weights came from;
* ``pretrained/aliases.json``: task names for the recommended models (``upscale_x2``,
  ``sharpen_x2``, ``videocall``), usable wherever a released model's name is;
* ``benchmarks/results/*.json`` (shipped as ``kdjax.benchmark_results``): the row whose ``run``
  is the model's training run (or its name) gives ms per 1080p frame and PSNR-Y per test set,
  the same rows ``tests/test_pretrained.py`` reproduces. A number no row holds is shown as '-'.

Imports neither JAX nor Flax, so ``kdjax models`` and resolving a name start at once.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path

RELEASED_PACKAGE = "kdjax.pretrained"
RESULTS_PACKAGE = "kdjax.benchmark_results"
ALIASES_FILE = "aliases.json"
# Files every model folder holds (see kdjax.weights).
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.msgpack"
EXPORT_FILE = "export.json"
# The test sets `kdjax models` quotes PSNR-Y on.
QUOTED_SETS = ("Set5", "Urban100")


@dataclasses.dataclass(frozen=True)
class ReleasedModel:
    """One released model as `kdjax models` lists it.

    Attributes:
      name: its folder's name under ``pretrained/``.
      aliases: the task names that point to it (``pretrained/aliases.json``).
      task: "sharpen" (output the size of the input) or "upscale".
      scale: output size / input size (1 to sharpen).
      params: number of parameters, from ``export.json``.
      ms_per_frame: milliseconds per 1080p output frame as measured by a benchmark, or None.
      psnr_y: PSNR on Y (dB) per test set a benchmark measured it on.
      results_file: the benchmark results file the numbers come from, or None.
    """

    name: str
    aliases: tuple[str, ...]
    task: str
    scale: int
    params: int
    ms_per_frame: float | None
    psnr_y: dict[str, float]
    results_file: str | None


def released_models() -> dict[str, Path]:
    """The released models shipped with the package, name -> folder."""
    root = resources.files(RELEASED_PACKAGE)
    return {
        entry.name: Path(str(entry))
        for entry in sorted(root.iterdir(), key=lambda e: e.name)
        if entry.is_dir() and (entry / PARAMS_FILE).is_file()
    }


def aliases() -> dict[str, str]:
    """Alias -> released model name, from ``pretrained/aliases.json`` (only those that exist)."""
    path = resources.files(RELEASED_PACKAGE) / ALIASES_FILE
    if not path.is_file():
        return {}
    released = released_models()
    return {alias: name for alias, name in json.loads(path.read_text()).items() if name in released}


def canonical_name(name: str) -> str:
    """The released model an alias names; any other name unchanged."""
    return aliases().get(name, name)


def _results_rows() -> list[tuple[str, dict]]:
    """(file name, row) for every row of every benchmark results file that names its run."""
    rows = []
    for entry in sorted(resources.files(RESULTS_PACKAGE).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            content = json.loads(entry.read_text())
            rows += [(entry.name, row) for row in content if isinstance(row, dict) and row.get("run")]
    return rows


def benchmark_rows(name: str, run: str) -> list[tuple[str, dict]]:
    """The benchmark rows of a model: those whose ``run`` is its training run or its name."""
    return [(file, row) for file, row in _results_rows() if row["run"] in (run, name)]


def describe(name: str, folder: Path, alias_names: tuple[str, ...] = ()) -> ReleasedModel:
    """A released model's entry, from its folder and its benchmark row (the first, by file name)."""
    config = json.loads((folder / CONFIG_FILE).read_text())
    export = json.loads((folder / EXPORT_FILE).read_text())
    degradation = config["data"]["degradation"]
    task = degradation["task"]
    rows = benchmark_rows(name, Path(export["workdir"]).name)
    file, row = rows[0] if rows else (None, {})
    sets = row.get("sets", {})
    return ReleasedModel(
        name=name,
        aliases=alias_names,
        task=task,
        scale=int(degradation["scale"]) if task == "upscale" else 1,
        params=int(export["params"]),
        ms_per_frame=row.get("ms_per_frame"),
        psnr_y={set_name: sets[set_name]["psnr_y"] for set_name in sets if "psnr_y" in sets[set_name]},
        results_file=file,
    )


def catalogue() -> list[ReleasedModel]:
    """Every released model, upscalers first, then by name."""
    by_target: dict[str, list[str]] = {}
    for alias, name in aliases().items():
        by_target.setdefault(name, []).append(alias)
    models = [describe(name, folder, tuple(by_target.get(name, ()))) for name, folder in released_models().items()]
    return sorted(models, key=lambda m: (m.task != "upscale", m.name))


def format_table(models: list[ReleasedModel]) -> str:
    """The models as an aligned text table, '-' for numbers no benchmark measured."""
    header = ("name", "alias", "task", "scale", "params", "ms/1080p", *(f"{s} PSNR-Y" for s in QUOTED_SETS))
    lines = [header]
    for model in models:
        lines.append((
            model.name,
            ", ".join(model.aliases) or "-",
            model.task,
            f"x{model.scale}",
            f"{model.params:,}",
            "-" if model.ms_per_frame is None else f"{model.ms_per_frame:,.0f}",
            *("-" if s not in model.psnr_y else f"{model.psnr_y[s]:.2f}" for s in QUOTED_SETS),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    # Text columns left-aligned, numbers right-aligned.
    return "\n".join(
        "  ".join(cell.ljust(width) if i < 4 else cell.rjust(width) for i, (cell, width) in enumerate(zip(line, widths)))
        .rstrip()
        for line in lines
    )
