"""Every committed config loads through ml_collections' config flags and validates."""

from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_flags

from kdjax import config as config_lib
from kdjax import suite

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUN_CONFIGS = [
    "teacher.py:tiny", "teacher.py:light", "teacher.py:base",
    "distill.py:both", "distill.py:output", "distill.py:feature", "distill.py:affinity", "distill.py:none",
    "student_only.py",
    "student_x2.py:kd", "student_x2.py:none", "student_x2.py:kd_only", "student_x2.py:dukd",
    "student_x2.py:dukd_only",
    "student_sharpen.py:bicubic", "student_sharpen.py:bicubic_none", "student_sharpen.py:mix",
    "teacher.py:light_x2", "teacher.py:light_x2_short",
    "stream_x2.py:teacher", "stream_x2.py:kd", "stream_x2.py:kd_only", "stream_x2.py:none",
]


def _load(spec: str):
    """Loads a config the way launch.py does (a `file.py:variant` string)."""
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values)
    flag_values(["test", f"--config={CONFIGS / spec}"])
    return flag_values.config


@pytest.mark.parametrize("spec", RUN_CONFIGS)
def test_run_configs_validate(spec):
    config = _load(spec)
    config_lib.validate(config)
    assert config.model.name


def test_student_only_is_distill_without_any_teacher():
    baseline, distilled = _load("student_only.py"), _load("distill.py:both")
    assert baseline.loss.output_kd_weight == baseline.loss.feature_kd_weight == 0
    assert not baseline.teacher.workdir
    assert baseline.model == distilled.model and baseline.num_steps == distilled.num_steps


def test_quickstart_suite_runs_validate_in_order():
    quickstart = _load("quickstart.py")
    assert suite.is_suite(quickstart)
    assert list(quickstart.order) == ["teacher", "student_kd", "student_only"]
    for name in quickstart.order:
        config_lib.validate(quickstart.runs[name])
    assert quickstart.runs.student_kd.teacher.workdir == "@teacher"


def test_unknown_variant_is_one_clear_sentence():
    with pytest.raises(flags.IllegalFlagValueError, match="Unknown teacher variant 'huge'; choose one of"):
        _load("teacher.py:huge")


@pytest.mark.parametrize(
    "spec",
    ["ablation_x2.py", "ablation_x2.py:medium", "ablation_x2.py:sharpen", "ablation_x2.py:stream", "feature_kd_x2.py"],
)
def test_the_distillation_comparisons_differ_only_in_loss_and_teacher(spec):
    comparison = _load(spec)
    baseline = comparison.runs.none.to_dict()
    assert baseline["loss"]["output_kd_weight"] == 0 and not baseline["teacher"]["workdir"]
    for name in comparison.order:
        run = comparison.runs[name]
        config_lib.validate(run)
        assert {key for key, value in run.to_dict().items() if value != baseline[key]} <= {"loss", "teacher"}


def test_the_distillation_ablation_has_three_seeds_and_the_teacher_only_targets():
    ablation = _load("ablation_x2.py")
    assert suite.is_suite(ablation) and list(ablation.seeds) == [0, 1, 2]
    teacher_only = ablation.runs.kd_only.loss
    assert teacher_only.pixel_weight == 0 and teacher_only.output_kd_weight == 1
    teacher_only_with_zoomed_views = ablation.runs.dukd_only.loss
    assert teacher_only_with_zoomed_views.pixel_weight == 0 and teacher_only_with_zoomed_views.aux_kd_weight == 1


def test_the_medium_ablation_runs_the_baseline_and_dukd_at_twice_the_steps():
    short, medium = _load("ablation_x2.py"), _load("ablation_x2.py:medium")
    assert list(medium.order) == ["none", "dukd"] and list(medium.seeds) == [0, 1, 2]
    for name in medium.order:
        assert medium.runs[name].num_steps == 2 * short.runs[name].num_steps
        assert medium.runs[name].loss == short.runs[name].loss


def test_the_default_distillation_recipe_is_output_kd_without_feature_kd():
    default = _load("distill.py")
    assert default.loss.output_kd_weight > 0 and default.loss.feature_kd_weight == 0


def test_the_feature_kd_sweep_runs_the_teacher_in_the_step_at_each_weight():
    sweep = _load("feature_kd_x2.py")
    feature_runs = [sweep.runs[name] for name in sweep.order if sweep.runs[name].loss.feature_kd_weight]
    assert sorted(run.loss.feature_kd_weight for run in feature_runs) == [0.001, 0.01]
    assert all(run.teacher.in_step and run.loss.output_kd_weight == 1 for run in feature_runs)
    assert not sweep.runs.kd.teacher.in_step and sweep.runs.kd.loss.feature_kd_weight == 0


def test_the_half_resolution_comparison_differs_only_in_model_and_step_budget():
    comparison = _load("teacher_half_res.py")
    full, half = comparison.runs.full, comparison.runs.half
    assert (full.model.name, half.model.name) == ("swin_light", "swin_light_half")
    for run in (full, half):
        config_lib.validate(run)
    differing = {key for key, value in full.to_dict().items() if value != half.to_dict()[key]}
    assert differing == {"model", "num_steps", "optim", "eval", "checkpoint"}
    assert full.data == half.data and full.batch_size == half.batch_size
    assert full.optim.learning_rate == half.optim.learning_rate
    # The cheaper body gets more steps for the same CPU time, each run its own full schedule.
    assert half.num_steps > 3 * full.num_steps
    assert full.eval.every_steps == full.num_steps and half.eval.every_steps == half.num_steps


def test_the_stream_teacher_is_fine_tuned_on_the_stream_its_students_read():
    teacher, student = _load("stream_x2.py:teacher"), _load("stream_x2.py:kd")
    assert teacher.init.workdir and not student.init.workdir
    assert teacher.model.name == "rlfn" and student.teacher.workdir != teacher.init.workdir
    assert teacher.data.to_dict() == student.data.to_dict()
    assert student.data.degradation.ops[-1] == "h264" and student.data.cache_variants > 1
