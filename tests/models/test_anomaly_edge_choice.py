"""How the anomaly tasks choose their edge recipe: on the simulator's faults in the held-out normal stretch only."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from models.anomaly_tasks import EDGE_RECIPES, TASKS
from models.series_anomaly import (
    CandidateResult,
    EdgeRecipe,
    HeldOutFaults,
    ValidationFigures,
    choose_candidate,
)

WINDOW = 8


def _candidate(key: str, roc_auc: float, macs: int) -> CandidateResult:
    recipe = EdgeRecipe(key, teacher_weight=0.5, keep_ratio=0.5)
    return CandidateResult(recipe, parameters=macs, macs=macs, validation=ValidationFigures((roc_auc,), (0.5,)))


def test_the_best_validation_figure_wins() -> None:
    candidates = [_candidate("a", 0.80, 100), _candidate("b", 0.90, 200), _candidate("c", 0.85, 50)]
    assert choose_candidate(candidates) == 1


def test_a_tie_at_three_decimals_goes_to_fewer_macs_then_to_the_earlier() -> None:
    assert choose_candidate([_candidate("a", 0.9001, 200), _candidate("b", 0.9004, 100)]) == 1
    assert choose_candidate([_candidate("a", 0.9004, 100), _candidate("b", 0.9001, 200)]) == 0
    assert choose_candidate([_candidate("a", 0.9, 100), _candidate("b", 0.9, 100)]) == 0


def test_validation_figures_average_over_seeds() -> None:
    figures = ValidationFigures((0.6, 0.8, 1.0), (0.2, 0.4, 0.6))
    assert figures.roc_auc == pytest.approx(0.8)
    assert figures.best_f1 == pytest.approx(0.4)
    assert figures.roc_auc_spread == pytest.approx(np.std([0.6, 0.8, 1.0]))


def test_held_out_faults_score_only_the_stretch_readings() -> None:
    # A stretch of 20 readings led by WINDOW - 1 normal ones: 20 hop-1 windows, scored by their position. A
    # reading's score is its last window's, so the stretch's last WINDOW readings share the highest score.
    readings = 20
    labels = np.zeros(readings, dtype=np.int64)
    labels[-WINDOW:] = 1
    windows = np.zeros((readings, WINDOW), dtype=np.float32)
    held_out = HeldOutFaults(seeds=(1, 2), used=(1,), windows=(windows,), labels=(labels,), readings=readings)
    figures = held_out.figures(lambda batch: np.arange(len(batch), dtype=np.float64), WINDOW)
    assert figures.roc_aucs == pytest.approx((1.0,))
    assert figures.best_f1s == pytest.approx((1.0,))


def test_the_candidates_are_fixed_in_both_tasks() -> None:
    keys = [recipe.key for recipe in EDGE_RECIPES]
    assert len(set(keys)) == len(keys)
    assert EDGE_RECIPES[0] == EdgeRecipe("distilled_keep50", teacher_weight=0.5, keep_ratio=0.5)
    assert all(0 < recipe.teacher_weight <= 1 for recipe in EDGE_RECIPES), "every candidate is distilled"
    assert {recipe.teacher_weight for recipe in EDGE_RECIPES} == {0.5, 1.0}
    for task in TASKS.values():
        assert task.full.edge_recipes == EDGE_RECIPES
        assert task.quick.edge_recipes == EDGE_RECIPES


@pytest.mark.parametrize("teacher_weight", [0.0, -0.5, 1.5])
def test_an_edge_recipe_without_a_teacher_is_refused(teacher_weight: float) -> None:
    # The edge model must be distilled from the cloud model: a student on the inputs alone is not a candidate.
    with pytest.raises(ValueError, match="teacher_weight must be in"):
        EdgeRecipe("undistilled", teacher_weight=teacher_weight, keep_ratio=0.5)


def test_the_card_words_say_how_much_the_teacher_weighs() -> None:
    half, whole = EdgeRecipe("a", 0.5, 0.5), EdgeRecipe("b", 1.0, 0.75)
    assert half.trained_on == "the inputs and the cloud's reconstructions (distilled, 50% of the loss on the latter)"
    assert whole.trained_on == "the cloud's reconstructions alone (distilled, all of the loss on them)"
    assert whole.label == "distilled, 100% on the teacher, keep 75%"
