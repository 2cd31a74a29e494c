"""Real strategies on real Messages, in-process: sign-flipped, scaled updates from 20 % of devices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud_hub.fl.evaluation import HoldoutEvaluation, embed
from cloud_hub.fl.settings import ROBUST_DEFAULT
from edgefleet.federation import Fleet, dirichlet_partition, prepare_fleet, run_experiment
from tests.unit.fl.conftest import BACKBONE_INT8, DESCRIPTION, INITIAL_HEAD

pytest.importorskip("sktime", reason="PLAID comes with sktime (the sim or train extra)")


@pytest.fixture(scope="module")
def plaid_fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Fleet, HoldoutEvaluation]:
    from models.federated import preprocessed_plaid

    data, train, test = preprocessed_plaid()
    parts = dirichlet_partition(data.train_labels, 10, alpha=1.0, seed=0)
    fleet = prepare_fleet(tmp_path_factory.mktemp("plaid-fleet"), [(train[p], data.train_labels[p]) for p in parts])
    return fleet, HoldoutEvaluation(embed(BACKBONE_INT8, test), data.test_labels)


def accuracy(plaid_fleet: tuple[Fleet, HoldoutEvaluation], state: Path, strategy: str, attackers: int) -> float:
    fleet, holdout = plaid_fleet
    experiment = run_experiment(
        fleet,
        backbone=BACKBONE_INT8,
        initial_head=INITIAL_HEAD,
        evaluate_fn=holdout,
        state_dir=state / f"{strategy}-{attackers}",
        strategy=strategy,
        rounds=3,
        attackers=attackers,
    )
    return experiment.accuracies[-1]


def test_the_robust_default_holds_against_20_percent_attackers_where_fedavg_collapses(
    plaid_fleet: tuple[Fleet, HoldoutEvaluation], tmp_path: Path
) -> None:
    clean_robust = accuracy(plaid_fleet, tmp_path, ROBUST_DEFAULT, 0)
    attacked_robust = accuracy(plaid_fleet, tmp_path, ROBUST_DEFAULT, 2)
    clean_mean = accuracy(plaid_fleet, tmp_path, "fedavg", 0)
    attacked_mean = accuracy(plaid_fleet, tmp_path, "fedavg", 2)
    start = json.loads(DESCRIPTION.read_text())["test_accuracy"]["initial_head_on_int8_backbone"]
    assert clean_robust > start + 0.02 and clean_mean > start + 0.02  # three clean rounds improve on the start
    assert attacked_robust >= clean_robust - 0.05
    assert attacked_mean < clean_mean - 0.2
