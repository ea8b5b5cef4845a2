"""Knowledge distillation: the frozen teacher, its labels, feature adapters and the KD losses.

Everything a distillation run adds to plain training lives here; ``kdjax.train`` calls it:

* ``load_teacher``: the teacher restored from any model folder or training workdir (its own
  model config is read there and recorded in the student's config), frozen: its parameters
  are an argument of the step, never part of the student's state or checkpoints.
* ``teacher_targets``: the teacher's output (and tapped features) for a batch, either run
  inside the compiled step or read from labels the batch already carries.
* ``label_degraded_images``: the teacher's output on every stored degraded training image
  (``kdjax.data.degraded``), computed once at full size: the per-image label cache that lets
  students train on the full stream at the cost of a student step (``data.cache_variants`` > 0
  and ``teacher.in_step`` False).
* ``label_zoom_views``: the teacher's output on two auxiliary views of every stored upscale
  image (zoomed in and out), the labels of data-upcycling KD (``loss.aux_kd_weight``).
* ``TeacherLabelCache``: the first ``config.pool_batches`` batches of the stream labelled by
  the teacher once (its output and the tapped features, the features as float16), reused by
  the next run with the same data and teacher (a suite distilling several students pays once).
* ``parse_feature_pairs``, ``FeatureAdapters``, ``build_adapters``: which student feature is
  matched to which teacher feature, through a learned 1x1 adapter resized to the teacher's
  spatial size.
* ``feature_loss`` and ``kd_loss_terms``: output KD (a pixel loss to the teacher's output), its
  twin on the auxiliary views (DUKD, Zhang et al. 2023) and feature KD (L1/L2 relative to the teacher feature's RMS, or FAKD spatial affinity, He et
  al. 2020, which compares *where* features agree rather than their values).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from kdjax import losses, parallel, weights
from kdjax.data import input_size, make_train_dataset, output_scale
from kdjax.data import cache_files
from kdjax.data.degraded import VIEWS, example_names, serialized, zoom_views
from kdjax.images import quantize, to_unit_float
from kdjax.imresize import imresize
from kdjax.models import build_model, feature_shapes

FEATURE_LOSSES = ("l1", "l2", "affinity")


def uses_teacher(config: ml_collections.ConfigDict) -> bool:
    """Whether any distillation weight is set (then ``config.teacher.workdir`` is needed)."""
    loss = config.loss
    return loss.output_kd_weight > 0 or loss.feature_kd_weight > 0 or loss.aux_kd_weight > 0


def uses_label_cache(config: ml_collections.ConfigDict) -> bool:
    """Whether the teacher's labels come from the per-image cache rather than the step or a pool."""
    return bool(config.teacher.workdir) and config.data.cache_variants > 0 and not config.teacher.in_step


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises a one-sentence ``ValueError`` for distillation settings that cannot run."""
    if config.loss.feature_kd not in FEATURE_LOSSES:
        raise ValueError(
            f"config.loss.feature_kd={config.loss.feature_kd!r} is not one of {FEATURE_LOSSES}; "
            "set --config.loss.feature_kd to one of them."
        )
    parse_feature_pairs(config.loss.feature_pairs)
    if config.loss.feature_kd_weight > 0 and uses_label_cache(config):
        raise ValueError(
            "Feature KD needs the teacher's features, which the per-image label cache does not store; "
            "set --config.teacher.in_step=True (the teacher runs in every step) or --config.loss.feature_kd_weight=0."
        )
    if config.loss.aux_kd_weight > 0 and (config.data.degradation.task != "upscale" or not uses_label_cache(config)):
        raise ValueError(
            "loss.aux_kd_weight labels zoomed views of upscale examples in the per-image label cache; "
            "use the upscale task with --config.data.cache_variants > 0 and teacher.in_step=False, or set it to 0."
        )
    if config.data.cache_variants > 0 and config.pool_batches > 0:
        raise ValueError(
            "config.pool_batches and config.data.cache_variants both replace the data stream; set one of them to 0."
        )
    if uses_teacher(config) and not config.teacher.workdir:
        raise ValueError(
            "The config has distillation weights (loss.output_kd_weight / feature_kd_weight / aux_kd_weight) "
            "but no teacher; set --config.teacher.workdir to a trained teacher's workdir or set "
            "both weights to 0."
        )


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A frozen teacher: its module, its model config and its parameters (on the mesh)."""

    model: nn.Module
    model_config: ml_collections.ConfigDict
    params: Any


