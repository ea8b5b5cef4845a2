"""Losses: values on known inputs, adapters' shapes, affinity invariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import distill, losses


def test_pixel_losses_match_their_definitions():
    pred = jnp.full((1, 4, 4, 3), 0.5)
    target = jnp.full((1, 4, 4, 3), 0.2)
    assert float(losses.pixel_loss(pred, target, "l1")) == pytest.approx(0.3, abs=1e-6)
    assert float(losses.pixel_loss(pred, target, "mse")) == pytest.approx(0.09, abs=1e-6)
    assert float(losses.pixel_loss(pred, target, "charbonnier", 1e-3)) == pytest.approx(
        np.sqrt(0.09 + 1e-6), abs=1e-6
    )
    with pytest.raises(ValueError, match="config.loss.pixel"):
        losses.pixel_loss(pred, target, "l3")


def test_ssim_loss_is_zero_for_identical_images_and_positive_otherwise():
    image = jax.random.uniform(jax.random.key(0), (2, 24, 24, 3))
    assert float(losses.ssim_loss(image, image)) == pytest.approx(0.0, abs=1e-5)
    assert float(losses.ssim_loss(image, 1.0 - image)) > 0.5


def test_adapters_map_student_features_to_teacher_channels_and_resolution():
    adapters = distill.FeatureAdapters(pairs=(("block_0", "group_0"),), teacher_channels=(12,))
    student = {"block_0": jnp.ones((2, 8, 8, 5))}
    teacher_shapes = [(2, 16, 16, 12)]
    params = adapters.init(jax.random.key(0), student, teacher_shapes)
    (adapted,) = adapters.apply(params, student, teacher_shapes)
    assert adapted.shape == (2, 16, 16, 12)


def test_affinity_loss_ignores_channel_count_and_scale_but_sees_structure():
    key1, key2 = jax.random.split(jax.random.key(1))
    teacher = jax.random.normal(key1, (1, 8, 8, 6))
    # Same spatial structure, features scaled: cosine affinities are identical.
    assert float(distill.feature_loss(3.0 * teacher, teacher, "affinity")) == pytest.approx(0.0, abs=1e-5)
    other = jax.random.normal(key2, (1, 8, 8, 6))
    assert float(distill.feature_loss(other, teacher, "affinity")) > 0.1


def test_feature_loss_passes_no_gradient_to_the_teacher():
    student = jnp.ones((1, 4, 4, 2))
    teacher = jnp.zeros((1, 4, 4, 2))
    grad_teacher = jax.grad(lambda t: distill.feature_loss(student, t, "l2"))(teacher)
    assert float(jnp.abs(grad_teacher).max()) == 0.0
    with pytest.raises(ValueError, match="config.loss.feature_kd"):
        distill.feature_loss(student, teacher, "cosine")
