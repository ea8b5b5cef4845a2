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
import numpy as np

from kdjax import images, metrics

Example = Mapping[str, Any]


def to_unit_float(x: jax.Array) -> jax.Array:
    """uint8 images to float32 in [0, 1]; float images pass through unchanged."""
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 255.0
    return x.astype(jnp.float32)


def make_predict_fn(model) -> Callable[[Any, jax.Array], jax.Array]:
    """The named inference function of a model: ``predict(params, images) -> images``."""

    def predict(params, x):
        return model.apply({"params": params}, to_unit_float(x), train=False)

    return predict


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
) -> tuple[dict[str, dict[str, float]], list[dict[str, np.ndarray]]]:
    """Mean PSNR/SSIM of the degraded input and of each predictor over whole images.

    Args:
      predictors: name -> function from a (1, H, W, 3) uint8 batch to float outputs in [0, 1].
      examples: iterable of eval examples ``{"input", "target", "name"}``.
      crop_border: pixels removed from each border before measuring.
      num_keep: how many examples' images (input, outputs, target) to return, for grids.

    Returns:
      ``({"input": {...}, name: {...}}, kept)``, metric means per row.
    """
    example_metrics = jax.jit(_example_metrics, static_argnames="crop_border")
    totals: dict[str, dict[str, float]] = {}
    kept = []
    count = 0
    for example in examples:
        target = example["target"][None]
        outputs = {"input": to_unit_float(jnp.asarray(example["input"][None]))}
        outputs.update({name: fn(example["input"][None]) for name, fn in predictors.items()})
        for name, output in outputs.items():
            values = jax.device_get(example_metrics(output, target, crop_border=crop_border))
            row = totals.setdefault(name, {})
            for key, value in values.items():
                row[key] = row.get(key, 0.0) + float(np.mean(value))
        if len(kept) < num_keep:
            kept.append(
                {
                    "name": example["name"],
                    "target": example["target"],
                    **{
                        name: np.asarray(jax.device_get(metrics.quantize(out)[0])).astype(np.uint8)
                        for name, out in outputs.items()
                    },
                }
            )
        count += 1
    if not count:
        raise ValueError("The evaluation set is empty; check config.data.eval_source.")
    return {name: {k: v / count for k, v in row.items()} for name, row in totals.items()}, kept


def write_grid(path: Path, kept: list[dict[str, np.ndarray]], columns: Mapping[str, str]) -> None:
    """One row per image; ``columns`` maps a kept image key to its column label
    (e.g. input | teacher | student | ground truth)."""
    rows = [[example[key] for key in columns] for example in kept]
    images.write_image(path, images.image_grid(rows, list(columns.values())))


def evaluate_workdir(
    workdir: str | Path, *, which: str = "best", eval_dirs: Iterable[str] = ()
) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluates a trained workdir's model (EMA parameters) as its run did.

    Args:
      workdir: a training workdir.
      which: ``"best"`` or ``"latest"`` checkpoint.
      eval_dirs: image folders to evaluate on, each with the run's evaluation
        degradation; empty means the run's own validation set.

    Returns:
      ``{set name: {"input": metrics, "model": metrics}}``.
    """
    from kdjax import checkpoints, data
    from kdjax.models import build_model

    config, params = checkpoints.restore_params(workdir, which=which)
    predict = jax.jit(make_predict_fn(build_model(config.model)))
    predictors = {"model": functools.partial(predict, params)}
    data_configs = {"validation": config.data}
    for folder in eval_dirs:
        data_config = config.data.copy_and_resolve_references()
        data_config.eval_source = data.folder_source_config(folder)
        data_configs[Path(folder).name] = data_config
    if eval_dirs:
        del data_configs["validation"]
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
