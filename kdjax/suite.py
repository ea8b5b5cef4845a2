"""Suites of runs: several trainings in one workdir and the table that compares them.

A suite config has ``runs`` (name -> run config) and ``order``. Runs execute in
that order, each in ``WORKDIR/<name>``; a run whose ``teacher.workdir`` is
``"@<name>"`` distils from the earlier run of that name. The quickstart and the
ablations are suites. Finished runs are not retrained (each run resumes from
its checkpoints), so an interrupted suite picks up where it stopped.

Optional keys: ``labels`` (run name -> table label), ``eval_dirs`` (image
folders every trained model is also evaluated on, e.g. Set5 and Set14, with
each run's evaluation degradation; the table then shows those sets instead of
the runs' validation set), ``timing`` (``runs``: names of runs whose
milliseconds per frame are measured on this machine, ``height``, ``width``,
``repeats``) and ``seeds``: every run is trained once per seed, in
``WORKDIR/<name>/seed_<s>`` (a sibling teacher is its first seed's run), and the
table shows the mean and standard deviation over the seeds (sample std).
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

from kdjax import distill, evaluation, serving, train, weights
from kdjax.models import build_model, count_params, gflops_per_frame, inference_form
from kdjax.models.summary import FRAME_HEIGHT, FRAME_WIDTH

SIBLING_PREFIX = "@"


def is_suite(config: ml_collections.ConfigDict) -> bool:
    return "runs" in config


def _resolve_teacher(run: ml_collections.ConfigDict, workdirs: dict[str, Path]) -> None:
    teacher_dir = run.teacher.workdir
    if teacher_dir.startswith(SIBLING_PREFIX):
        sibling = teacher_dir[len(SIBLING_PREFIX):]
        if sibling not in workdirs:
            raise ValueError(
                f"teacher.workdir={teacher_dir!r} names run {sibling!r}, which does not run "
                f"before it; list {sibling!r} earlier in the suite's `order`."
            )
        run.teacher.workdir = str(workdirs[sibling])


def _model_cost(workdir: Path) -> dict[str, float]:
    """Parameters and GFLOPs per 1920x1080 output of the trained model, in the form it is
    deployed (a re-parameterisable student folded)."""
    config, params = weights.restore_params(workdir, which="latest")
    model_config, params = inference_form(config.model, params)
    model = build_model(model_config)
    height, width = FRAME_HEIGHT // model.scale, FRAME_WIDTH // model.scale  # a 1080p output
    return {"params": count_params(params), "gflops_1080p": gflops_per_frame(model, params, height=height, width=width)}


def _mean_and_std(results: list[dict[str, float]]) -> dict[str, float]:
    """Metric means over seeds, plus ``<metric>_std`` (0 for a single seed)."""
    summary = {}
    for key in results[0]:
        values = [result[key] for result in results]
        summary[key] = statistics.fmean(values)
        summary[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary


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


def _metric(values: dict[str, float], key: str, digits: int, seeds: int) -> str:
    """``values[key]``, with `` ± `` its standard deviation over several seeds."""
    text = f"{values[key]:.{digits}f}"
    if seeds > 1:
        text += f" ± {values[f'{key}_std']:.{digits}f}"
    return text


def results_table(rows: list[dict[str, Any]], timing: str | None = None) -> str:
    """A Markdown table of the rows produced by ``run_suite`` (mean ± std over seeds).

    Args:
      rows: one row per model (and one for the degraded input).
      timing: the column title of ``ms_per_frame`` (e.g. its frame size and device), or
        None when nothing was timed.
    """
    sets = _set_names(rows)
    # With named evaluation sets those are the table; otherwise the runs' own validation set.
    header = ["model", "seeds"] if sets else ["model", "seeds", "PSNR Y (dB)", "SSIM Y", "PSNR RGB (dB)", "SSIM RGB"]
    header += [f"{name} {metric}" for name in sets for metric in ("PSNR Y (dB)", "SSIM Y")]
    header += ["params", "GFLOPs / 1080p output"] + ([timing] if timing else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        seeds = row.get("seeds", 1)  # the input row has none
        cells = [row["label"], str(seeds) if row.get("run") else "-"]
        if not sets:
            cells += [_metric(row, key, digits, seeds) for key, digits in
                      (("psnr_y", 2), ("ssim_y", 4), ("psnr_rgb", 2), ("ssim_rgb", 4))]
        for name in sets:
            cells += [_metric(row["sets"][name], "psnr_y", 2, seeds), _metric(row["sets"][name], "ssim_y", 4, seeds)]
        cells.append(f"{row['params'] / 1e6:.3f} M" if row.get("params") is not None else "-")
        cells.append(f"{row['gflops_1080p']:.1f}" if row.get("gflops_1080p") is not None else "-")
        if timing:
            cells.append(f"{row['ms_per_frame']:.1f}" if row.get("ms_per_frame") is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_suite(config: ml_collections.ConfigDict, workdir: str | Path) -> list[dict[str, Any]]:
    """Trains every run of the suite (once per seed), then writes ``results.json`` and ``results.md``."""
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
    seeds = tuple(config.get("seeds", ()))
    rows: list[dict[str, Any]] = []
    first_workdirs: dict[str, Path] = {}
    label_cache = distill.TeacherLabelCache()  # students of one teacher share its labelled pool
    for name in config.order:
        reports, extras, run_dirs = [], [], []
        for seed in seeds or (None,):
            run = ml_collections.ConfigDict(config.runs[name].to_dict())
            _resolve_teacher(run, first_workdirs)
            run_dir = workdir / name if seed is None else workdir / name / f"seed_{seed}"
            if seed is not None:
                run.seed = seed
            logging.info("Suite %s: run %r (%s), seed %d.", workdir, name, run.model.name, run.seed)
            reports.append(train.train_and_evaluate(run, run_dir, label_cache=label_cache))
            # The final model, as in the run's own report (not the checkpoint that scored best).
            extras.append(evaluation.evaluate_workdir(run_dir, which="latest", eval_dirs=eval_dirs) if eval_dirs else {})
            run_dirs.append(run_dir)
        first_workdirs[name] = run_dirs[0]
        if not rows:
            rows.append(
                {
                    "label": "input (degraded)",
                    "run": None,
                    **reports[0]["results"]["input"],
                    "sets": {set_name: result["input"] for set_name, result in extras[0].items()},
                }
            )
        label = config.labels.get(name, name) if "labels" in config else name
        row = {
            "label": label,
            "run": name,
            "seeds": len(run_dirs),
            **_mean_and_std([report["results"]["model"] for report in reports]),
            "sets": {
                set_name: _mean_and_std([extra[set_name]["model"] for extra in extras]) for set_name in extras[0]
            },
            "per_seed": [{"workdir": str(run_dir), **report["results"]["model"]} for run_dir, report in zip(run_dirs, reports)],
            **_model_cost(run_dirs[0]),
        }
        if timing is not None and name in timing.runs:
            row["ms_per_frame"] = ms_per_frame(run_dirs[0], timing.height, timing.width, timing.repeats)
        rows.append(row)
    (workdir / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    timing_title = (
        f"ms / {timing.width}x{timing.height} frame ({jax.devices()[0].device_kind})" if timing is not None else None
    )
    table = results_table(rows, timing_title)
    (workdir / "results.md").write_text(table)
    print(table)
    return rows
