"""Released (or any) models on Set5/Set14 and on this CPU: the rows BENCHMARKS.md quotes.

For each model (a released name, a model folder or a workdir): PSNR/SSIM on Y of Set5 and
Set14 (border crop = scale, the model's own evaluation degradation), parameters, GFLOPs and
GMACs per 1920x1080 *output* frame (XLA cost analysis of the deployed form, e.g. a
re-parameterisable student folded; a multiply-add counts as 2 flops) and milliseconds per
1080p output frame through `kdjax.load` (the whole frame at once, uint8 in and out; median of
`--runs` runs after a warm-up). Writes the rows as JSON (the reproduce test reads them).

Usage (from the repository root, on a quiet machine):
  python benchmarks/released.py --models rep_kd_x2 --output benchmarks/results/students_x2.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

import kdjax
from kdjax import evaluation, weights
from kdjax.configs import common
from kdjax.models import build_model, count_params, gflops_per_frame, inference_form
from kdjax.models.summary import FRAME_HEIGHT, FRAME_WIDTH


def ms_per_output_frame(model: str, runs: int) -> float:
    upscaler = kdjax.load(model, tile=None)
    frame = np.random.default_rng(0).integers(
        0, 256, (FRAME_HEIGHT // upscaler.scale, FRAME_WIDTH // upscaler.scale, 3), dtype=np.uint8
    )
    upscaler(frame)  # compile and warm up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        upscaler(frame)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def model_row(model: str, sets: list[str], runs: int) -> dict:
    config, params = weights.restore_params(model)
    model_config, params = inference_form(config.model, params)
    module = build_model(model_config)
    height, width = FRAME_HEIGHT // module.scale, FRAME_WIDTH // module.scale
    gflops = gflops_per_frame(module, params, height=height, width=width)
    results = evaluation.evaluate_workdir(model, eval_dirs=sets)
    return {
        "run": Path(model).name,
        "model": model_config.name,
        "params": count_params(params),
        "gflops_1080p": gflops,
        "gmacs_1080p": gflops / 2,
        "ms_per_frame": ms_per_output_frame(model, runs),
        "sets": {name: result["model"] for name, result in results.items()},
        "input": {name: result["input"] for name, result in results.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--sets", nargs="+", default=[f"{common.SHARED_DATA}/Set5", f"{common.SHARED_DATA}/Set14"])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per model, after one warm-up")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    rows = [model_row(model, args.sets, args.runs) for model in args.models]
    print("| model | params | GFLOPs (GMACs) / 1080p output | ms / 1080p output frame | " + " | ".join(
        f"{Path(s).name} PSNR-Y / SSIM-Y" for s in args.sets) + " |")
    for row in rows:
        print(
            f"| {row['run']} | {row['params']:,} | {row['gflops_1080p']:.1f} ({row['gmacs_1080p']:.1f}) | "
            f"{row['ms_per_frame']:.1f} | "
            + " | ".join(f"{r['psnr_y']:.2f} / {r['ssim_y']:.4f}" for r in row["sets"].values()) + " |"
        )
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
