"""Synthetic degradations that turn sharp (HR) images into model inputs, on CPU data workers.

A ``Degradation`` is an ordered chain of ops, each mapping a uint8 (H, W, 3) RGB image to one of
the same size. With ``train=True`` every op draws its parameters at random from configured
ranges, using the ``np.random.Generator`` it is given (the Grain pipeline seeds it from
(seed, example index), so results are reproducible); with ``train=False`` every op uses fixed
evaluation values, so evaluation inputs are identical from run to run.

Config form (``default_degradation_config()`` builds it; ``cfg.ops`` picks and orders the ops,
the sub-configs of ops not listed are ignored)::

    ops:   ordered op names among "gaussian_blur", "motion_blur", "bicubic", "noise", "jpeg", "h264"
    scale: evaluation scale of "bicubic" (down by `scale`, back up to the original size); the
           evaluation pipeline also crops HR images to multiples of it
    task:  "sharpen" (the input has the size of the target: bicubic goes down and back up)
           or "upscale" (the input is the low-resolution image: bicubic only goes down, ops
           after it act on the small image, and the model upscales by `scale`)
    gaussian_blur:
      train_prob:             probability that a training example gets this op
      kernel_size:            odd kernel side in pixels
      train_sigma:            (low, high) standard deviation range, pixels
      train_anisotropic_prob: share of training kernels with independent sigmas along two
                              axes rotated by a random angle (the rest are isotropic)
      eval_sigma_x, eval_sigma_y, eval_angle: evaluation kernel (angle in degrees)
    motion_blur:
      train_prob, kernel_size
      train_length:           (low, high) length of the linear motion, pixels
      train_angle:            (low, high) direction of the motion, degrees
      eval_length, eval_angle
    bicubic:
      train_prob
      train_scales:           training scales, each drawn with equal probability; must
                              include `scale`
    noise:
      train_prob
      train_sigma:            (low, high) standard deviation of additive Gaussian noise,
                              0..255 units, drawn per example
      eval_sigma
    jpeg:
      train_prob
      train_quality:          (low, high) JPEG quality, integers, both inclusive
      eval_quality
    h264:                     a video frame through H.264 (libx264 via PyAV, 4:2:0 chroma): the
                              image is the last frame of a short clip whose earlier frames are
                              the same scene shifted by a few pixels (camera motion), so the
                              kept frame is a predicted (P) frame coded from its decoded
                              predecessors, or, with a clip of one frame, an intra (I) frame
      train_prob
      train_crf:              (low, high) constant rate factor, integers, both inclusive
                              (18 = visually lossless, 23 = x264's default, 30-40 = the blocky,
                              smeared frames of a low-bandwidth call or stream)
      train_predicted_prob:   share of training examples kept as a P-frame (the rest: I-frames)
      train_max_shift:        largest camera motion between two frames, pixels (each earlier
                              frame's offset drawn uniformly in [-max, max] along both axes)
      eval_crf, eval_predicted: evaluation CRF and frame type; an evaluation P-frame follows a
                              fixed diagonal pan of 1 pixel a frame
      previous_frames:        frames coded before the kept one in a predicted clip
      preset:                 x264's speed preset (real-time encoders use the fast ones)

Every op returns uint8, rounded and clipped after the op, so the chain is what a real camera
pipeline stores between steps. Every op keeps the image size, except bicubic in the upscale
task, which divides it by ``scale``. ``bicubic`` uses MATLAB-compatible ``kdjax.imresize`` (which
rounds uint8 after each pass, like MATLAB); when a side is not a multiple of the scale (random
training patches), the downscaled size is rounded up and the upscale returns exactly the
original size. Filters extend the image by mirroring without repeating the edge (OpenCV's
default ``BORDER_REFLECT_101``, as BasicSR uses).

Training degrades a crop, not the whole image. So that a crop's degradation equals the
whole image's restricted to it, a ``Degradation`` reports what a crop needs (the data pipeline
reads both): ``context``, the pixels each output pixel depends on, per side (the sum over the
chain of each blur's kernel radius and ``4 * scale`` for bicubic down-up: two low-resolution
pixels each way, in each of its two passes; an op after the downscale of the upscale task counts
``scale`` times its own), and ``grid``, the alignment the crop needs (the
least common multiple of the bicubic scales, so the crop's downscaling groups the same pixels
as the whole image's). Noise, JPEG and H.264 need neither: noise is per pixel, and the
codecs, per 8x8 block or 16x16 macroblock, are left out of the alignment (their block phase
varies between crops, a harmless augmentation; the per-image cache degrades whole images).
H.264 is encoded single-threaded, which makes libx264 deterministic: the same image and
generator give the same bytes (for the libx264 that PyAV's wheel ships).
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Protocol

import ml_collections
import numpy as np
import scipy.signal
from PIL import Image

from kdjax.imresize import imresize

__all__ = [
    "OP_NAMES",
    "TASKS",
    "Degradation",
    "bicubic_only_config",
    "build_degradation",
    "default_degradation_config",
    "gaussian_kernel",
    "motion_kernel",
]

OP_NAMES = ("gaussian_blur", "motion_blur", "bicubic", "noise", "jpeg", "h264")
TASKS = ("sharpen", "upscale")


def default_degradation_config(**overrides) -> ml_collections.ConfigDict:
    """The complete degradation config (see the module docstring), x2 bicubic down-up by default.

    Args:
      **overrides: values merged into the config, nested dicts into sub-configs, e.g.
        ``ops=("gaussian_blur", "bicubic", "noise", "jpeg")`` or ``noise=dict(eval_sigma=10.0)``.
        ``scale`` also sets ``bicubic.train_scales`` to ``(scale,)`` unless that is overridden.
    """
    scale = int(overrides.get("scale", 2))
    config = ml_collections.ConfigDict(
        dict(
            ops=("bicubic",),
            scale=scale,
            task="sharpen",
            gaussian_blur=dict(
                train_prob=1.0,
                kernel_size=21,
                train_sigma=(0.2, 3.0),
                train_anisotropic_prob=0.5,
                eval_sigma_x=1.5,
                eval_sigma_y=1.5,
                eval_angle=0.0,
            ),
            motion_blur=dict(
                train_prob=1.0,
                kernel_size=21,
                train_length=(3.0, 15.0),
                train_angle=(0.0, 180.0),
                eval_length=9.0,
                eval_angle=45.0,
            ),
            bicubic=dict(train_prob=1.0, train_scales=(scale,)),
            noise=dict(train_prob=1.0, train_sigma=(1.0, 10.0), eval_sigma=5.0),
            jpeg=dict(train_prob=1.0, train_quality=(30, 95), eval_quality=75),
            h264=dict(
                train_prob=1.0,
                train_crf=(18, 40),
                train_predicted_prob=0.75,
                train_max_shift=3,
                eval_crf=28,
                eval_predicted=True,
                previous_frames=2,
                preset="veryfast",
            ),
        )
    )
    config.update(overrides)
    return config


def bicubic_only_config(scale: int = 2, task: str = "sharpen") -> ml_collections.ConfigDict:
    """Plain bicubic at ``scale``: the setting of the published SR benchmark tables with
    ``task="upscale"`` (the input is the downscaled image), down-up with ``"sharpen"``."""
    return default_degradation_config(ops=("bicubic",), scale=scale, task=task)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def gaussian_kernel(kernel_size: int, sigma_x: float, sigma_y: float, angle: float = 0.0) -> np.ndarray:
    """A normalised (kernel_size, kernel_size) Gaussian, ``sigma_x`` along a direction ``angle`` degrees
    counter-clockwise from the x axis and ``sigma_y`` across it."""
    radius = kernel_size // 2
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    theta = math.radians(angle)
    # Coordinates in the kernel's own axes (image y points down, so the rotation flips sign).
    along = x * math.cos(theta) - y * math.sin(theta)
    across = x * math.sin(theta) + y * math.cos(theta)
    kernel = np.exp(-0.5 * ((along / sigma_x) ** 2 + (across / sigma_y) ** 2))
    return kernel / kernel.sum()


def motion_kernel(kernel_size: int, length: float, angle: float) -> np.ndarray:
    """A normalised linear motion kernel: a centred segment of ``length`` pixels at ``angle`` degrees,
    rasterised with bilinear weights so fractional lengths and angles are smooth."""
    radius = kernel_size // 2
    kernel = np.zeros((kernel_size, kernel_size))
    theta = math.radians(angle)
    offsets = np.linspace(-length / 2.0, length / 2.0, 4 * math.ceil(length) + 1)
    xs = radius + offsets * math.cos(theta)
    ys = radius - offsets * math.sin(theta)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        # Taps on the far edge of the last row/column carry zero weight only; clip them in.
        np.add.at(kernel, (np.minimum(y0 + dy, kernel_size - 1), np.minimum(x0 + dx, kernel_size - 1)), weight)
    return kernel / kernel.sum()


def _filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolves each channel with ``kernel``; the border is mirrored (BORDER_REFLECT_101)."""
    radius = kernel.shape[0] // 2
    padded = np.pad(image.astype(np.float32), ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    blurred = scipy.signal.fftconvolve(padded, kernel[:, :, None].astype(np.float32), mode="valid", axes=(0, 1))
    return _to_uint8(blurred)


class Op(Protocol):
    """One degradation step: uint8 (H, W, 3) in, uint8 of the same shape out.

    ``context`` and ``grid`` are what a crop needs to be degraded as part of its image (see the
    module docstring).
    """

    @property
    def context(self) -> int: ...

    @property
    def grid(self) -> int: ...

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class _KernelBlur:
    """A blur by a ``kernel_size`` kernel drawn per example; subclasses draw the kernel."""

    kernel_size: int
    grid = 1

    @property
    def context(self) -> int:
        return self.kernel_size // 2

    def kernel(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _filter(image, self.kernel(rng))


@dataclasses.dataclass(frozen=True)
class GaussianBlur(_KernelBlur):
    """Draws sigma_x; with probability ``anisotropic_prob`` also sigma_y and the angle, else isotropic.

    Evaluation uses one-point ranges and ``anisotropic_prob=1`` to pin the kernel.
    """

    sigma_x_range: tuple[float, float]
    sigma_y_range: tuple[float, float]
    angle_range: tuple[float, float]
    anisotropic_prob: float

    def kernel(self, rng: np.random.Generator) -> np.ndarray:
        sigma_x = rng.uniform(*self.sigma_x_range)
        if rng.random() < self.anisotropic_prob:
            sigma_y, angle = rng.uniform(*self.sigma_y_range), rng.uniform(*self.angle_range)
        else:
            sigma_y, angle = sigma_x, 0.0
        return gaussian_kernel(self.kernel_size, sigma_x, sigma_y, angle)


@dataclasses.dataclass(frozen=True)
class MotionBlur(_KernelBlur):
    length_range: tuple[float, float]
    angle_range: tuple[float, float]

    def kernel(self, rng: np.random.Generator) -> np.ndarray:
        length = rng.uniform(*self.length_range)
        angle = rng.uniform(*self.angle_range)
        return motion_kernel(self.kernel_size, length, angle)


@dataclasses.dataclass(frozen=True)
class BicubicDownUp:
    scales: tuple[int, ...]

    @property
    def context(self) -> int:
        return 4 * max(self.scales) if max(self.scales) > 1 else 0

    @property
    def grid(self) -> int:
        return math.lcm(*self.scales)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        scale = self.scales[rng.integers(len(self.scales))] if len(self.scales) > 1 else self.scales[0]
        if scale == 1:
            return image
        low = imresize(image, scale=1.0 / scale)
        return imresize(low, output_shape=image.shape[:2])


@dataclasses.dataclass(frozen=True)
class BicubicDown:
    """The upscale task's bicubic op: the image made ``scale`` times smaller (MATLAB imresize),
    as the published SR tables make their low-resolution inputs."""

    scale: int

    @property
    def context(self) -> int:
        return 2 * self.scale  # two low-resolution pixels each way

    @property
    def grid(self) -> int:
        return self.scale

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        del rng  # deterministic
        return imresize(image, scale=1.0 / self.scale)


@dataclasses.dataclass(frozen=True)
class GaussianNoise:
    sigma_range: tuple[float, float]
    context = 0
    grid = 1

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = rng.uniform(*self.sigma_range)
        noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
        return _to_uint8(image.astype(np.float32) + noise)


@dataclasses.dataclass(frozen=True)
class JpegCompression:
    quality_range: tuple[int, int]
    context = 0
    grid = 1

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        quality = int(rng.integers(self.quality_range[0], self.quality_range[1] + 1))
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        with Image.open(buffer) as decoded:
            return np.asarray(decoded.convert("RGB")).copy()


@dataclasses.dataclass(frozen=True)
class H264Compression:
    """The image as a frame of an H.264 stream (see the module docstring's ``h264``).

    ``shifts`` is None for training (each earlier frame's offset drawn per example, and the
    frame type by ``predicted_prob``) or the fixed offsets of the evaluation's earlier frames.
    """

    crf_range: tuple[int, int]
    predicted_prob: float
    max_shift: int
    previous_frames: int
    preset: str
    shifts: tuple[tuple[int, int], ...] | None = None
    context = 0
    grid = 1

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        crf = int(rng.integers(self.crf_range[0], self.crf_range[1] + 1))
        if self.shifts is not None:
            shifts = self.shifts
        elif rng.random() < self.predicted_prob:
            shifts = tuple(
                tuple(int(v) for v in rng.integers(-self.max_shift, self.max_shift + 1, size=2))
                for _ in range(self.previous_frames)
            )
        else:
            shifts = ()
        height, width = image.shape[:2]
        # 4:2:0 needs even sides; the mirrored margin also supplies the shifted frames' edges.
        margin = max((abs(v) for shift in shifts for v in shift), default=0)
        padded = np.pad(
            image, ((margin, margin + height % 2), (margin, margin + width % 2), (0, 0)), mode="symmetric"
        )
        even_height, even_width = height + height % 2, width + width % 2

        def frame(dy: int, dx: int) -> np.ndarray:
            return padded[margin + dy : margin + dy + even_height, margin + dx : margin + dx + even_width]

        clip = [frame(dy, dx) for dy, dx in shifts] + [frame(0, 0)]
        return encode_decode_h264(clip, crf, self.preset)[-1][:height, :width]


def encode_decode_h264(frames: Sequence[np.ndarray], crf: int, preset: str) -> list[np.ndarray]:
    """``frames`` (uint8 RGB of one even size) encoded as one H.264 clip (libx264, 4:2:0, the
    first frame intra, the rest predicted, no B-frames as in real-time streams) and decoded."""
    import av  # pylint: disable=import-outside-toplevel  # PyAV only where a codec runs

    height, width = frames[0].shape[:2]
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, 30), Fraction(30, 1)
    encoder.options = {"crf": str(crf), "preset": preset, "tune": "zerolatency", "threads": "1"}
    packets = []
    for index, frame in enumerate(frames):
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = index
        packets.extend(encoder.encode(video_frame))
    packets.extend(encoder.encode(None))
    decoder = av.CodecContext.create("h264", "r")
    decoded = [frame for packet in packets for frame in decoder.decode(packet)]
    decoded.extend(decoder.decode(None))
    if len(decoded) != len(frames):
        raise RuntimeError(f"H.264 round trip returned {len(decoded)} of {len(frames)} frames; report this image size.")
    return [frame.to_ndarray(format="rgb24") for frame in decoded]


@dataclasses.dataclass(frozen=True)
class WithProbability:
    """Applies ``op`` to a training example with probability ``prob``."""

    op: Op
    prob: float

    @property
    def context(self) -> int:
        return self.op.context

    @property
    def grid(self) -> int:
        return self.op.grid

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.op(image, rng) if rng.random() < self.prob else image


@dataclasses.dataclass(frozen=True)
class Degradation:
    """An ordered chain of ops; ``names`` are the config's op names, for logs and errors."""

    names: tuple[str, ...]
    ops: tuple[Op, ...]
    scale: int = 1  # output size = input size / scale (the upscale task's downscale)

    @property
    def context(self) -> int:
        """Pixels of real neighbourhood, per side, that a crop needs for an exact degradation."""
        total, factor = 0, 1
        for op in self.ops:
            total += factor * op.context
            if isinstance(op, BicubicDown):
                factor = op.scale  # later ops see low-resolution pixels
        return total

    @property
    def grid(self) -> int:
        """Crops must start (and, for an exact degradation, end) on multiples of this."""
        return math.lcm(1, *(op.grid for op in self.ops))

    def __call__(self, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Degrades a uint8 (H, W, 3) image; the result is uint8, (H, W, 3) in the sharpen task
        and (ceil(H / scale), ceil(W / scale), 3) in the upscale task."""
        image = hr
        for op in self.ops:
            image = op(image, rng)
        return image


# ---------------------------------------------------------------------------------------------
# Config validation and op construction. Every error names the config key and a valid value.


def _key(op: str, field: str) -> str:
    return f"degradation.{op}.{field}"


def _range(cfg: ml_collections.ConfigDict, op: str, field: str, *, low: float, high: float = math.inf) -> tuple[float, float]:
    values = tuple(cfg[op][field])
    if len(values) != 2 or not low <= values[0] <= values[1] <= high:
        bound = f"{low} <= low <= high" + ("" if high == math.inf else f" <= {high}")
        raise ValueError(f"{_key(op, field)}={values} must be a pair (low, high) with {bound}; fix the config.")
    return values


def _number(cfg: ml_collections.ConfigDict, op: str, field: str, *, low: float, high: float = math.inf) -> float:
    value = cfg[op][field]
    if not low <= value <= high:
        raise ValueError(f"{_key(op, field)}={value} must lie in [{low}, {high}]; fix the config.")
    return value


def _kernel_size(cfg: ml_collections.ConfigDict, op: str) -> int:
    size = cfg[op].kernel_size
    if size < 3 or size % 2 == 0:
        raise ValueError(f"{_key(op, 'kernel_size')}={size} must be an odd number >= 3, e.g. 21; fix the config.")
    return int(size)


def _gaussian_blur(cfg: ml_collections.ConfigDict, train: bool) -> Op:
    size = _kernel_size(cfg, "gaussian_blur")
    if train:
        sigmas = _range(cfg, "gaussian_blur", "train_sigma", low=1e-3)
        share = _number(cfg, "gaussian_blur", "train_anisotropic_prob", low=0.0, high=1.0)
        return GaussianBlur(size, sigmas, sigmas, (0.0, 180.0), share)
    sigma_x = _number(cfg, "gaussian_blur", "eval_sigma_x", low=1e-3)
    sigma_y = _number(cfg, "gaussian_blur", "eval_sigma_y", low=1e-3)
    angle = float(cfg.gaussian_blur.eval_angle)
    return GaussianBlur(size, (sigma_x, sigma_x), (sigma_y, sigma_y), (angle, angle), 1.0)


def _motion_blur(cfg: ml_collections.ConfigDict, train: bool) -> Op:
    size = _kernel_size(cfg, "motion_blur")
    if train:
        lengths = _range(cfg, "motion_blur", "train_length", low=1.0, high=size - 1)
        angles = _range(cfg, "motion_blur", "train_angle", low=-360.0, high=360.0)
    else:
        length = _number(cfg, "motion_blur", "eval_length", low=1.0, high=size - 1)
        lengths, angles = (length, length), (cfg.motion_blur.eval_angle,) * 2
    return MotionBlur(size, lengths, angles)


def _bicubic(cfg: ml_collections.ConfigDict, train: bool) -> Op:
    if not isinstance(cfg.scale, int) or cfg.scale < 1:
        raise ValueError(f"degradation.scale={cfg.scale} must be a positive integer such as 2, 3 or 4; fix the config.")
    scales = tuple(cfg.bicubic.train_scales)
    if not scales or any(not isinstance(s, int) or s < 1 for s in scales):
        raise ValueError(
            f"{_key('bicubic', 'train_scales')}={scales} must be a non-empty tuple of positive integers, e.g. (2, 3, 4)."
        )
    if cfg.scale not in scales:
        raise ValueError(
            f"degradation.scale={cfg.scale} is not among {_key('bicubic', 'train_scales')}={scales}; "
            "add it there so training covers the evaluation scale."
        )
    if cfg.task == "upscale":
        if scales != (cfg.scale,):
            raise ValueError(
                f"{_key('bicubic', 'train_scales')}={scales} must be ({cfg.scale},) in the upscale task: a "
                "model upscales by one factor, degradation.scale."
            )
        if cfg.bicubic.train_prob != 1.0:
            raise ValueError(
                f"{_key('bicubic', 'train_prob')}={cfg.bicubic.train_prob} must be 1.0 in the upscale task: every "
                "input is the downscaled image."
            )
        return BicubicDown(cfg.scale)
    return BicubicDownUp(scales if train else (cfg.scale,))


def _noise(cfg: ml_collections.ConfigDict, train: bool) -> Op:
    if train:
        return GaussianNoise(_range(cfg, "noise", "train_sigma", low=0.0))
    sigma = _number(cfg, "noise", "eval_sigma", low=0.0)
    return GaussianNoise((sigma, sigma))


def _jpeg(cfg: ml_collections.ConfigDict, train: bool) -> Op:
    if train:
        low, high = _range(cfg, "jpeg", "train_quality", low=1, high=100)
        return JpegCompression((int(low), int(high)))
    quality = int(_number(cfg, "jpeg", "eval_quality", low=1, high=100))
    return JpegCompression((quality, quality))


def _h264(cfg: ml_collections.ConfigDict, train: bool) -> Op:
    h264 = cfg.h264
    if h264.preset not in _X264_PRESETS:
        raise ValueError(
            f"{_key('h264', 'preset')}={h264.preset!r} is not an x264 preset; choose one of {', '.join(_X264_PRESETS)}."
        )
    frames = int(_number(cfg, "h264", "previous_frames", low=1, high=16))
    if train:
        low, high = _range(cfg, "h264", "train_crf", low=0, high=51)
        share = _number(cfg, "h264", "train_predicted_prob", low=0.0, high=1.0)
        max_shift = int(_number(cfg, "h264", "train_max_shift", low=0, high=32))
        return H264Compression((int(low), int(high)), share, max_shift, frames, h264.preset)
    crf = int(_number(cfg, "h264", "eval_crf", low=0, high=51))
    # A fixed pan of one pixel a frame down and to the right, ending on the kept frame.
    shifts = tuple((offset, offset) for offset in range(frames, 0, -1)) if h264.eval_predicted else ()
    return H264Compression((crf, crf), 1.0, 0, frames, h264.preset, shifts)


_X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"
)

_BUILDERS = {
    "gaussian_blur": _gaussian_blur,
    "motion_blur": _motion_blur,
    "bicubic": _bicubic,
    "noise": _noise,
    "jpeg": _jpeg,
    "h264": _h264,
}


def build_degradation(cfg: ml_collections.ConfigDict, *, train: bool) -> Degradation:
    """Builds the op chain ``cfg.ops`` (see the module docstring for the config form).

    Args:
      cfg: a degradation config such as ``default_degradation_config()``.
      train: random parameters from the ``train_*`` ranges (and ``train_prob``) when True;
        the fixed ``eval_*`` values, every op always applied, when False.

    Raises:
      ValueError: an unknown op name or an invalid value, named by its config key.
    """
    names: Sequence[str] = tuple(cfg.ops)
    if cfg.task not in TASKS:
        raise ValueError(f"degradation.task={cfg.task!r} is unknown; choose one of {', '.join(TASKS)}.")
    if cfg.task == "upscale" and "bicubic" not in names:
        raise ValueError(
            "The upscale task makes its low-resolution inputs with the bicubic op; add 'bicubic' to degradation.ops."
        )
    ops = []
    for name in names:
        if name not in _BUILDERS:
            raise ValueError(f"degradation.ops names unknown op {name!r}; choose among {', '.join(OP_NAMES)}.")
        op = _BUILDERS[name](cfg, train)
        if train:
            prob = _number(cfg, name, "train_prob", low=0.0, high=1.0)
            op = op if prob == 1.0 else WithProbability(op, prob)
        ops.append(op)
    return Degradation(names=names, ops=tuple(ops), scale=cfg.scale if cfg.task == "upscale" else 1)
