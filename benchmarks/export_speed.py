"""Export speed benchmark: one student's weights per 1080p frame in kdjax/XLA and in onnxruntime.

Everything runs in this one process, on the same float32 (1, 1080, 1920, 3) frame, after
warm-up. Rows:

- kdjax/XLA: `jax.jit(model.apply)`, the model as configured;
- kdjax/XLA, width padded to a multiple of 8: the same weights with zero channels added
  (`pad_width`; exactly the same output), because XLA:CPU's convolutions (YNNPACK in this
  jaxlib) run a 28-channel output about twice as slow as a 32-channel one;
- StableHLO export: `load_stablehlo(export_stablehlo(...))`, symbolic batch/height/width;
- onnxruntime: `export_onnx(..., height=1080, width=1920)`, CPU provider, `--threads`
  intra-op threads, all graph optimizations, sequential execution.

Timing is in rounds: each round runs every row once, in turn, so background load on a shared
machine hits the rows alike. A row's ms/frame is its median over rounds; "onnxruntime ÷ row"
is the median over rounds of the ratio within the round. GFLOP/s divides the model's
FLOPs (XLA's `compiled.cost_analysis()["flops"]` of `model.apply`, a multiply-add being 2
flops) by the time, for every row, so rows compare as useful work; the padded model's own
count (zero channels included) is in the XLA GFLOP column. The peak is a float32
2048x2048 matmul in XLA, timed in the same rounds.

Threads: XLA:CPU runs one intra-op thread per CPU this process may use; onnxruntime gets the
same number unless --threads says otherwise. XLA_FLAGS is read from the environment (none by
default) and printed. glibc's default malloc gives XLA's 25 MB output and 28 MB scratch
buffers back to the kernel after every frame (about 7,400 page faults and 20 ms of system
time per frame, where onnxruntime reuses its arena); the MALLOC_* line below keeps them.
On a shared machine the medians move with the neighbours' load; the min column is the
closest to an idle machine.

Usage:
  python benchmarks/export_speed.py                     # pretrained/realtime_kd_x2, 21 rounds
  python benchmarks/export_speed.py --model_dir pretrained/realtime_x2 --rounds 25
  MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=268435456 \
      python benchmarks/export_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime

# Run as a script from a checkout: make the repository importable without installing it.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kdjax.models import build_model  # noqa: E402
from kdjax.models.students import RealtimeCNN, ResidualCNN  # noqa: E402
from kdjax.serving.export import (  # noqa: E402
    ONNX_INPUT,
    export_onnx,
    export_stablehlo,
    load_stablehlo,
)

FRAME = (1, 1080, 1920, 3)
MATMUL_SIZE = 2048
RELEASED = "realtime_kd_x2"


def default_model_dir() -> Path:
    for folder in (REPO / "pretrained", REPO / "kdjax" / "pretrained"):
        if (folder / RELEASED).is_dir():
            return folder / RELEASED
    raise FileNotFoundError(
        f"{RELEASED} is in neither pretrained/ nor kdjax/pretrained/; pass --model_dir."
    )


def load_model(folder: Path) -> tuple[nn.Module, Any]:
    """The model of a model folder (config.json + params.msgpack) and its "params"."""
    model = build_model(json.loads((folder / "config.json").read_text())["model"])
    zeros = jnp.zeros((1, 16, 16, 3))
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), zeros)["params"])
    return model, flax.serialization.from_bytes(template, (folder / "params.msgpack").read_bytes())


def pad_width(model: nn.Module, params: Any, multiple: int = 8) -> tuple[nn.Module, Any]:
    """The same residual-trunk student with its width rounded up to `multiple`, and params.

    The added channels are zero everywhere: zero kernels and biases give 0 after the head,
    ReLU keeps 0, the residual blocks add 0, and conv_last has zero weights for them.
    """
    width = -(-model.width // multiple) * multiple

    def grow(layer_name: str, leaf_name: str, leaf: np.ndarray) -> np.ndarray:
        widths = [(0, 0)] * leaf.ndim
        if leaf_name == "kernel":
            if layer_name != "head":  # the head's input is the image, not the trunk
                widths[2] = (0, width - leaf.shape[2])
            if layer_name != "conv_last":  # conv_last's output is the image residual
                widths[3] = (0, width - leaf.shape[3])
        elif layer_name != "conv_last":
            widths[0] = (0, width - leaf.shape[0])
        return np.pad(np.asarray(leaf), widths)

    def grow_layer(layer_name: str, layer: dict) -> dict:
        return {name: grow(layer_name, name, leaf) for name, leaf in layer.items()}

    padded = {}
    for name, layer in params.items():
        if name.startswith("block_"):
            padded[name] = {conv: grow_layer(name, sub) for conv, sub in layer.items()}
        else:
            padded[name] = grow_layer(name, layer)
    return model.clone(width=width), padded


def onnx_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def matmul_call() -> Callable[[], object]:
    """One float32 MATMUL_SIZE^2 matmul in XLA, the peak the rows are compared with."""
    a = jnp.asarray(np.random.default_rng(0).random((MATMUL_SIZE, MATMUL_SIZE), np.float32))
    matmul = jax.jit(jnp.matmul)
    return lambda: matmul(a, a).block_until_ready()


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", type=Path, default=None, help="config.json + params.msgpack")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="onnxruntime intra-op threads (default: the CPUs XLA uses)")
    args = parser.parse_args()
    model_dir = args.model_dir or default_model_dir()
    model, params = load_model(model_dir)
    if not isinstance(model, (RealtimeCNN, ResidualCNN)):
        parser.error(
            f"{model_dir} holds a {type(model).__name__}; pass a realtime or residual student."
        )
    frame = np.random.default_rng(0).random(FRAME, np.float32)
    device_frame = jnp.asarray(frame)

    def jitted(module: nn.Module, variables: Any) -> tuple[Callable[[], object], float, np.ndarray]:
        forward = jax.jit(lambda p, x: module.apply({"params": p}, x))
        compiled = forward.lower(variables, device_frame).compile()
        return (lambda: compiled(variables, device_frame).block_until_ready(),
                compiled.cost_analysis()["flops"], np.asarray(compiled(variables, device_frame)))

    rows: dict[str, Callable[[], object]] = {}
    xla_flops: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    rows["kdjax/XLA jit(model.apply)"], model_flops, reference = jitted(model, params)
    xla_flops["kdjax/XLA jit(model.apply)"] = model_flops
    wide_model, wide_params = pad_width(model, params)
    wide_name = f"kdjax/XLA, width {model.width} padded to {wide_model.width}"
    rows[wide_name], xla_flops[wide_name], outputs[wide_name] = jitted(wide_model, wide_params)
    with tempfile.TemporaryDirectory() as folder:
        export_stablehlo(model, params, Path(folder) / "model.stablehlo")
        exported = load_stablehlo(Path(folder) / "model.stablehlo")
        export_onnx(model, params, Path(folder) / "model.onnx", height=FRAME[1], width=FRAME[2])
        session = onnx_session(Path(folder) / "model.onnx", args.threads)
    rows["StableHLO export (symbolic shape)"] = lambda: exported(device_frame).block_until_ready()
    outputs["StableHLO export (symbolic shape)"] = np.asarray(exported(device_frame))
    ort_name = f"onnxruntime ({args.threads} threads)"
    rows[ort_name] = lambda: session.run(None, {ONNX_INPUT: frame})
    outputs[ort_name] = session.run(None, {ONNX_INPUT: frame})[0]

    matmul = f"float32 {MATMUL_SIZE}x{MATMUL_SIZE} matmul (XLA)"
    timed = {**rows, matmul: matmul_call()}
    for call in timed.values():  # warm-up: first-call allocations, onnxruntime's arena
        call()
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(args.rounds):
        for name, call in timed.items():
            seconds[name].append(_timed(call))
    peak = 2 * MATMUL_SIZE**3 / statistics.median(seconds.pop(matmul)) / 1e9

    print(f"model: {model_dir.relative_to(REPO) if model_dir.is_relative_to(REPO) else model_dir} "
          f"({type(model).__name__}, width {model.width}), frame float32 {FRAME}")
    print(f"jax {jax.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"CPUs {len(os.sched_getaffinity(0))}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
          f"{args.rounds} rounds\n")
    print("| runtime | ms / frame (median) | min | onnxruntime ÷ row | GFLOP/s | % of matmul peak "
          "| XLA GFLOP | max abs diff vs model.apply |")
    print("|---|---|---|---|---|---|---|---|")
    for name, times in seconds.items():
        median = statistics.median(times)
        ratio = statistics.median(o / t for o, t in zip(seconds[ort_name], times))
        rate = model_flops / median / 1e9
        flops = f"{xla_flops[name] / 1e9:.1f}" if name in xla_flops else "-"
        diff = f"{np.abs(outputs[name] - reference).max():.1e}" if name in outputs else "-"
        print(f"| {name} | {median * 1e3:.1f} | {min(times) * 1e3:.1f} | {ratio:.2f} | {rate:.1f} "
              f"| {100 * rate / peak:.0f}% | {flops} | {diff} |")
    print(f"| {matmul} | - | - | - | {peak:.1f} | 100% | - | - |")
    malloc = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_"))
    xla_flags = f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    print(f"\ncommand: {' '.join(filter(None, (malloc, xla_flags)))} python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
