"""A before/after picture of the ``stream_x2`` task: one photo sent as a compressed half-size
H.264 frame, upscaled by bicubic, a clean-trained model and the stream-trained one.

The frame is the photo through the task's evaluation chain (kdjax.tasks: blur 0.6, noise 2,
bicubic /2, H.264 as a predicted frame) at each named strength; each row shows a zoomed crop
(nearest-neighbour, so pixels stay visible) of every output beside the ground truth.

Usage (from the repository root):
  python benchmarks/stream_crop.py --image ../shared/data/Urban100/img_004.png \
      --models rep_kd_x2 stream_x2 --output docs/images/stream_x2_crop.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import kdjax
from kdjax import degradations, images, tasks
from kdjax.imresize import imresize

ZOOM = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--models", nargs="+", required=True, help="released names or model folders (x2)")
    parser.add_argument("--crop", type=int, nargs=3, default=(96, 96, 160), metavar=("TOP", "LEFT", "SIDE"),
                        help="the crop of the output, in output pixels")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    photo = images.read_image(args.image)
    target = photo[: photo.shape[0] // 2 * 2, : photo.shape[1] // 2 * 2]
    upscalers = {Path(name).name: kdjax.load(name) for name in args.models}
    top, left, side = args.crop
    rows = []
    for strength in tasks.strengths("stream_x2"):
        chain = degradations.build_degradation(tasks.degradation(f"stream_x2:{strength}"), train=False)
        frame = chain(target, np.random.default_rng([0, 0]))
        outputs = [imresize(frame, output_shape=target.shape[:2])]
        outputs += [upscaler(frame) for upscaler in upscalers.values()]
        outputs.append(target)
        rows.append([
            np.repeat(np.repeat(image[top : top + side, left : left + side], ZOOM, 0), ZOOM, 1) for image in outputs
        ])
    labels = ["bicubic", *upscalers, "ground truth"]
    grid = images.image_grid(rows, [f"{label}" for label in labels])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    images.write_image(args.output, grid)
    print(f"Wrote {args.output} (rows: {', '.join(tasks.strengths('stream_x2'))}).")


if __name__ == "__main__":
    main()