def load_teacher(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Teacher | None:
    """The frozen teacher of ``config.teacher`` (replicated over ``mesh``), or None.

    The teacher's own model config is read from its folder and recorded in
    ``config.teacher.model``, so the student's workdir documents what it learned from.
    """
    if not config.teacher.workdir:
        return None
    teacher_config, params = weights.restore_params(
        config.teacher.workdir, which=config.teacher.which, ema=config.teacher.ema
    )
    model = build_model(teacher_config.model)
    if model.scale != output_scale(config.data) and not sees_low_resolution_view(config, model.scale):
        raise ValueError(
            f"The teacher in {config.teacher.workdir} outputs images {model.scale}x its input's size but this "
            f"run's task ({config.data.degradation.task}) needs {output_scale(config.data)}x; distil from a "
            "teacher trained for the same task and scale (an upscaler of data.degradation.scale can teach the "
            "sharpen task through the per-image label cache, data.cache_variants > 0)."
        )
    with config.unlocked():
        config.teacher.model = teacher_config.model
    # Restored on one local device; via host memory to every device of the mesh.
    return Teacher(
        model=model,
        model_config=teacher_config.model,
        params=parallel.replicate(jax.device_get(params), mesh),
    )


def sees_low_resolution_view(config: ml_collections.ConfigDict, teacher_scale: int) -> bool:
    """Whether an upscaling teacher labels a sharpen run: it then sees each example's
    ``low_resolution_view`` (``label_degraded_images``), which needs the per-image cache."""
    degradation = config.data.degradation
    return (
        teacher_scale > 1 and degradation.task == "sharpen" and degradation.scale == teacher_scale
        and uses_label_cache(config)
    )


def low_resolution_view(target: np.ndarray, scale: int) -> np.ndarray:
    """What an upscaling teacher of ``scale`` sees of a same-size (sharpen) example: its sharp
    (H, W, 3) target downscaled by ``scale`` with MATLAB bicubic, after mirroring it at the
    bottom/right to a multiple of the scale (sharpen targets need not be one).

    For bicubic down-up inputs this is the low-resolution image the input was made from, so
    the teacher knows nothing the input does not; for blur, noise or JPEG it is the clean scene,
    a privileged view. Not the input downscaled: MATLAB's antialiased downscaling of an already
    down-up image blurs it again, and BSRN x2 on that view scored 34.48 dB on Set5 (38.08 on the
    true low-resolution image), so its labels taught a student less than the ground truth did.
    """
    mirror = [(0, -target.shape[0] % scale), (0, -target.shape[1] % scale), (0, 0)]
    padded = np.pad(target, mirror, mode="symmetric")
    return imresize(padded, output_shape=(padded.shape[0] // scale, padded.shape[1] // scale))


def parse_feature_pairs(spec: str) -> list[tuple[str, str]]:
    """Parses ``"block_1:group_0,block_3:group_1"`` into (student, teacher) name pairs."""
    pairs = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        student, sep, teacher = item.partition(":")
        if not sep or not student or not teacher:
            raise ValueError(
                f"config.loss.feature_pairs entry {item!r} is not of the form "
                "'student_feature:teacher_feature' (e.g. 'block_1:group_0')."
            )
        pairs.append((student.strip(), teacher.strip()))
    return pairs


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


@dataclasses.dataclass(frozen=True)
class AdapterSpec:
    """The adapters of a feature-distillation run and the feature shapes they were built for."""

    adapters: FeatureAdapters
    student_shapes: dict[str, tuple[int, ...]]
    teacher_shapes: dict[str, tuple[int, ...]]

    def init(self, rng: jax.Array) -> Any:
        student_features = {name: jnp.zeros(shape, jnp.float32) for name, shape in self.student_shapes.items()}
        teacher_shapes = [self.teacher_shapes[t] for _, t in self.adapters.pairs]
        return self.adapters.init(rng, student_features, teacher_shapes)["params"]


def build_adapters(
    config: ml_collections.ConfigDict, model: nn.Module, teacher_model: nn.Module | None
) -> AdapterSpec | None:
    """The feature adapters for ``config.loss.feature_pairs`` (None without feature KD).

    Checks that every named feature exists, for a training patch.
    """
    if not config.loss.feature_kd_weight:
        return None
    if teacher_model is None:
        raise ValueError(
            "config.loss.feature_kd_weight > 0 needs a teacher; set config.teacher.workdir "
            "to a trained teacher's workdir, or set --config.loss.feature_kd_weight=0."
        )
    pairs = parse_feature_pairs(config.loss.feature_pairs)
    if not pairs:
        raise ValueError(
            "config.loss.feature_kd_weight > 0 but config.loss.feature_pairs is empty; "
            "name the pairs to match, e.g. --config.loss.feature_pairs=block_1:group_0."
        )
    patch = input_size(config.data)
    image_shape = (1, patch, patch, 3)
    student_shapes = feature_shapes(model, image_shape)
    teacher_shapes = feature_shapes(teacher_model, image_shape)
    for student_name, teacher_name in pairs:
        for name, shapes, who in ((student_name, student_shapes, "student"), (teacher_name, teacher_shapes, "teacher")):
            if name not in shapes:
                raise ValueError(
                    f"config.loss.feature_pairs names {who} feature {name!r}, which the "
                    f"{who} does not have; choose among {sorted(shapes)}."
                )
    adapters = FeatureAdapters(
        pairs=tuple(pairs), teacher_channels=tuple(teacher_shapes[t][-1] for _, t in pairs)
    )
    return AdapterSpec(adapters, student_shapes, teacher_shapes)


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


def teacher_targets(
    teacher_model: nn.Module | None,
    teacher_params: Any,
    inputs: jax.Array,
    batch: Mapping[str, jax.Array],
    use_features: bool,
) -> tuple[jax.Array | None, dict[str, jax.Array] | None]:
    """The teacher's output and features for a batch, inside the compiled step.

    Runs the teacher when it is given; otherwise reads the labels a ``TeacherLabelCache``
    put in the batch (``teacher_output``, ``teacher_features``); ``(None, None)`` without KD.
    """
    if teacher_model is not None:
        out = teacher_model.apply({"params": teacher_params}, inputs, train=False, return_features=use_features)
        output, features = out if use_features else (out, None)
        return jax.lax.stop_gradient(output), features
    if "teacher_output" in batch:
        features = jax.tree.map(lambda f: f.astype(jnp.float32), batch.get("teacher_features"))
        return to_unit_float(batch["teacher_output"]), features
    return None, None


def kd_loss_terms(
    loss_cfg: ml_collections.ConfigDict,
    prediction: jax.Array,
    student_features: Mapping[str, jax.Array] | None,
    teacher_output: jax.Array | None,
    teacher_features: Mapping[str, jax.Array] | None,
    adapters: FeatureAdapters | None,
    adapter_params: Any,
    aux_prediction: jax.Array | None = None,
    aux_teacher_output: jax.Array | None = None,
) -> dict[str, tuple[float, jax.Array]]:
    """The distillation terms of the loss, name -> (weight, value); empty without KD.

    ``aux_prediction`` is the student's output on the batch's auxiliary views, whose only
    label is ``aux_teacher_output`` (``loss.aux_kd_weight``).
    """
    terms = {}
    if loss_cfg.output_kd_weight:
        terms["output_kd"] = (
            loss_cfg.output_kd_weight,
            losses.pixel_loss(prediction, teacher_output, loss_cfg.output_kd, loss_cfg.charbonnier_eps),
        )
    if loss_cfg.aux_kd_weight:
        terms["aux_kd"] = (
            loss_cfg.aux_kd_weight,
            losses.pixel_loss(aux_prediction, aux_teacher_output, loss_cfg.output_kd, loss_cfg.charbonnier_eps),
        )
    if loss_cfg.feature_kd_weight:
        teacher_maps = [teacher_features[name] for _, name in adapters.pairs]
        adapted = adapters.apply({"params": adapter_params}, student_features, [t.shape for t in teacher_maps])
        per_pair = [
            feature_loss(s, t, loss_cfg.feature_kd, loss_cfg.affinity_max_side) for s, t in zip(adapted, teacher_maps)
        ]
        terms["feature_kd"] = (loss_cfg.feature_kd_weight, jnp.mean(jnp.stack(per_pair)))
    return terms


class TeacherLabelCache:
    """The training pool: the stream's first ``config.pool_batches`` batches, labelled by the teacher.

    With a teacher, each batch gains ``teacher_output`` and the ``teacher_features`` that
    ``config.loss.feature_pairs`` names (stored as float16 to halve their memory), even when
    their weight is 0, so that variants with and without feature KD share a pool. The last
    labelled pool is kept and returned again for the same data, teacher and feature taps.
    """

    def __init__(self):
        self._key: str | None = None
        self._pool: list[dict[str, Any]] = []

    def pool(
        self, config: ml_collections.ConfigDict, teacher: Teacher | None, mesh: jax.sharding.Mesh
    ) -> list[dict[str, Any]]:
        feature_names = (
            sorted({name for _, name in parse_feature_pairs(config.loss.feature_pairs)}) if teacher is not None else []
        )
        key = json.dumps(
            [config.data.to_dict(), config.batch_size, config.seed, config.pool_batches,
             config.teacher.to_dict(), feature_names],
            sort_keys=True, default=str,
        )
        if teacher is not None and key == self._key:
            logging.info("Reusing the teacher-labelled pool of %d batches.", config.pool_batches)
            return self._pool
        pool = _label_pool(config, teacher, feature_names, mesh)
        if teacher is not None:
            self._key, self._pool = key, pool
        return pool


def _label_pool(
    config: ml_collections.ConfigDict, teacher: Teacher | None, feature_names: list[str], mesh: jax.sharding.Mesh
) -> list[dict[str, Any]]:
    @jax.jit
    def label(params, images):
        output, features = teacher.model.apply(
            {"params": params}, to_unit_float(images), train=False, return_features=True
        )
        return output, {name: features[name].astype(jnp.float16) for name in feature_names}

    stream = iter(make_train_dataset(config.data, global_batch_size=config.batch_size, seed=config.seed))
    pool = []
    start = time.perf_counter()
    for index in range(config.pool_batches):
        local = next(stream)
        if teacher is not None:
            images = parallel.shard_batch({"input": local["input"]}, mesh)["input"]
            output, features = jax.tree.map(_local_rows, label(teacher.params, images))
            local = {**local, "teacher_output": output, "teacher_features": features}
            if (index + 1) % 16 == 0:
                logging.info(
                    "Teacher labelled %d/%d pool batches (%.1f s per batch).",
                    index + 1, config.pool_batches, (time.perf_counter() - start) / (index + 1),
                )
        pool.append(local)
    stream.close()
    return pool


def _local_rows(array: jax.Array) -> np.ndarray:
    """This host's rows of a batch-sharded array."""
    return np.concatenate([np.asarray(shard.data) for shard in array.addressable_shards], axis=0)


# Stored images are padded up to a multiple of this before the teacher sees them, so that a
# few compiled shapes serve images of every size (each new shape costs a compilation).
_LABEL_SIZE_BUCKET = 32


def teacher_digest(teacher: Teacher) -> str:
    """A short hash of the teacher's model config and parameter values: its labels' identity."""
    digest = hashlib.sha256(json.dumps(teacher.model_config.to_dict(), sort_keys=True, default=str).encode())
    for leaf in jax.tree.leaves(jax.device_get(teacher.params)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()[:16]


def _bucketed_labeller(teacher: Teacher):
    """``label(image) -> uint8 output`` of the teacher on one whole uint8 image, compiled once
    per 32-px size bucket: the image is mirror-padded (reflected) at the bottom/right up to the
    bucket and the output cropped back, so the last few rows and columns see mirrored content
    where the teacher would see its convolutions' zero padding (a small difference traded for
    a few compilations instead of one per image size)."""

    @jax.jit
    def label(params, padded_image):
        output = teacher.model.apply({"params": params}, to_unit_float(padded_image)[None], train=False)
        return quantize(output[0], np.uint8)

    params = jax.device_get(teacher.params)
    scale = teacher.model.scale

    def label_image(image: np.ndarray) -> np.ndarray:
        # Padded here, not inside `label`: the compiled function then sees one shape per bucket.
        bucket_pad = [(0, -image.shape[0] % _LABEL_SIZE_BUCKET), (0, -image.shape[1] % _LABEL_SIZE_BUCKET), (0, 0)]
        output = np.asarray(label(params, np.pad(image, bucket_pad, mode="reflect")))
        return output[: image.shape[0] * scale, : image.shape[1] * scale]

    return label_image


def label_degraded_images(folder: Path, teacher: Teacher) -> Path:
    """The teacher's output (uint8) on every stored degraded image in ``folder``, computed once.

    Returns ``folder/teacher-<digest>``; labels already there (a complete folder, or the files
    an interrupted labelling wrote) are kept once checked against the folder's manifest (a
    damaged one is labelled again, with a warning: ``kdjax.data.cache_files``). An upscaling teacher labelling same-size (sharpen)
    examples sees each one's ``low_resolution_view`` (labels kept in ``teacher-<digest>-lr``).
    Images are padded to size buckets (``_bucketed_labeller``).
    """
    with np.load(folder / "images" / f"{example_names(folder)[0]}.npz") as first:
        sharpen = first["input"].shape == first["target"].shape and teacher.model.scale > 1
    out_dir = folder / f"teacher-{teacher_digest(teacher)}{'-lr' if sharpen else ''}"
    scale = teacher.model.scale
    label_image = _bucketed_labeller(teacher)

    def label(name: str, stored: Mapping[str, np.ndarray]) -> bytes:
        low, (height, width) = stored["input"], stored["target"].shape[:2]
        if sharpen:
            low = low_resolution_view(stored["target"], scale)
        output = label_image(low)[:height, :width]
        if output.shape[:2] != (height, width):
            raise ValueError(
                f"The teacher's output on {name} is {output.shape[1]}x{output.shape[0]} where its target is "
                f"{width}x{height}; delete {out_dir} and report this data config."
            )
        return serialized(lambda file: np.save(file, output))

    _label_each_example(folder, out_dir, ".npy", "Teacher labels", label, teacher)
    return out_dir


def label_zoom_views(folder: Path, labels_dir: Path, teacher: Teacher) -> None:
    """The teacher's output on the two auxiliary views (``kdjax.data.degraded.zoom_views``) of
    every stored upscale example, computed once into ``labels_dir/views`` (resumable file by
    file like ``label_degraded_images``); each view is at most 128 pixels a side, so this costs
    about 0.1 output megapixels of teacher work per example."""
    label_image = _bucketed_labeller(teacher)

    def label(name: str, stored: Mapping[str, np.ndarray]) -> bytes:
        inputs = zoom_views(stored["input"], stored["target"], teacher.model.scale, name)
        outputs = {key.replace("_input", "_output"): label_image(image) for key, image in inputs.items()}
        return serialized(lambda file: np.savez(file, **inputs, **outputs))

    _label_each_example(folder, labels_dir / VIEWS, ".npz", "Teacher labels of zoomed views", label, teacher)


def _label_each_example(folder: Path, out_dir: Path, suffix: str, description: str, label, teacher: Teacher) -> None:
    """Fills ``out_dir/<name><suffix>`` for every stored example of ``folder`` with
    ``label(name, stored) -> bytes``, through `cache_files.fill`: files an interrupted labelling
    wrote are kept, and in a complete folder a damaged label is labelled again, with a warning."""

    def make(file_name: str) -> bytes:
        name = file_name.removesuffix(suffix)
        with np.load(folder / "images" / f"{name}.npz") as stored:
            return label(name, stored)

    cache_files.fill(
        out_dir, [f"{name}{suffix}" for name in example_names(folder)], make, description=description,
        remedy="labelling it again with the teacher",
        complete_text=json.dumps({"teacher": teacher.model_config.to_dict()}, default=str) + "\n",
    )
