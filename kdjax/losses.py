"""Training losses: pixel losses to ground truth, SSIM loss, and distillation.

All losses take images as float arrays in [0, 1], NHWC, and return scalars.
Distillation pairs a student feature map with a teacher feature map through a
learned 1x1 adapter (``FeatureAdapters``), resampled to the teacher's spatial
size, then matches them directly (L1/L2, relative to the teacher feature's RMS)
or through their spatial affinity
matrices (FAKD, He et al. 2020), which compares *where* features agree rather
than their values and so needs no channel match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dm_pix
import flax.linen as nn
import jax
import jax.numpy as jnp

PIXEL_LOSSES = ("l1", "mse", "charbonnier")
FEATURE_LOSSES = ("l1", "l2", "affinity")


def pixel_loss(pred: jax.Array, target: jax.Array, kind: str, charbonnier_eps: float = 1e-3) -> jax.Array:
    """Mean per-pixel loss between two image batches."""
    diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
    if kind == "l1":
        return jnp.mean(jnp.abs(diff))
    if kind == "mse":
        return jnp.mean(jnp.square(diff))
    if kind == "charbonnier":
        return jnp.mean(jnp.sqrt(jnp.square(diff) + charbonnier_eps**2))
    raise ValueError(f"Unknown pixel loss {kind!r}; set config.loss.pixel to one of {PIXEL_LOSSES}.")


def ssim_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """1 - SSIM (11x11 Gaussian window, sigma 1.5) on [0, 1] RGB, averaged over the batch."""
    ssim = dm_pix.ssim(pred.astype(jnp.float32), target.astype(jnp.float32), max_val=1.0)
    return 1.0 - jnp.mean(ssim)


class FeatureAdapters(nn.Module):
    """One learned 1x1 convolution per distilled (student, teacher) feature pair.

    The adapter maps the student's channels to the teacher's; the result is then
    resized (bilinear) to the teacher's spatial size, because students such as
    ``realtime`` work at a fraction of the input resolution.

    Attributes:
      pairs: (student feature name, teacher feature name) pairs.
      teacher_channels: channel count of each pair's teacher feature.
    """

    pairs: Sequence[tuple[str, str]]
    teacher_channels: Sequence[int]

    @nn.compact
    def __call__(
        self, student_features: Mapping[str, jax.Array], teacher_shapes: Sequence[tuple[int, ...]]
    ) -> list[jax.Array]:
        adapted = []
        for (student_name, teacher_name), channels, shape in zip(
            self.pairs, self.teacher_channels, teacher_shapes
        ):
            feature = nn.Conv(channels, (1, 1), name=f"{student_name}_to_{teacher_name}")(
                student_features[student_name].astype(jnp.float32)
            )
            if feature.shape[1:3] != tuple(shape[1:3]):
                feature = jax.image.resize(
                    feature, (feature.shape[0], *shape[1:3], channels), method="bilinear"
                )
            adapted.append(feature)
        return adapted


def _spatial_affinity(features: jax.Array, max_side: int) -> jax.Array:
    """Cosine similarity between all pairs of positions, after pooling to <= max_side."""
    n, h, w, c = features.shape
    factor = max(1, -(-max(h, w) // max_side))
    if factor > 1:
        features = nn.avg_pool(features, (factor, factor), strides=(factor, factor), padding="SAME")
    tokens = features.reshape(n, -1, c)
    tokens = tokens / (jnp.linalg.norm(tokens, axis=-1, keepdims=True) + 1e-6)
    return jnp.einsum("npc,nqc->npq", tokens, tokens)


def feature_loss(
    student: jax.Array, teacher: jax.Array, kind: str, affinity_max_side: int = 32
) -> jax.Array:
    """Distance between an adapted student feature and a (frozen) teacher feature."""
    teacher = jax.lax.stop_gradient(teacher.astype(jnp.float32))
    student = student.astype(jnp.float32)
    if kind in ("l1", "l2"):
        # Measured in units of the teacher feature's RMS, so one weight suits every
        # layer and teacher however large its activations grow.
        rms = jnp.sqrt(jnp.mean(jnp.square(teacher)) + 1e-12)
        diff = (student - teacher) / rms
        return jnp.mean(jnp.square(diff)) if kind == "l2" else jnp.mean(jnp.abs(diff))
    if kind == "affinity":
        return jnp.mean(
            jnp.abs(
                _spatial_affinity(student, affinity_max_side)
                - _spatial_affinity(teacher, affinity_max_side)
            )
        )
    raise ValueError(
        f"Unknown feature loss {kind!r}; set config.loss.feature_kd to one of {FEATURE_LOSSES}."
    )
