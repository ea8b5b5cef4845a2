"""Serving trained models: tiled prediction, the `Sharpener`, files, folders and videos.

Imports point one way: serving reads models through `kdjax.weights` and `kdjax.models`,
never through training code. `tiling` is the pure, jittable maths; `sharpener` holds
`Sharpener` and `load`; `files` sharpens image files and folders.
"""

from kdjax.serving.sharpener import Sharpener, load

__all__ = ["Sharpener", "load"]
