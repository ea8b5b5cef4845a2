"""Suites of runs: several trainings in one workdir and the table that compares them.

A suite config has ``runs`` (name -> run config) and ``order``. Runs execute in
that order, each in ``WORKDIR/<name>``; a run whose ``teacher.workdir`` is
``"@<name>"`` distils from the earlier run of that name. The quickstart and the
ablations are suites. Finished runs are not retrained (each run resumes from
its checkpoints), so an interrupted suite picks up where it stopped.

Optional keys: ``labels`` (run name -> table label), ``eval_dirs`` (image
folders every trained model is also evaluated on, e.g. Set5 and Set14, with
each run's evaluation degradation; the table then shows those sets instead of
the runs' validation set) and ``timing`` (``runs``: names of runs whose
milliseconds per frame are measured on this machine, ``height``, ``width``,
``repeats``).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from kdjax import distill, evaluation, serving, train
from kdjax.models import build_model, count_params, gflops_per_frame
from kdjax.models.summary import abstract_params

SIBLING_PREFIX = "@"


def is_suite(config: ml_collections.ConfigDict) -> bool:
    return "runs" in config


def _resolve_teacher(run: ml_collections.ConfigDict, workdir: Path, done: set[str]) -> None:
    teacher_dir = run.teacher.workdir
    if teacher_dir.startswith(SIBLING_PREFIX):
        sibling = teacher_dir[len(SIBLING_PREFIX):]
        if sibling not in done:
            raise ValueError(
                f"teacher.workdir={teacher_dir!r} names run {sibling!r}, which does not run "
                f"before it; list {sibling!r} earlier in the suite's `order`."
            )
        run.teacher.workdir = str(workdir / sibling)


def _model_cost(model_config: ml_collections.ConfigDict) -> dict[str, float]:
    model = build_model(model_config)
    return {
        "params": count_params(abstract_params(model)),
        "gflops_1080p": gflops_per_frame(model),
    }


def ms_per_frame(workdir: Path, height: int, width: int, repeats: int, max_seconds: float = 60.0) -> float:
    """Median milliseconds to sharpen one random ``height`` x ``width`` frame (compiled, warm).

    Times ``repeats`` frames, or fewer (at least one) once ``max_seconds`` have
    passed: a Swin teacher takes minutes per full-HD frame on a CPU.
    """
    sharpener = serving.load(workdir)
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    sharpener.sharpen(frame)  # compile and warm up
    times = []
    while len(times) < repeats and sum(times) < max_seconds:
        start = time.perf_counter()
        sharpener.sharpen(frame)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _set_names(rows: list[dict[str, Any]]) -> list[str]:
    return list(rows[0].get("sets", {})) if rows else []


def results_table(rows: list[dict[str, Any]], timing: str | None = None) -> str:
    """A Markdown table of the rows produced by ``run_suite``.

    Args:
      rows: one row per model (and one for the degraded input).
      timing: the column title of ``ms_per_frame`` (e.g. its frame size and device), or
        None when nothing was timed.
    """
    sets = _set_names(rows)
    # With named evaluation sets those are the table; otherwise the runs' own validation set.
    header = ["model"] if sets else ["model", "PSNR Y (dB)", "SSIM Y", "PSNR RGB (dB)", "SSIM RGB"]
    header += [f"{name} {metric}" for name in sets for metric in ("PSNR Y (dB)", "SSIM Y")]
    header += ["params", "GFLOPs / 1080p frame"] + ([timing] if timing else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["label"]]
        if not sets:
            cells += [f"{row['psnr_y']:.2f}", f"{row['ssim_y']:.4f}", f"{row['psnr_rgb']:.2f}", f"{row['ssim_rgb']:.4f}"]
        for name in sets:
            cells += [f"{row['sets'][name]['psnr_y']:.2f}", f"{row['sets'][name]['ssim_y']:.4f}"]
        cells.append(f"{row['params'] / 1e6:.3f} M" if row.get("params") is not None else "-")
        cells.append(f"{row['gflops_1080p']:.1f}" if row.get("gflops_1080p") is not None else "-")
        if timing:
            cells.append(f"{row['ms_per_frame']:.1f}" if row.get("ms_per_frame") is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_suite(config: ml_collections.ConfigDict, workdir: str | Path) -> list[dict[str, Any]]:
    """Trains every run of the suite, then writes ``results.json`` and ``results.md``."""
    workdir = Path(workdir)
    missing = [name for name in config.order if name not in config.runs]
    timing = config.get("timing")
    if timing is not None:
        missing += [name for name in timing.runs if name not in config.order]
    if missing:
        raise ValueError(
            f"The suite names runs {missing} that are not among the runs it trains, {list(config.order)}."
        )
    eval_dirs = tuple(config.get("eval_dirs", ()))
    rows: list[dict[str, Any]] = []
    done: set[str] = set()
    label_cache = distill.TeacherLabelCache()  # students of one teacher share its labelled pool
    for name in config.order:
        run = ml_collections.ConfigDict(config.runs[name].to_dict())
        _resolve_teacher(run, workdir, done)
        logging.info("Suite %s: run %r (%s).", workdir, name, run.model.name)
        report = train.train_and_evaluate(run, workdir / name, label_cache=label_cache)
        done.add(name)
        # The final model, as in the run's own report (not the checkpoint that scored best).
        extra = evaluation.evaluate_workdir(workdir / name, which="latest", eval_dirs=eval_dirs) if eval_dirs else {}
        if not rows:
            rows.append(
                {
                    "label": "input (degraded)",
                    "run": None,
                    **report["results"]["input"],
                    "sets": {set_name: result["input"] for set_name, result in extra.items()},
                }
            )
        label = config.labels.get(name, name) if "labels" in config else name
        row = {
            "label": label,
            "run": name,
            **report["results"]["model"],
            "sets": {set_name: result["model"] for set_name, result in extra.items()},
            **_model_cost(run.model),
        }
        if timing is not None and name in timing.runs:
            row["ms_per_frame"] = ms_per_frame(workdir / name, timing.height, timing.width, timing.repeats)
        rows.append(row)
    (workdir / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    timing_title = (
        f"ms / {timing.width}x{timing.height} frame ({jax.devices()[0].device_kind})" if timing is not None else None
    )
    table = results_table(rows, timing_title)
    (workdir / "results.md").write_text(table)
    print(table)
    return rows
