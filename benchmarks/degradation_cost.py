"""Milliseconds per megapixel of each degradation op and of each realistic task's chain on this CPU.

Each op (and each ``kdjax.tasks`` training chain) degrades the same photos (SunHays80's first
images, about 0.75 megapixels each) with training parameters drawn per call; the figure is the
median over ``--repeats`` calls divided by the megapixels fed in. The per-image cache
(``data.cache_variants``) pays this once per stored variant.

Usage (from the repository root, on a quiet machine):
  python benchmarks/degradation_cost.py --output benchmarks/results/degradation_cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from kdjax import degradations, tasks
from kdjax.configs import common


def ms_per_megapixel(degradation: degradations.Degradation, images: list[np.ndarray], repeats: int) -> float:
    rng = np.random.default_rng(0)
    times = []
    for index in range(repeats):
        image = images[index % len(images)]
        start = time.perf_counter()
        degradation(image, rng)
        times.append((time.perf_counter() - start) / (image.shape[0] * image.shape[1] / 1e6))
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    paths = sorted(Path(common.SHARED_DATA, "SunHays80").iterdir())[: args.images]
    images = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    chains = {name: degradations.default_degradation_config(ops=(name,)) for name in degradations.OP_NAMES}
    chains.update({f"task {name}": tasks.degradation(name) for name in tasks.TASK_NAMES})
    rows = {}
    for name, config in chains.items():
        rows[name] = ms_per_megapixel(degradations.build_degradation(config, train=True), images, args.repeats)
        print(f"{name}: {rows[name]:.0f} ms per input megapixel")
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
