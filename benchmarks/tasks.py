"""Models under a realistic task's evaluation settings (kdjax.tasks): the rows BENCHMARKS.md quotes.

Each model (a released name, a model folder or a workdir) is evaluated on each set at each
named strength of ``--task``, whatever degradation it was trained for, so a clean-trained
model, its fine-tuned twin and the students compare on the same inputs; the ``bicubic`` row is
the degraded input upscaled with MATLAB bicubic (the sharpen task: the input itself). PSNR/SSIM
on Y, border crop = scale. Rows are merged into ``--output`` by model (re-running a model
replaces its row), so models can be added one at a time.

Usage (from the repository root):
  python benchmarks/tasks.py --task stream_x2 --models rep_kd_x2 runs/teachers/rlfn_x2 \
      --sets Set5 Set14 Urban100 --output benchmarks/results/stream_x2.json
  python benchmarks/tasks.py --task stream_x2 --output benchmarks/results/stream_x2.json --table
(``--table`` prints the file's Markdown table, which BENCHMARKS.md quotes, and evaluates nothing.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kdjax import evaluation, tasks, weights
from kdjax.configs import common
from kdjax.models import count_params, inference_form

BICUBIC = "bicubic"


def evaluate(model: str, task: str, sets: list[str]) -> tuple[dict, dict]:
    """``(row, bicubic row)`` of ``model``: {strength: {set: metrics}} each."""
    results, inputs = {}, {}
    for strength in tasks.strengths(task):
        per_set = evaluation.evaluate_workdir(
            model, eval_dirs=[f"{common.SHARED_DATA}/{name}" for name in sets],
            degradation=tasks.degradation(f"{task}:{strength}"),
        )
        results[strength] = {name: rows["model"] for name, rows in per_set.items()}
        inputs[strength] = {name: rows["input"] for name, rows in per_set.items()}
    return results, inputs


def table(document: dict) -> str:
    """The results as Markdown: one row per model, PSNR-Y / SSIM-Y per strength and set."""
    first = document["models"][0]["results"]
    columns = [(strength, name) for strength in document["strengths"] for name in first[strength]]
    lines = [
        "| model | params | " + " | ".join(f"{name} @ {strength}" for strength, name in columns) + " |",
        "|---|---:|" + "---|" * len(columns),
    ]
    for row in sorted(document["models"], key=lambda r: r["params"]):
        cells = [
            f"{row['results'][strength][name]['psnr_y']:.2f} / {row['results'][strength][name]['ssim_y']:.4f}"
            if name in row["results"].get(strength, {}) else "-"
            for strength, name in columns
        ]
        lines.append(f"| {row['name']} | {row['params']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=tasks.TASK_NAMES)
    parser.add_argument("--models", nargs="+", default=[])
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14", "Urban100"])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--table", action="store_true", help="print the output file's table and stop")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.output.read_text())))
        return
    previous = json.loads(args.output.read_text())["models"] if args.output.is_file() else []
    rows = {row["name"]: row for row in previous}
    for model in args.models:
        config, params = weights.restore_params(model)
        model_config, params = inference_form(config.model, params)
        results, inputs = evaluate(model, args.task, args.sets)
        rows[Path(model).name] = {
            "name": Path(model).name, "model": model_config.name, "params": count_params(params), "results": results
        }
        rows[BICUBIC] = {"name": BICUBIC, "model": BICUBIC, "params": 0, "results": inputs}
        # A mapping, not a list of rows with a "run": these are not the models' own benchmark rows.
        document = {"task": args.task, "strengths": list(tasks.strengths(args.task)), "models": list(rows.values())}
        args.output.write_text(json.dumps(document, indent=2) + "\n")
        for strength, per_set in results.items():
            print(
                f"{Path(model).name} @ {strength}: "
                + ", ".join(f"{name} {m['psnr_y']:.2f} (bicubic {inputs[strength][name]['psnr_y']:.2f})"
                            for name, m in per_set.items())
            )


if __name__ == "__main__":
    main()
