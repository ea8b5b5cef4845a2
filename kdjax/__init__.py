"""kdjax: image sharpening and upscaling with knowledge distillation in JAX.

A large teacher (a Swin transformer trained here, or a published network imported from its
authors' weights) is trained or imported for quality; lightweight CNN students learn from
the ground truth and the frozen teacher to run in real time.

    import kdjax
    model = kdjax.load("rep_kd_sharpen_x2")   # a released model by name, a model folder or a workdir
    sharp = model(image)                       # uint8 (or uint16) HxWx3 in; model.scale times larger out
"""

__all__ = ["Sharpener", "load"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported on first use, so that Grain's data worker processes, which import
    # kdjax.data, do not pay for importing JAX and the models.
    if name in __all__:
        from kdjax import serving

        return getattr(serving, name)
    raise AttributeError(f"module 'kdjax' has no attribute {name!r}")
