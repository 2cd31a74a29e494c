"""Drift statistics (PSI, KS) and the monitor over a real (SQLite) store."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from cloud_hub.drift import DriftMonitor, ks_2samp, psi
from cloud_hub.store import Store
from tests.unit.cloud_hub import factories


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0.0, 1.0, 2000)
    assert psi(reference, rng.normal(0.0, 1.0, 2000)) < 0.05
    assert psi(reference, rng.normal(1.0, 1.0, 2000)) > 0.25


def test_psi_copes_with_ties_and_empty_bins() -> None:
    assert psi([0.5] * 100, [0.5] * 100) == pytest.approx(0.0)
    assert psi([0.5] * 100, [0.9] * 100) > 1.0


def test_ks_matches_the_textbook_values() -> None:
    statistic, p_value = ks_2samp([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    assert statistic == 0.0 and p_value == 1.0
    rng = np.random.default_rng(1)
    statistic, p_value = ks_2samp(rng.normal(0, 1, 500), rng.normal(0.5, 1, 500))
    assert 0.15 < statistic < 0.3
    assert p_value < 1e-6
    statistic, p_value = ks_2samp(rng.normal(0, 1, 500), rng.normal(0, 1, 500))
    assert p_value > 0.01


def test_empty_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        psi([], [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        ks_2samp([1.0], [])


async def feed(store: Store, *, count: int, start: float, values: list[float] | None = None, confidence: float) -> None:
    rng = random.Random(count)
    pairs = []
    for index in range(count):
        esc = factories.escalation(device=f"dev-{index % 3}", site="north", timestamp=start + index, values=values)
        edge = esc.edge.model_copy(update={"confidence": min(1.0, max(0.0, confidence + rng.uniform(-0.05, 0.05)))})
        esc = esc.model_copy(update={"edge": edge})
        pairs.append((esc, factories.verdict_for(esc)))
    await store.record_escalations(pairs)


async def test_no_drift_on_a_steady_fleet_then_drift_when_it_moves(store: Store) -> None:
    heard: list[tuple[str, bool]] = []
    monitor = DriftMonitor(store, reference_size=40, window=40)
    monitor.on_drift(lambda alert, trigger: heard.append((alert.metric, trigger is not None)))
    start = time.time()
    await feed(store, count=40, start=start, confidence=0.6)
    assert (await monitor.check()).checked == [], "not enough observations for a reference and a window"

    await feed(store, count=40, start=start + 100, confidence=0.6)
    steady = await monitor.check()
    assert steady.checked and not any(check.drifted for check in steady.checked)

    shifted = [value * 3 + 10 for value in factories.WINTER]  # input mean and spread move
    await feed(store, count=40, start=start + 200, confidence=0.9, values=shifted)
    moved = await monitor.check()
    drifted = {check.metric for check in moved.checked if check.drifted}
    assert drifted >= {"edge_confidence", "input_mean", "input_std"}
    assert len(moved.triggers) == 1, "one retraining trigger per group and model"
    assert moved.triggers[0].reason.startswith("drift in ")
    assert sorted(metric for metric, _ in heard) == sorted(alert.metric for alert in moved.alerts)
    assert sum(opened for _, opened in heard) == len(heard), "listeners see the trigger with each alert"

    taken = await monitor.take_trigger(consumer="fl")
    assert taken is not None and taken.consumed_by == "fl"
    assert await monitor.take_trigger(consumer="fl") is None
