"""The simulator's faults injected into a recorded series (``edgefleet sim inject``, run as its own process),
and the autoencoders' regularized training that the anomaly tasks score with them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from models.simulated_faults import FaultInjectionError, fault_rules, inject

WINDOW = 32


def _series() -> np.ndarray:
    rng = np.random.default_rng(3)
    readings = np.arange(6000)
    return np.sin(2 * np.pi * readings / 50) + rng.normal(0, 0.05, len(readings))


def test_injected_faults_change_exactly_the_labelled_readings() -> None:
    series = _series()
    own = np.zeros(len(series), dtype=np.int64)
    own[3000:3010] = 1
    faults = inject(series, own, window=WINDOW, rate_hz=100.0, scale=float(series.std()), seed=1)

    assert faults.series.shape == series.shape and faults.labels.shape == series.shape
    changed = faults.series != series
    assert changed.any()
    assert not (changed & (faults.labels == 0)).any(), "a reading changed where no fault is logged"
    assert set(faults.counts) <= {"spike", "drift", "stuck", "noise_burst"}
    assert sum(faults.counts.values()) >= 5
    # The series' own anomaly and one window either side are not scored.
    assert not faults.scored[3000 - WINDOW : 3010 + WINDOW].any()
    assert faults.scored[3010 + WINDOW + 1 :].all()
    assert faults.scored[:2000].all()


def test_injection_is_seeded() -> None:
    series, own = _series(), np.zeros(6000, dtype=np.int64)
    first = inject(series, own, window=WINDOW, rate_hz=None, scale=1.0, seed=5)
    again = inject(series, own, window=WINDOW, rate_hz=None, scale=1.0, seed=5)
    other = inject(series, own, window=WINDOW, rate_hz=None, scale=1.0, seed=6)
    np.testing.assert_array_equal(first.series, again.series)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert not np.array_equal(first.labels, other.labels)


def test_fault_rules_scale_with_the_window() -> None:
    rules = {rule["kind"]: rule for rule in fault_rules(128, 360.0)}
    assert rules["stuck"]["duration_s"] == pytest.approx(64 / 360)
    assert rules["drift"]["duration_s"] == pytest.approx(256 / 360)
    assert rules["spike"]["every_s"] < rules["drift"]["every_s"]


@pytest.mark.parametrize(
    ("request_body", "reason"),
    [
        ("not json", "bad inject request"),
        (json.dumps({"values": [0.0], "rate_hz": 1.0, "rules": [{"kind": "melt", "every_s": 1}]}), "bad inject"),
        (json.dumps({"values": [0.0], "rate_hz": 1.0, "rules": [{"kind": "dropout", "every_s": 1}]}), "value faults"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(request_body: str, reason: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet", "sim", "inject"], input=request_body, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert reason in result.stderr
    assert result.stdout == ""


def test_a_failed_injection_raises_with_the_simulator_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "models.simulated_faults.fault_rules", lambda window, rate_hz: [{"kind": "dropout", "every_s": 1.0}]
    )
    with pytest.raises(FaultInjectionError, match="value faults"):
        inject(_series(), np.zeros(6000, dtype=np.int64), window=WINDOW, rate_hz=1.0, scale=1.0, seed=0)


def test_early_stopping_keeps_the_best_validation_epoch() -> None:
    torch = pytest.importorskip("torch")
    from models.autoencoder import DenseAutoencoder, reconstruction_errors, train_autoencoder

    rng = np.random.default_rng(0)
    phases = rng.uniform(0, 2 * np.pi, size=(400, 1))
    windows = (np.sin(np.linspace(0, 4 * np.pi, WINDOW) + phases) + rng.normal(0, 0.3, (400, WINDOW))).astype(
        np.float32
    )
    fit, validation = windows[:300], windows[300:]

    def trained(held_out: np.ndarray | None) -> float:
        torch.manual_seed(0)
        model = train_autoencoder(
            DenseAutoencoder(WINDOW, (64,), 4), fit, epochs=12, seed=0, validation=held_out, weight_decay=1e-2
        )
        return float(reconstruction_errors(model, validation).mean())

    # The same seed runs the same steps; keeping the best epoch can only lower the held-out error.
    assert trained(validation) <= trained(None) + 1e-7
