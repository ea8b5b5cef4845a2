"""Suites: runs in order, a student distilled from an earlier run, extra evaluation
sets and per-frame timing in one results table."""

import json

import ml_collections
import pytest

from kdjax import suite
from kdjax.models import model_config
from test_train import TINY_TEACHER, tiny_config


def _suite(tmp_path, order):
    teacher = tiny_config(tmp_path, model=model_config("swin_tiny", **TINY_TEACHER), steps=2)
    student = tiny_config(tmp_path, steps=2)
    student.teacher.workdir = "@teacher"
    student.loss.output_kd_weight = 1.0
    config = ml_collections.ConfigDict()
    config.runs = ml_collections.ConfigDict(dict(teacher=teacher, student=student))
    config.order = order
    config.labels = ml_collections.ConfigDict(dict(student="student with KD"))
    config.eval_dirs = (student.data.eval_source.paths[0],)
    config.timing = ml_collections.ConfigDict(dict(runs=("student",), height=24, width=40, repeats=2))
    return config


def test_suite_trains_in_order_and_writes_one_table(tmp_path):
    rows = suite.run_suite(_suite(tmp_path, ("teacher", "student")), tmp_path / "suite")
    saved = json.loads((tmp_path / "suite" / "results.json").read_text())
    assert [row["label"] for row in saved] == ["input (degraded)", "teacher", "student with KD"]
    assert saved == json.loads(json.dumps(rows))
    for row in saved:
        assert set(row["sets"]) == {"eval_images"}
    # The extra set here is the validation folder itself: the same numbers twice.
    assert saved[2]["sets"]["eval_images"]["psnr_y"] == pytest.approx(saved[2]["psnr_y"], abs=1e-4)
    assert saved[2]["ms_per_frame"] > 0 and "ms_per_frame" not in saved[1]
    table = (tmp_path / "suite" / "results.md").read_text()
    # Named evaluation sets replace the validation columns.
    assert "| model | seeds | eval_images PSNR Y (dB) | eval_images SSIM Y | params |" in table
    assert "ms / 40x24 frame (cpu)" in table
    assert table.count("\n") == 2 + len(saved)
    loaded = json.loads((tmp_path / "suite" / "student" / "config.json").read_text())
    assert loaded["teacher"]["workdir"] == str(tmp_path / "suite" / "teacher")


def test_a_student_listed_before_its_teacher_is_refused(tmp_path):
    with pytest.raises(ValueError, match="names run 'teacher', which does not run before it"):
        suite.run_suite(_suite(tmp_path, ("student", "teacher")), tmp_path / "suite")


def test_a_suite_with_seeds_trains_each_run_per_seed_and_reports_mean_and_std(tmp_path):
    config = ml_collections.ConfigDict()
    config.runs = ml_collections.ConfigDict(dict(student=tiny_config(tmp_path, steps=2)))
    config.order = ("student",)
    config.seeds = (0, 1)
    rows = suite.run_suite(config, tmp_path / "suite")
    student = rows[1]
    seeds = [json.loads((tmp_path / "suite" / "student" / f"seed_{s}" / "config.json").read_text())["seed"] for s in (0, 1)]
    assert seeds == [0, 1] and student["seeds"] == 2
    per_seed = [run["psnr_y"] for run in student["per_seed"]]
    assert per_seed[0] != per_seed[1]  # different initialisations and crops
    assert student["psnr_y"] == pytest.approx(sum(per_seed) / 2)
    assert student["psnr_y_std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2**0.5)
    assert f"{student['psnr_y']:.2f} ± {student['psnr_y_std']:.2f}" in (tmp_path / "suite" / "results.md").read_text()
