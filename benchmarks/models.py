"""Benchmark of the model presets on this machine, printed as a Markdown table.

For every preset: parameters, GFLOPs and XLA scratch memory per 1920x1080 *output* frame (the
input is 1920x1080 for the sharpen task, 960x540 for an x2 upscaler; XLA cost and memory
analysis of the compiled forward; a multiply-add counts as 2 flops), and the measured forward
time (jit, compile/warm-up excluded, median of several runs) per 256x256 input patch for every
model and per whole frame for every model below `--max-frame-gflops` (the CNNs; a Swin teacher
needs tiles at 1080p, see benchmarks/inference.py).

Usage: python benchmarks/models.py [--models realtime swin_tiny ...] [--runs 5] [--scale 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.models import MODEL_NAMES, build_model, count_params, forward_cost, model_config
from kdjax.models.summary import FRAME_HEIGHT, FRAME_WIDTH


def median_forward_seconds(
    model, params, shape: tuple[int, ...], runs: int, budget_s: float
) -> float:
    """Median wall time of the jitted forward on a random `shape` input.

    Stops early (after at least 3 runs) once `budget_s` is spent, for the slow teachers.
    """
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
    x = jnp.asarray(np.random.default_rng(0).random(shape, dtype=np.float32))
    jax.block_until_ready(forward(params, x))  # compile and warm up
    times: list[float] = []
    while len(times) < runs and not (len(times) >= 3 and sum(times) > budget_s):
        start = time.perf_counter()
        jax.block_until_ready(forward(params, x))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def benchmark_row(
    name: str, patch: int, runs: int, budget_s: float, max_frame_gflops: float, scale: int | None = None
) -> str:
    model = build_model(model_config(name, **({} if scale is None else {"scale": scale})))
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
    height, width = FRAME_HEIGHT // model.scale, FRAME_WIDTH // model.scale  # a 1080p output
    cost = forward_cost(model, params, height=height, width=width)
    patch_ms = 1e3 * median_forward_seconds(model, params, (1, patch, patch, 3), runs, budget_s)
    if cost.flops / 1e9 <= max_frame_gflops:
        frame_s = median_forward_seconds(model, params, (1, height, width, 3), runs, budget_s)
        frame_ms = f"{1e3 * frame_s:,.0f}"
    else:
        frame_ms = "not timed"
    temp = "n/a" if cost.temp_bytes is None else f"{cost.temp_bytes / 2**20:,.0f}"
    return (
        f"| {name} | {model.role} | x{model.scale} | {count_params(params):,} | {cost.flops / 1e9:,.1f} | {temp} "
        f"| {patch_ms:,.1f} | {frame_ms} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--patch", type=int, default=256, help="side of the square patch")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=30.0,
        help="stop timing a measurement after this many seconds (at least 3 runs)",
    )
    parser.add_argument(
        "--max-frame-gflops", type=float, default=1000.0, help="time whole frames of models up to this cost"
    )
    parser.add_argument(
        "--scale", type=int, default=None, help="the models' scale (e.g. 2: swin_light as SwinIR-light x2)"
    )
    args = parser.parse_args()

    device = jax.devices()[0]
    print(
        f"Device: {device.platform.upper()} ({device.device_kind}), {os.cpu_count()} cores "
        f"visible, jax {jax.__version__}; float32, batch 1; times are medians of up to "
        f"{args.runs} runs after a warm-up.\n"
    )
    print(
        f"| model | role | scale | params | GFLOPs / {FRAME_WIDTH}x{FRAME_HEIGHT} output | XLA temp MiB / frame "
        f"| ms / {args.patch}x{args.patch} input patch | ms / {FRAME_WIDTH}x{FRAME_HEIGHT} output frame |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        print(benchmark_row(name, args.patch, args.runs, args.budget_s, args.max_frame_gflops, args.scale), flush=True)


if __name__ == "__main__":
    main()
