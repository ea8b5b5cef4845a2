"""Training-data throughput: degraded patches per second of the Grain pipeline, per worker count.

Reads a folder of sharp images (default ../shared/data/SunHays80, 1024 px wide JPEGs), crops
--patch_size patches, degrades them with their surroundings (default: Gaussian blur, bicubic x2
down-up, noise, JPEG) and batches them, exactly as training does. For each worker count it
discards --warmup_batches (process start-up, first reads) and then times --batches batches.
Decoded images stay in each process's --cache_mib cache, so once every process has read every
image (an epoch per worker) no more decoding happens; --cache_mib=0 measures decoding every
patch's image.

    python benchmarks/data_throughput.py --worker_counts=0,2
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import app, flags

from kdjax import data, degradations

DEFAULT_FOLDER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "SunHays80"

_FOLDER = flags.DEFINE_string("folder", str(DEFAULT_FOLDER), "Folder of sharp training images.")
_PATCH_SIZE = flags.DEFINE_integer("patch_size", 128, "Side of the square training patches, pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Patches per batch.")
_OPS = flags.DEFINE_list("ops", ["gaussian_blur", "bicubic", "noise", "jpeg"], "Degradation ops, in order.")
_SCALE = flags.DEFINE_integer("scale", 2, "Bicubic down-up scale.")
_WORKER_COUNTS = flags.DEFINE_list("worker_counts", ["0", "2"], "Worker process counts to measure.")
_READ_THREADS = flags.DEFINE_integer("read_threads", None, "Threads per process; default: the data config's.")
_CACHE_MIB = flags.DEFINE_integer("cache_mib", None, "Decoded-image cache per process (MiB); default: the config's.")
_WARMUP_BATCHES = flags.DEFINE_integer("warmup_batches", 10, "Batches discarded before timing.")
_BATCHES = flags.DEFINE_integer("batches", 100, "Batches timed per worker count.")


def measure(config, worker_count: int) -> float:
    """Patches per second over ``--batches`` batches, after ``--warmup_batches``."""
    dataset = data.make_train_dataset(
        config, global_batch_size=_BATCH_SIZE.value, seed=0, process_index=0, process_count=1, worker_count=worker_count
    )
    iterator = iter(dataset)
    for _ in range(_WARMUP_BATCHES.value):
        next(iterator)
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
        next(iterator)
    elapsed = time.perf_counter() - start
    iterator.close()
    return _BATCHES.value * _BATCH_SIZE.value / elapsed


def main(argv: list[str]) -> None:
    del argv
    config = data.default_data_config()
    config.train_source = data.folder_source_config(_FOLDER.value)
    config.patch_size = _PATCH_SIZE.value
    config.degradation = degradations.default_degradation_config(ops=tuple(_OPS.value), scale=_SCALE.value)
    if _READ_THREADS.value is not None:
        config.read_threads = _READ_THREADS.value
    if _CACHE_MIB.value is not None:
        config.cache_mib = _CACHE_MIB.value
    print(
        f"{_FOLDER.value}: {_PATCH_SIZE.value}x{_PATCH_SIZE.value} patches, batch {_BATCH_SIZE.value}, "
        f"ops {' -> '.join(_OPS.value)} (x{_SCALE.value}), read_threads {config.read_threads}, "
        f"cache {config.cache_mib} MiB, "
        f"{_BATCHES.value} timed batches after {_WARMUP_BATCHES.value} warm-up"
    )
    print(f"| {'workers':>7} | {'patches/s':>9} |")
    print(f"| {'-' * 7} | {'-' * 9} |")
    for worker_count in map(int, _WORKER_COUNTS.value):
        print(f"| {worker_count:>7} | {measure(config, worker_count):>9.1f} |", flush=True)


if __name__ == "__main__":
    app.run(main)
