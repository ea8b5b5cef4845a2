"""Suites of runs: several trainings in one workdir and the table that compares them.

A suite config has ``runs`` (name -> run config) and ``order``. Runs execute in
that order, each in ``WORKDIR/<name>``; a run whose ``teacher.workdir`` is
``"@<name>"`` distils from the earlier run of that name. The quickstart and the
ablations are suites. Finished runs are not retrained (each run resumes from
its checkpoints), so an interrupted suite picks up where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_collections
from absl import logging

from kdjax import train
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


def results_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows produced by ``run_suite``."""
    header = "| model | PSNR Y (dB) | SSIM Y | PSNR RGB (dB) | SSIM RGB | params | GFLOPs / 1080p frame |"
    lines = [header, "|" + "---|" * 7]
    for row in rows:
        params = f"{row['params'] / 1e6:.3f} M" if row.get("params") is not None else "-"
        gflops = f"{row['gflops_1080p']:.1f}" if row.get("gflops_1080p") is not None else "-"
        lines.append(
            f"| {row['label']} | {row['psnr_y']:.2f} | {row['ssim_y']:.4f} | "
            f"{row['psnr_rgb']:.2f} | {row['ssim_rgb']:.4f} | {params} | {gflops} |"
        )
    return "\n".join(lines) + "\n"


def run_suite(config: ml_collections.ConfigDict, workdir: str | Path) -> list[dict[str, Any]]:
    """Trains every run of the suite, then writes ``results.json`` and ``results.md``."""
    workdir = Path(workdir)
    missing = [name for name in config.order if name not in config.runs]
    if missing:
        raise ValueError(
            f"The suite's order names {missing}, which are not in its runs {sorted(config.runs)}."
        )
    rows: list[dict[str, Any]] = []
    done: set[str] = set()
    for name in config.order:
        run = ml_collections.ConfigDict(config.runs[name].to_dict())
        _resolve_teacher(run, workdir, done)
        logging.info("Suite %s: run %r (%s).", workdir, name, run.model.name)
        report = train.train_and_evaluate(run, workdir / name)
        done.add(name)
        if not rows:
            rows.append({"label": "input (degraded)", "run": None, **report["results"]["input"]})
        label = config.labels.get(name, name) if "labels" in config else name
        rows.append(
            {"label": label, "run": name, **report["results"]["model"], **_model_cost(run.model)}
        )
    (workdir / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = results_table(rows)
    (workdir / "results.md").write_text(table)
    print(table)
    return rows
