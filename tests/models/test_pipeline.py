"""The steps every task's build shares: the benchmark's ratios as card goals, latencies in manifests, plans."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from models.pipeline import latency_metrics, ratio_goals, variant_names

QUALITY = {"cloud_fp32": 0.90, "edge_fp32": 0.89, "edge_int8": 0.88}
SIZES = {"cloud_fp32": 1_000_000, "edge_fp32": 60_000, "edge_int8": 30_000}


def test_ratio_goals_name_the_faster_variant_where_int8_is_slower() -> None:
    latencies = {
        "cloud_fp32": {"onnxruntime": 0.30},
        "edge_fp32": {"onnxruntime": 0.020},
        "edge_int8": {"onnxruntime": 0.025, "litert": 0.010},
    }
    goals = ratio_goals("demo", latencies, QUALITY, SIZES, metric="test accuracy")
    assert goals["latency_cloud_over_edge_int8"].startswith("met: 12.0×")
    assert goals["latency_edge_fp32_over_edge_int8"].startswith("missed by 0.70: 0.80×")
    assert "run `demo_edge_fp32`" in goals["latency_edge_fp32_over_edge_int8"]
    assert goals["quality_retained_edge_int8_over_cloud"].startswith("met: 0.978")
    assert goals["size_edge_int8_over_cloud"].startswith("met: 0.030")


def test_ratio_goals_say_by_how_much_a_goal_is_missed() -> None:
    latencies = {
        "cloud_fp32": {"onnxruntime": 0.05},
        "edge_fp32": {"onnxruntime": 0.04},
        "edge_int8": {"onnxruntime": 0.02},
    }
    quality = {**QUALITY, "edge_int8": 0.80}
    goals = ratio_goals("demo", latencies, quality, {**SIZES, "edge_int8": 400_000}, metric="test ROC-AUC")
    assert goals["latency_cloud_over_edge_int8"].startswith("missed by 7.50: 2.5×")
    assert goals["latency_edge_fp32_over_edge_int8"].startswith("met: 2.00×")
    assert "edge_fp32`" not in goals["latency_edge_fp32_over_edge_int8"]
    assert goals["quality_retained_edge_int8_over_cloud"].startswith("missed by 0.08: 0.889 of the cloud model's test")
    assert goals["size_edge_int8_over_cloud"].startswith("missed by 0.15: 0.400")


def test_manifest_latency_metrics_and_variant_names() -> None:
    assert latency_metrics({"onnxruntime": 0.02, "openvino": 0.1}) == {
        "latency_ms_onnxruntime": 0.02,
        "latency_ms_openvino": 0.1,
    }
    assert variant_names("acsf1") == {
        "cloud_fp32": "acsf1_cloud_fp32",
        "edge_fp32": "acsf1_edge_fp32",
        "edge_int8": "acsf1_edge_int8",
    }


def test_a_training_shape_makes_the_plans_of_both_budgets() -> None:
    from models.classification import Architecture, TrainingShape
    from models.training import SeriesAugmentation

    shape = TrainingShape(
        cloud=Architecture(widths=(8,), kernels=(3,), pools=(1,)),
        student=Architecture(widths=(4,), kernels=(3,), pools=(1,)),
        batch_size=16,
        augmentation=SeriesAugmentation(max_shift=1, noise=0.0, scale=0.0, renormalize=False),
    )
    plan = shape.plan(folds=5, epochs=15)
    assert (plan.folds, plan.cloud_recipe.epochs, plan.student_recipe.epochs) == (5, 15, 15)
    assert plan.finetune_recipe.epochs == 7  # half, rounded down
    assert plan.cloud_recipe.batch_size == 16 and plan.keep_ratio == 0.5


def test_a_student_that_reads_rows_may_learn_from_the_row_cnns_alone() -> None:
    import torch

    from models.classification import Architecture, TrainingShape, _student_teacher
    from models.networks import AveragedEnsemble, Transposed
    from models.training import SeriesAugmentation

    def shape(*, transposed_members: bool = False, distil_from_rows: bool = False) -> TrainingShape:
        return TrainingShape(
            cloud=Architecture(widths=(8,), kernels=(3,), pools=(1,)),
            student=Architecture(widths=(4,), kernels=(3,), pools=(1,)),
            batch_size=16,
            augmentation=SeriesAugmentation(max_shift=1, noise=0.0, scale=0.0, renormalize=False),
            transposed_members=transposed_members,
            distil_from_rows=distil_from_rows,
        )

    rows, columns = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    pair = AveragedEnsemble([rows, Transposed(columns)])
    both = shape(transposed_members=True).plan(folds=2, epochs=2)
    assert _student_teacher(both, pair) is pair
    from_rows = shape(transposed_members=True, distil_from_rows=True).plan(folds=2, epochs=2)
    assert from_rows.distil_from_rows and _student_teacher(from_rows, pair) is rows
    with pytest.raises(ValueError, match="pairs"):
        shape(distil_from_rows=True).plan(folds=2, epochs=2)
