"""Evaluation on whole images: PSNR/SSIM per model, image grids, trained workdirs.

Metrics follow the published convention (see ``kdjax.metrics``): outputs are
quantized to 8 bits, ``crop_border`` pixels are removed, and PSNR/SSIM are
reported on RGB and on the Y channel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from kdjax import data, distill, images, metrics, weights
from kdjax.images import to_uint8, to_unit_float
from kdjax.imresize import imresize
from kdjax.models import build_model

Example = Mapping[str, Any]


def make_predict_fn(model) -> Callable[[Any, jax.Array], jax.Array]:
    """The named inference function of a model: ``predict(params, images) -> images``."""

    def predict(params, x):
        return model.apply({"params": params}, to_unit_float(x), train=False)

    return predict


def _at_output_size(example: Example) -> np.ndarray:
    """The degraded input at the target's size: itself (sharpen task) or, in the upscale task,
    upscaled with MATLAB bicubic: the bicubic baseline of the published tables."""
    if example["input"].shape == example["target"].shape:
        return example["input"]
    return imresize(example["input"], output_shape=example["target"].shape[:2])


@functools.partial(jax.jit, static_argnames="crop_border")
def _example_metrics(prediction: jax.Array, target: jax.Array, crop_border: int) -> dict[str, jax.Array]:
    """PSNR/SSIM on RGB and on Y of an 8-bit-quantized prediction (published convention)."""
    pred = metrics.quantize(prediction)
    target = target.astype(jnp.float32)
    return {
        "psnr_rgb": metrics.psnr(pred, target, crop_border=crop_border),
        "ssim_rgb": metrics.ssim(pred, target, crop_border=crop_border),
        "psnr_y": metrics.psnr(pred, target, crop_border=crop_border, y_channel=True),
        "ssim_y": metrics.ssim(pred, target, crop_border=crop_border, y_channel=True),
    }


def evaluate(
    predictors: Mapping[str, Callable[[np.ndarray], jax.Array]],
    examples: Iterable[Example],
    *,
    crop_border: int,
    num_keep: int = 0,
    measure_input: bool = True,
    views: Mapping[str, Callable[[Example], np.ndarray]] | None = None,
) -> tuple[dict[str, dict[str, float]], list[dict[str, np.ndarray]]]:
    """Mean PSNR/SSIM of the degraded input and of each predictor over whole images.

    The row "input" measures the degraded input itself, or in the upscale task the input
    upscaled with MATLAB bicubic (the published bicubic baseline).

    Args:
      predictors: name -> function from a (1, H, W, 3) uint8 batch to float outputs in [0, 1].
      examples: iterable of eval examples ``{"input", "target", "name"}``.
      crop_border: pixels removed from each border before measuring.
      num_keep: how many examples' images (input, outputs, target) to return, for grids.
      measure_input: also measure (and keep) the degraded input, as row ``"input"``.
      views: name -> the image that predictor sees of an example, instead of its input (an
        upscaling teacher of a sharpen run sees the target's low-resolution view).

    Returns:
      ``({"input": {...}, name: {...}}, kept)``, metric means per row.
    """
    totals: dict[str, dict[str, float]] = {}
    kept = []
    count = 0
    views = views or {}
    for example in examples:
        target = example["target"][None]
        height, width = target.shape[1:3]
        outputs = {"input": to_unit_float(jnp.asarray(_at_output_size(example)[None]))} if measure_input else {}
        for name, fn in predictors.items():
            if name in views:
                # A view may be mirrored to a multiple of the predictor's scale: its output is
                # then a few rows or columns larger than the target.
                outputs[name] = fn(views[name](example)[None])[:, :height, :width]
            else:
                outputs[name] = fn(example["input"][None])
        for name, output in outputs.items():
            values = jax.device_get(_example_metrics(output, target, crop_border=crop_border))
            row = totals.setdefault(name, {})
            for key, value in values.items():
                row[key] = row.get(key, 0.0) + float(np.mean(value))
        if len(kept) < num_keep:
            kept.append(
                {
                    "name": example["name"],
                    "target": example["target"],
                    **{
                        name: np.asarray(jax.device_get(to_uint8(out[0])))
                        for name, out in outputs.items()
                    },
                }
            )
        count += 1
    if not count:
        raise ValueError("The evaluation set is empty; check config.data.eval_source.")
    return {name: {k: v / count for k, v in row.items()} for name, row in totals.items()}, kept


# Each grid image is followed by a zoomed centre crop, where sharpening is visible.
GRID_ZOOM_CROP = 96
GRID_ZOOM_FACTOR = 3


def _zoomed_centre(image: np.ndarray) -> np.ndarray:
    side = min(GRID_ZOOM_CROP, *image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    crop = image[top : top + side, left : left + side]
    return np.repeat(np.repeat(crop, GRID_ZOOM_FACTOR, axis=0), GRID_ZOOM_FACTOR, axis=1)


def write_grid(path: Path, kept: list[dict[str, np.ndarray]], columns: Mapping[str, str]) -> None:
    """Two rows per image, whole and a zoomed centre crop; ``columns`` maps a kept image key
    to its column label (e.g. input | teacher | student | ground truth)."""
    rows = []
    for example in kept:
        row = [example[key] for key in columns]
        rows += [row, [_zoomed_centre(image) for image in row]]
    images.write_image(path, images.image_grid(rows, list(columns.values())))


class Evaluator:
    """Periodic evaluation of a training run on its validation images.

    The degraded input and the frozen teacher (if any) are measured once; the
    model is measured at every call. Each call logs PSNR/SSIM, writes them to
    TensorBoard and writes a grid input | teacher | model | ground truth.
    Evaluation runs on this host's first local device, independently of the
    training mesh: validation images differ in size and are not worth sharding.
    """

    def __init__(
        self,
        config,
        model,
        *,
        teacher=None,
        writer=None,
        grid_dir: Path | None = None,
    ):
        self._crop_border = config.eval.crop_border
        self._num_keep = config.eval.num_grid_images
        self._examples = list(data.make_eval_dataset(config.data))
        self._predict = jax.jit(make_predict_fn(model))
        self._device = jax.local_devices()[0]
        self._writer = writer
        self._grid_dir = grid_dir
        fixed, views = {}, {}
        self._columns = {"input": "input"}
        if teacher is not None:
            teacher_predict = functools.partial(
                jax.jit(make_predict_fn(teacher.model)), _local_copy(teacher.params, self._device)
            )
            fixed["teacher"] = teacher_predict
            if teacher.model.scale != model.scale:
                # An upscaler teaching a sharpen run sees what it saw when labelling.
                scale = teacher.model.scale
                views["teacher"] = lambda example: distill.low_resolution_view(example["target"], scale)
            self._columns["teacher"] = f"teacher ({teacher.model_config.name})"
        self._columns["model"] = f"{model.role} ({config.model.name})"
        self._columns["target"] = "ground truth"
        self._fixed_results, self._fixed_kept = evaluate(
            fixed, self._examples, crop_border=self._crop_border, num_keep=self._num_keep, views=views
        )

    def __call__(self, step: int, params) -> dict[str, dict[str, float]]:
        """Evaluates ``params`` (replicated over the mesh, or on one device) at ``step``."""
        predict = functools.partial(self._predict, _local_copy(params, self._device))
        results, kept = evaluate(
            {"model": predict},
            self._examples,
            crop_border=self._crop_border,
            num_keep=self._num_keep,
            measure_input=False,
        )
        results = {**self._fixed_results, **results}
        summary = ", ".join(
            f"{name} {row['psnr_y']:.2f} dB/{row['ssim_y']:.4f}" for name, row in results.items()
        )
        logging.info("eval @ step %d (PSNR/SSIM on Y): %s", step, summary)
        if self._writer is not None:
            for name, row in results.items():
                for key, value in row.items():
                    self._writer.add_scalar(f"eval/{name}/{key}", value, step)
        if self._grid_dir is not None and kept:
            for example, fixed in zip(kept, self._fixed_kept):
                example.update({k: v for k, v in fixed.items() if k not in example})  # input, teacher
            write_grid(self._grid_dir / f"step_{step:07d}.png", kept, self._columns)
        return results


def _local_copy(params, device: jax.Device):
    """This host's copy of (possibly multi-host replicated) parameters, on ``device``."""
    return jax.device_put(jax.tree.map(lambda a: a.addressable_data(0), params), device)


def evaluate_workdir(
    workdir: str | Path,
    *,
    which: str = "best",
    eval_dirs: Iterable[str] = (),
    degradation: ml_collections.ConfigDict | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluates a trained workdir's model (EMA parameters) as its run did.

    Args:
      workdir: a training workdir, a model folder or a released model's name.
      which: ``"best"`` or ``"latest"`` checkpoint.
      eval_dirs: image folders to evaluate on, each with the run's evaluation
        degradation; empty means the run's own validation set.
      degradation: evaluate under this degradation config instead of the run's (e.g. a
        ``kdjax.tasks`` setting, to compare models trained for different inputs); its scale
        and task must fit the model.

    Returns:
      ``{set name: {"input": metrics, "model": metrics}}``.
    """
    config, params = weights.restore_params(workdir, which=which)
    model = build_model(config.model)
    predict = jax.jit(make_predict_fn(model))
    predictors = {"model": functools.partial(predict, params)}
    run_data = config.data.copy_and_resolve_references()
    if degradation is not None:
        run_data.degradation = degradation
        data.check_task(run_data)
        if data.output_scale(run_data) != model.scale:
            raise ValueError(
                f"{workdir} outputs images {model.scale}x its input's size but the requested degradation "
                f"({degradation.task}, scale {degradation.scale}) needs {data.output_scale(run_data)}x; "
                "evaluate it under a degradation of its own task."
            )
    data_configs = {}
    for folder in eval_dirs:
        data_config = run_data.copy_and_resolve_references()
        data_config.eval_source = data.folder_source_config(folder)
        data_configs[Path(folder).name] = data_config
    data_configs = data_configs or {"validation": run_data}
    return {
        name: evaluate(predictors, data.make_eval_dataset(data_config), crop_border=config.eval.crop_border)[0]
        for name, data_config in data_configs.items()
    }


def print_workdir_results(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> None:
    print("| set | model | PSNR Y (dB) | SSIM Y | PSNR RGB (dB) | SSIM RGB |")
    print("|---|---|---|---|---|---|")
    for set_name, rows in results.items():
        for name, row in rows.items():
            print(
                f"| {set_name} | {name} | {row['psnr_y']:.2f} | {row['ssim_y']:.4f} | "
                f"{row['psnr_rgb']:.2f} | {row['ssim_rgb']:.4f} |"
            )
