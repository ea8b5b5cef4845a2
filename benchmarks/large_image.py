"""Peak memory of sharpening one very large image with tiles (band by band).

Sharpens a random height x width uint8 image with the released `realtime_kd_x2` student and
`tile` px tiles, and prints the time, the process's peak RSS and the band function's XLA
scratch memory. Run it in a fresh process so the peak RSS is this image's.

Usage: python benchmarks/large_image.py [--height 8400 --width 12000 --tile 512]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

import kdjax


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=8400)
    parser.add_argument("--width", type=int, default=12000)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--model", default="realtime_kd_x2")
    args = parser.parse_args()
    sharpener = kdjax.load(args.model, tile=args.tile)
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    print(f"loaded: peak RSS {_peak_rss_mib():.0f} MiB; image {image.nbytes / 2**20:.0f} MiB", flush=True)
    start = time.perf_counter()
    output = sharpener(image)
    seconds = time.perf_counter() - start
    scratch = sharpener.compiled((1, args.height, args.width, 3)).memory_analysis().temp_size_in_bytes / 2**20
    print(
        f"sharpened {args.width}x{args.height} ({args.width * args.height / 1e6:.0f} MP) to {output.shape} in "
        f"{seconds:.1f} s; peak RSS {_peak_rss_mib():.0f} MiB; band scratch {scratch:.0f} MiB"
    )


if __name__ == "__main__":
    main()
