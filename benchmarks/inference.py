"""Inference benchmark: speed and memory of `kdjax.serving.Sharpener` on 1920x1080 frames.

For each model (untrained registry presets, or trained models from --workdir) it reports
milliseconds per frame and frames per second (median of --runs timed `sharpen` calls after one
warm-up call, host transfers included), tiled and, for the students, untiled; XLA's planned
memory of the compiled function and the growth of the process's peak RSS; the model's GFLOPs
per frame (XLA cost analysis of one untiled forward pass) and the achieved GFLOP/s next to the
device's measured float32 matmul GFLOP/s, so the reader sees how close to the hardware it runs.
A second table shows XLA's planned memory for 1080p, 4K and 8K inputs (compiled, not run):
tiling keeps the model's activations to one tile batch, so only image-sized buffers grow.

Models whose estimated time per frame at the matmul rate exceeds --max_seconds_per_frame
(swin_light and swin_base on a CPU) are timed on a square crop of about --sample_seconds at
that rate and extrapolated by the pixels the frame's tiles cover (window attention and
convolutions cost the same per pixel); their rows are marked with "~". Untiled teachers at
1080p are not timed unless --untiled_teachers is given (on a CPU they take minutes per frame).

Usage:
  python benchmarks/inference.py                      # swin_tiny, swin_light, swin_base, realtime
  python benchmarks/inference.py --students           # plus plain3, residual, separable
  python benchmarks/inference.py --workdir runs/student --runs 10
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import resource
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

# Run as a script from a checkout: make the repository importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdjax import serving  # noqa: E402
from kdjax.serving import tiling  # noqa: E402
from kdjax.models import build_model, count_params, gflops_per_frame, model_config  # noqa: E402
from kdjax.models.summary import abstract_params  # noqa: E402

DEFAULT_MODELS = ("swin_tiny", "swin_light", "swin_base", "realtime")
OTHER_STUDENTS = ("plain3", "residual", "separable")
MEMORY_SIZES = {"1080p": (1080, 1920), "4K": (2160, 3840), "8K": (4320, 7680)}
MIB = 2**20
MAX_RUNS = 50


@dataclasses.dataclass
class Row:
    name: str
    params_m: float
    gflops: float
    tiles: int
    tile_overhead: float
    tiled_ms: float
    sampled: bool
    untiled_ms: float | None
    matmul_gflops: float
    temp_mib: float | None
    rss_growth_mib: float
    compile_s: float
    memory_by_size: dict[str, float | None]


def _random_params(model, seed: int = 0):
    """Parameters of realistic scale drawn in numpy: timing does not depend on their values."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda leaf: jnp.asarray(0.02 * rng.standard_normal(leaf.shape), leaf.dtype), abstract_params(model)
    )


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _median_seconds(calls: dict[str, Callable[[], object]], runs: int, min_seconds: float) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternation after one warm-up each.

    Alternating keeps slow drifts (other processes, clocks) from favouring one of them; fast
    calls are repeated until `min_seconds` have been timed (at most MAX_RUNS times).
    """
    for call in calls.values():
        call()  # warm-up: first-call overheads (allocation, page faults) are not timed
    times: dict[str, list[float]] = {name: [] for name in calls}
    start = time.perf_counter()
    while len(times[next(iter(calls))]) < runs or (
        time.perf_counter() - start < min_seconds and len(times[next(iter(calls))]) < MAX_RUNS
    ):
        for name, call in calls.items():
            begin = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - begin)
    return {name: statistics.median(values) for name, values in times.items()}


def _matmul_size() -> int:
    """A square matmul that takes about a second or less on the default device."""
    return 2048 if jax.default_backend() == "cpu" else 8192


def matmul_gflops() -> float:
    """Best measured float32 matmul GFLOP/s of the default device (n x n @ n x n)."""
    size = _matmul_size()
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    matmul = jax.jit(jnp.dot)
    matmul(a, a).block_until_ready()
    best = min(_timed(lambda: matmul(a, a).block_until_ready()) for _ in range(5))
    return 2 * size**3 / best / 1e9


def _timed(call: Callable[[], object]) -> float:
    begin = time.perf_counter()
    call()
    return time.perf_counter() - begin


def _tiled_pixels(sharpener: serving.Sharpener, height: int, width: int) -> tuple[int, int]:
    """Tiles per frame and the pixels they cover (more than the frame's: overlaps)."""
    multiple = sharpener.multiple
    rows = tiling.plan_axis(height + (-height % multiple), sharpener.tile, sharpener.overlap, multiple)
    cols = tiling.plan_axis(width + (-width % multiple), sharpener.tile, sharpener.overlap, multiple)
    tiles = len(rows.starts) * len(cols.starts)
    return tiles, tiles * rows.size * cols.size


def _sample_side(sharpener: serving.Sharpener, gflops_per_pixel: float, args, device_gflops: float) -> int:
    """Side of a square crop whose estimated time at the matmul rate is --sample_seconds."""
    side = np.sqrt(args.sample_seconds * device_gflops / gflops_per_pixel)
    step = max(8, sharpener.multiple)
    return int(np.clip(side // step * step, 64, sharpener.tile or args.height))


def _make_sharpener(spec: dict[str, str], args: argparse.Namespace) -> serving.Sharpener:
    settings = dict(tile=args.tile, overlap=args.overlap, tile_batch=args.tile_batch)
    if "workdir" in spec:
        return serving.load(spec["workdir"], **settings)
    model = build_model(model_config(spec["preset"], dtype=args.dtype))
    return serving.Sharpener(model, _random_params(model), **settings)


def benchmark(name: str, spec: dict[str, str], args: argparse.Namespace) -> Row:
    """Measures one model; runs in its own process, so peak RSS and caches are its own."""
    height, width = args.height, args.width
    device_gflops = matmul_gflops()
    sharpener = _make_sharpener(spec, args)
    model, params = sharpener.model, sharpener.params
    tiles, tiled_pixels = _tiled_pixels(sharpener, height, width)
    gflops = gflops_per_frame(model, params, height, width)  # compiled, not run
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    rss_before = _peak_rss_mib()

    start = time.perf_counter()
    compiled = sharpener.compiled((1, height, width, 3))
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()

    gflops_per_pixel = gflops / (height * width)
    sampled = gflops_per_pixel * tiled_pixels / device_gflops > args.max_seconds_per_frame
    untiled_ms = None
    if sampled:
        side = _sample_side(sharpener, gflops_per_pixel, args, device_gflops)
        crop = frame[:side, :side]
        seconds = _median_seconds({"tiled": lambda: sharpener.sharpen(crop)}, args.runs, args.min_seconds)
        tiled_ms = 1e3 * tiled_pixels / side**2 * seconds["tiled"]
    else:
        calls = {"tiled": lambda: sharpener.sharpen(frame)}
        if model.role != "teacher" or args.untiled_teachers:
            whole = serving.Sharpener(model, params, tile=None, tile_batch=1)
            calls["untiled"] = lambda: whole.sharpen(frame)
        seconds = _median_seconds(calls, args.runs, args.min_seconds)
        tiled_ms = 1e3 * seconds["tiled"]
        untiled_ms = 1e3 * seconds["untiled"] if "untiled" in seconds else None
    rss_growth_mib = _peak_rss_mib() - rss_before

    memory_by_size = {}
    for label, shape in MEMORY_SIZES.items():
        planned = sharpener.compiled((1, *shape, 3)).memory_analysis()
        memory_by_size[label] = None if planned is None else planned.temp_size_in_bytes / MIB
    return Row(
        name=name,
        params_m=count_params(params) / 1e6,
        gflops=gflops,
        tiles=tiles,
        tile_overhead=tiled_pixels / (height * width),
        tiled_ms=tiled_ms,
        sampled=sampled,
        untiled_ms=untiled_ms,
        matmul_gflops=device_gflops,
        temp_mib=None if memory is None else memory.temp_size_in_bytes / MIB,
        rss_growth_mib=rss_growth_mib,
        compile_s=compile_s,
        memory_by_size=memory_by_size,
    )


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def print_tables(rows: list[Row], args: argparse.Namespace) -> None:
    device = jax.devices()[0]
    matmul_size = _matmul_size()
    print(f"\nDevice: {device.device_kind} ({jax.default_backend()}); frame {args.width}x{args.height}, "
          f"tile {args.tile}, overlap {args.overlap}, tile batch {args.tile_batch}, dtype {args.dtype}; "
          f"median of >= {args.runs} timed calls (and >= {args.min_seconds:g} s) after 1 warm-up; "
          f"matmul: best f32 {matmul_size}x{matmul_size} GFLOP/s measured in the same process.\n")
    print("| model | params (M) | GFLOPs/frame | tiles (px overhead) | tiled ms/frame | FPS | "
          "untiled ms/frame | tiling cost | GFLOP/s | matmul GFLOP/s | % of matmul | XLA temp MiB | "
          "peak RSS +MiB | compile s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        mark = "~" if row.sampled else ""
        achieved = row.gflops / (row.tiled_ms / 1e3)
        cost = None if row.untiled_ms is None else f"{row.tiled_ms / row.untiled_ms:.2f}x"
        print(
            f"| {row.name} | {row.params_m:.2f} | {row.gflops:.1f} | {row.tiles} ({row.tile_overhead:.2f}x) | "
            f"{mark}{row.tiled_ms:.1f} | {mark}{1e3 / row.tiled_ms:.2f} | {_fmt(row.untiled_ms)} | "
            f"{cost or 'n/a'} | {mark}{achieved:.1f} | {row.matmul_gflops:.1f} | "
            f"{mark}{100 * achieved / row.matmul_gflops:.0f}% | {_fmt(row.temp_mib, '.0f')} | "
            f"{row.rss_growth_mib:.0f} | {row.compile_s:.1f} |"
        )
    print("\n~ timed on a crop and scaled by the pixels of the frame's tiles. GFLOP/s counts the model's "
          "untiled FLOPs per frame (useful work) per second of tiled inference; tiles also recompute their "
          "overlaps (px overhead). n/a untiled: Swin teachers are only timed tiled (see --untiled_teachers). "
          "Each model runs in a fresh process: peak RSS +MiB is its own growth over the loaded model "
          "(for ~ rows, while running the crop; XLA temp is the planned need of the full frame).\n")
    print("XLA planned temporary memory (MiB) of the tiled function by input size (compiled, not run):\n")
    print("| model | " + " | ".join(MEMORY_SIZES) + " |")
    print("|---|" + "---:|" * len(MEMORY_SIZES))
    for row in rows:
        print(f"| {row.name} | " + " | ".join(_fmt(row.memory_by_size[size], ".0f") for size in MEMORY_SIZES) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated registry presets")
    parser.add_argument("--students", action="store_true", help=f"also benchmark {', '.join(OTHER_STUDENTS)}")
    parser.add_argument("--workdir", action="append", default=[], help="a training workdir (repeatable); "
                        "when given, only these trained models are benchmarked")
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--tile_batch", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="at least this many timed calls (median)")
    parser.add_argument("--min_seconds", type=float, default=3.0,
                        help=f"repeat fast calls until this many seconds are timed (at most {MAX_RUNS} calls)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--max_seconds_per_frame", type=float, default=10.0,
                        help="above this estimate (at the matmul rate), time a crop and extrapolate")
    parser.add_argument("--sample_seconds", type=float, default=1.0,
                        help="estimated time (at the matmul rate) of the crop timed instead of a frame")
    parser.add_argument("--untiled_teachers", action="store_true", help="also time Swin teachers untiled")
    args = parser.parse_args(argv)

    if args.workdir:
        jobs = {Path(workdir).name: {"workdir": workdir} for workdir in args.workdir}
    else:
        names = [name for name in args.models.split(",") if name]
        jobs = {name: {"preset": name} for name in names + (list(OTHER_STUDENTS) if args.students else [])}
    rows = []
    for name, spec in jobs.items():
        print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
        # A fresh process per model: its own peak RSS, no compile caches or buffers of others.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            rows.append(pool.submit(benchmark, name, spec, args).result())
    print_tables(rows, args)


if __name__ == "__main__":
    main()
