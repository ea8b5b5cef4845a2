"""Realistic tasks: what a low-bandwidth stream or a video call delivers, as degradation configs.

A task is a ``kdjax.degradations`` chain in the order of a real capture-and-send chain (optics
and sensor, then the stream's downscale, then the codec), with training ranges wider than its
evaluation setting, and one or more named, fixed evaluation strengths. ``degradation(spec)``
returns the config for ``"<task>"`` (the default strength) or ``"<task>:<strength>"``; its
``train_*`` ranges are the same for every strength, so one training run serves them all.

``stream_x2`` (upscale by 2): a camera frame (mild optical blur, sensor noise) downscaled by 2
with MATLAB bicubic and sent as H.264 (libx264, 4:2:0, no B-frames), the model upscaling the
decoded frame.
  training   blur sigma 0.2-1.2 px (70% of examples; half of them anisotropic), Gaussian noise
             sigma 0-4 of 255 (50%), CRF 18-40, 75% predicted frames after up to 3 px of motion
  evaluation blur sigma 0.6 px, noise sigma 2, a predicted frame after a 1 px-a-frame pan, at
             ``moderate`` CRF 28 (default) or ``low_bitrate`` CRF 34

``videocall`` (same size in and out): a call's frame at the camera's resolution: blur, sensor
noise, then H.264.
  training   blur sigma 0.2-1.5 px, noise sigma 0-6, CRF 20-40, 75% predicted frames
  evaluation blur sigma 0.8 px, noise sigma 3, a predicted frame at CRF 30 (``default``)
"""

from __future__ import annotations

import ml_collections

from kdjax import degradations

_STRENGTHS = {
    "stream_x2": {"moderate": 28, "low_bitrate": 34},
    "videocall": {"default": 30},
}
TASK_NAMES = tuple(_STRENGTHS)


def strengths(task: str) -> tuple[str, ...]:
    """The named evaluation strengths of ``task``, the default first."""
    _check_task(task)
    return tuple(_STRENGTHS[task])


def _check_task(task: str) -> None:
    if task not in _STRENGTHS:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASK_NAMES)}.")


def degradation(spec: str) -> ml_collections.ConfigDict:
    """The degradation config of ``"<task>[:<strength>]"`` (see the module docstring)."""
    task, _, strength = spec.partition(":")
    _check_task(task)
    strength = strength or strengths(task)[0]
    if strength not in _STRENGTHS[task]:
        raise ValueError(f"Task {task} has no strength {strength!r}; choose one of {', '.join(strengths(task))}.")
    crf = _STRENGTHS[task][strength]
    if task == "stream_x2":
        return degradations.default_degradation_config(
            ops=("gaussian_blur", "noise", "bicubic", "h264"),
            scale=2,
            task="upscale",
            gaussian_blur=dict(
                train_prob=0.7, train_sigma=(0.2, 1.2), train_anisotropic_prob=0.5, eval_sigma_x=0.6, eval_sigma_y=0.6
            ),
            noise=dict(train_prob=0.5, train_sigma=(0.0, 4.0), eval_sigma=2.0),
            h264=dict(train_crf=(18, 40), eval_crf=crf),
        )
    return degradations.default_degradation_config(
        ops=("gaussian_blur", "noise", "h264"),
        gaussian_blur=dict(train_sigma=(0.2, 1.5), train_anisotropic_prob=0.0, eval_sigma_x=0.8, eval_sigma_y=0.8),
        noise=dict(train_sigma=(0.0, 6.0), eval_sigma=3.0),
        h264=dict(train_crf=(20, 40), eval_crf=crf),
    )
