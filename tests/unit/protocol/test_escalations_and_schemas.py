from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from protocol import EscalationLedger, Verdict, decode
from protocol.manifest import Scale, ZNormalize
from protocol.preprocessing import preprocess
from protocol.schemas import json_schemas

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "schemas"


def _escalation_and_verdict() -> tuple[object, Verdict]:
    escalation = decode((GOLDEN / "escalation.json").read_bytes())
    verdict = decode((GOLDEN / "verdict.json").read_bytes())
    assert isinstance(verdict, Verdict)
    return escalation, verdict


def test_ledger_resolves_each_escalation_once() -> None:
    escalation, verdict = _escalation_and_verdict()
    ledger = EscalationLedger()
    ledger.sent(escalation, now=100.0)  # type: ignore[arg-type]
    assert ledger.open == 1
    resolution = ledger.resolve(verdict, now=100.5)
    assert resolution is not None
    assert resolution.round_trip_s == 0.5
    assert resolution.agrees is False
    assert ledger.open == 0
    assert ledger.resolve(verdict, now=101.0) is None
    assert ledger.duplicates == 1
    unknown = verdict.model_copy(update={"escalation_id": "feedfeed"})
    assert ledger.resolve(unknown, now=101.0) is None
    assert ledger.unknown == 1


def test_ledger_reports_overdue_and_stays_bounded() -> None:
    escalation, _ = _escalation_and_verdict()
    ledger = EscalationLedger(capacity=2)
    for index in range(3):
        ledger.sent(escalation.model_copy(update={"message_id": f"e{index}"}), now=float(index))  # type: ignore[attr-defined]
    assert ledger.open == 2
    assert ledger.evicted == 1
    assert [e.message_id for e in ledger.overdue(now=10.0, timeout_s=8.5)] == ["e1"]


def test_znormalize_and_scale() -> None:
    window = np.array([[1.0, 2.0, 3.0, 4.0]])
    normalized = preprocess(window, [ZNormalize()])
    assert normalized.dtype == np.float32
    assert abs(float(normalized.mean())) < 1e-6
    assert abs(float(normalized.std()) - 1.0) < 1e-5
    assert preprocess([2.0, 4.0], [Scale(offset=2.0, factor=0.5)]).tolist() == [[0.0, 1.0]]
    # A constant window must not divide by zero.
    assert np.isfinite(preprocess([[5.0] * 4], [ZNormalize()])).all()


def test_published_json_schemas_are_current() -> None:
    for name, schema in json_schemas().items():
        path = DOCS / f"{name}.json"
        assert path.is_file(), f"{path} missing: run 'edgefleet protocol schemas'"
        assert json.loads(path.read_text()) == schema, f"{path} is stale: run 'edgefleet protocol schemas'"
