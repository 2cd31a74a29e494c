"""The numpy side of the anomaly score and the synthetic faults (no torch needed)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from models.anomaly import fit_subspace_scorer
from models.faults import FAULTS, dropout, flatline, spike, stuck_at
from protocol.manifest import ZNormalize
from protocol.preprocessing import preprocess


@pytest.fixture
def daily_profiles() -> npt.NDArray[np.float64]:
    """Smooth synthetic days: two bumps of varying height and timing, plus a little noise."""
    rng = np.random.default_rng(7)
    hours = np.arange(24)
    days = []
    for _ in range(200):
        morning, evening = rng.uniform(8, 11), rng.uniform(17, 20)
        days.append(
            rng.uniform(0.5, 1.5) * np.exp(-((hours - morning) ** 2) / 6)
            + rng.uniform(0.5, 1.5) * np.exp(-((hours - evening) ** 2) / 6)
            + rng.normal(0, 0.02, 24)
        )
    return np.asarray(days)


def test_score_is_scaled_to_the_training_percentile(daily_profiles: npt.NDArray[np.float64]) -> None:
    normalized = preprocess(daily_profiles, [ZNormalize()])
    scorer = fit_subspace_scorer(normalized, components=5)
    scores = scorer.score(normalized)
    assert np.quantile(scores, 0.99) == pytest.approx(1.0)
    assert (scores >= 0).all()


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_faults_raise_the_score(daily_profiles: npt.NDArray[np.float64], fault: str) -> None:
    scorer = fit_subspace_scorer(preprocess(daily_profiles, [ZNormalize()]), components=5)
    clean = scorer.score(preprocess(daily_profiles, [ZNormalize()]))
    faulted = scorer.score(preprocess(FAULTS[fault](daily_profiles, np.random.default_rng(0)), [ZNormalize()]))
    assert np.median(faulted) > 2 * np.median(clean)


def test_faults_change_only_what_they_describe(daily_profiles: npt.NDArray[np.float64]) -> None:
    rng = np.random.default_rng(0)
    assert ((spike(daily_profiles, rng) != daily_profiles).sum(axis=1) == 1).all()
    stuck = stuck_at(daily_profiles, rng)
    assert ((np.diff(stuck, axis=1) == 0).sum(axis=1) >= 11).all()
    assert ((dropout(daily_profiles, rng) != daily_profiles).sum(axis=1) == 6).all()
    assert np.ptp(flatline(daily_profiles, rng), axis=1).max() == 0


def test_components_must_leave_a_residual() -> None:
    with pytest.raises(ValueError, match="components"):
        fit_subspace_scorer(np.zeros((10, 24)), components=24)
