"""Serving trained models: tiled prediction, the `Sharpener`, files, folders, videos and streams.

Imports point one way: serving reads models through `kdjax.weights` and `kdjax.models`,
never through training code. `tiling` is the pure, jittable maths; `sharpener` holds
`Sharpener` and `load`; `files` plans and sharpens image and video files and folders;
`stream` sharpens raw frames piped through standard input and output.

`Sharpener` and `load` are imported on first use, so that `files` can check a command line's
inputs and outputs before JAX is imported.
"""

__all__ = ["Sharpener", "load"]


def __getattr__(name: str):
    if name in __all__:
        from kdjax.serving import sharpener  # pylint: disable=import-outside-toplevel

        return getattr(sharpener, name)
    raise AttributeError(f"module 'kdjax.serving' has no attribute {name!r}")
