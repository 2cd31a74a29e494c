"""FedGeoMedian's aggregation: the geometric median, and the mean of the updates near it."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from cloud_hub.fl.geomedian import FedGeoMedian, geometric_median, inlier_mean
from cloud_hub.fl.settings import INLIER_RADIUS
from cloud_hub.fl.strategies import build_strategy
from protocol.updates import RecordNames as R


def test_the_geometric_median_of_collinear_points_is_their_middle_one() -> None:
    points = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    assert geometric_median(points) == pytest.approx([1.0, 0.0], abs=1e-6)


def test_the_geometric_median_minimises_the_summed_distance() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(9, 5))
    centre = geometric_median(points)

    def cost(x: np.ndarray) -> float:
        return float(np.linalg.norm(points - x, axis=1).sum())

    for _ in range(50):
        assert cost(centre) <= cost(centre + rng.normal(scale=0.05, size=5)) + 1e-9


def test_clean_updates_are_all_kept_and_averaged() -> None:
    points = np.random.default_rng(1).normal(size=(10, 30))
    result = inlier_mean(points, 2.0)
    assert result.kept.all()
    assert result.mean == pytest.approx(points.mean(axis=0))


def test_scaled_sign_flipped_updates_are_left_out() -> None:
    rng = np.random.default_rng(2)
    honest = rng.normal(loc=1.0, scale=0.5, size=(8, 40))
    attackers = -10 * rng.normal(loc=1.0, scale=0.5, size=(2, 40))
    result = inlier_mean(np.vstack([attackers, honest]), 2.0)
    assert result.kept.tolist() == [False, False] + [True] * 8
    assert result.mean == pytest.approx(honest.mean(axis=0))
    # The geometric median alone stays with the honest crowd too, but leans toward the attackers.
    median = inlier_mean(np.vstack([attackers, honest]), 0.0).mean
    lean = np.linalg.norm(median - honest.mean(axis=0))
    assert 0 < lean < np.linalg.norm(attackers.mean(axis=0) - honest.mean(axis=0)) / 4


def test_the_default_radius_leaves_out_unscaled_sign_flips_too() -> None:
    # Non-IID honest updates: a shared step smaller than how much they disagree (as in docs/federated.md).
    rng = np.random.default_rng(4)
    honest = rng.normal(loc=0.6, scale=1.0, size=(8, 200))
    attackers = -rng.normal(loc=0.6, scale=1.0, size=(2, 200))
    assert inlier_mean(np.vstack([attackers, honest]), 2.0).kept[:2].all()  # a radius of 2 keeps them
    result = inlier_mean(np.vstack([attackers, honest]), INLIER_RADIUS)
    assert not result.kept[:2].any() and result.kept[2:].all()


def test_a_negative_radius_is_refused() -> None:
    with pytest.raises(ValueError, match="inlier_radius"):
        inlier_mean(np.zeros((3, 2)), -1.0)
    with pytest.raises(ValueError, match="inlier_radius"):
        FedGeoMedian(inlier_radius=-1.0)


def _reply(node: int, weight: np.ndarray, bias: np.ndarray, examples: int) -> Message:
    content = RecordDict(
        {
            R.ARRAYS: ArrayRecord({"weight": Array(weight), "bias": Array(bias)}),
            "metrics": MetricRecord({R.NUM_EXAMPLES: examples, "loss": 1.0}),
        }
    )
    instruction = Message(RecordDict({R.CONFIG: ConfigRecord()}), dst_node_id=node, message_type="train")
    return Message(content, reply_to=instruction)


def test_the_strategy_aggregates_whole_heads_and_ignores_claimed_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)  # what a Grid sets for the ServerApp
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", SUPERLINK_NODE_ID)
    rng = np.random.default_rng(3)
    honest = [
        (rng.normal(1.0, 0.3, size=(3, 4)).astype(np.float32), rng.normal(size=3).astype(np.float32)) for _ in range(8)
    ]
    attacker = (np.full((3, 4), -50.0, np.float32), np.full(3, -50.0, np.float32))
    assert build_strategy("fedgeomedian").inlier_radius == INLIER_RADIUS  # type: ignore[attr-defined]
    strategy = build_strategy("fedgeomedian", min_nodes=2, inlier_radius=2.0)
    assert isinstance(strategy, FedGeoMedian)
    replies = [_reply(i + 1, w, b, 10) for i, (w, b) in enumerate(honest)] + [_reply(99, *attacker, 1_000_000)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    weight, bias = arrays["weight"].numpy(), arrays["bias"].numpy()
    assert weight.dtype == np.float32 and weight.shape == (3, 4)
    assert weight == pytest.approx(np.mean([w for w, _ in honest], axis=0), abs=1e-5)
    assert bias == pytest.approx(np.mean([b for _, b in honest], axis=0), abs=1e-5)
