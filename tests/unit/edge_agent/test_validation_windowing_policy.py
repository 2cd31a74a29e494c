from __future__ import annotations

import pytest

from edge_agent.policy import EscalationPolicy
from edge_agent.settings import PolicySettings, ValidationSettings
from edge_agent.validation import Validator
from edge_agent.windowing import StreamKey, Windower
from protocol.messages import ErrorCode, EscalationReason, Outcome, SensorKind, TelemetryBatch, TelemetryReading

NOW = 1_800_000_000.0


def reading(seq: int, value: float = 10.0, *, ts: float = NOW, message_id: str | None = None, unit: str = "kW"):
    extra = {"message_id": message_id} if message_id else {}
    return TelemetryReading(
        device_id="meter-001", timestamp=ts, stream="power", sensor="power", unit=unit, seq=seq, value=value, **extra
    )


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (reading(0, value=-5.0), ErrorCode.OUT_OF_RANGE),
        (reading(0, value=1e9), ErrorCode.OUT_OF_RANGE),
        (reading(0, ts=NOW - 3600), ErrorCode.STALE_TIMESTAMP),
        (reading(0, ts=NOW + 60), ErrorCode.FUTURE_TIMESTAMP),
    ],
)
def test_validator_rejects_with_a_reason(message: TelemetryReading, code: ErrorCode) -> None:
    rejection = Validator(ValidationSettings()).check(message, NOW)
    assert rejection is not None
    assert rejection.code is code
    assert rejection.reason


def test_validator_rejects_out_of_order_duplicates_and_unit_changes() -> None:
    validator = Validator(ValidationSettings())
    assert validator.check(reading(5, message_id="a"), NOW) is None
    duplicate = validator.check(reading(6, message_id="a"), NOW)
    assert duplicate is not None and duplicate.code is ErrorCode.DUPLICATE
    backwards = validator.check(reading(5), NOW)
    assert backwards is not None and backwards.code is ErrorCode.OUT_OF_ORDER
    unit = validator.check(reading(7, unit="W"), NOW)
    assert unit is not None and unit.code is ErrorCode.UNIT_MISMATCH
    assert validator.check(reading(7), NOW) is None


def test_validator_checks_every_value_of_a_batch_and_advances_seq_past_it() -> None:
    validator = Validator(ValidationSettings())
    batch = TelemetryBatch(
        device_id="meter-001", timestamp=NOW, stream="power", sensor="power", unit="kW", seq=0,
        sample_rate_hz=1.0, values=[1.0, 2.0, -3.0],
    )  # fmt: skip
    rejection = validator.check(batch, NOW)
    assert rejection is not None and rejection.code is ErrorCode.OUT_OF_RANGE
    assert validator.check(batch.model_copy(update={"values": [1.0, 2.0, 3.0]}), NOW) is None
    overlap = validator.check(reading(2), NOW)
    assert overlap is not None and overlap.code is ErrorCode.OUT_OF_ORDER
    assert validator.check(reading(3), NOW) is None


KEY = StreamKey(site="plant-1", device="meter-001", stream="power")


def feed(windower: Windower, seqs: range | list[int]) -> list[tuple[int, tuple[float, ...]]]:
    out = []
    for seq in seqs:
        out += [(w.start_seq, w.values) for w in windower.add(KEY, SensorKind.POWER, "kW", seq, [float(seq)], NOW)]
    return out


def test_tumbling_windows_are_aligned_on_sequence_numbers() -> None:
    windower = Windower(size=4, hop=4)
    # Starting mid-window: samples 2 and 3 cannot complete window 0, so the first window starts at 4.
    assert feed(windower, range(2, 13)) == [(4, (4.0, 5.0, 6.0, 7.0)), (8, (8.0, 9.0, 10.0, 11.0))]


def test_sliding_windows_and_batches() -> None:
    windower = Windower(size=4, hop=2)
    windows = windower.add(KEY, SensorKind.POWER, "kW", 0, [float(v) for v in range(8)], NOW)
    assert [(w.start_seq, w.values[0]) for w in windows] == [(0, 0.0), (2, 2.0), (4, 4.0)]


def test_a_gap_drops_the_window_it_cuts() -> None:
    windower = Windower(size=4, hop=4)
    assert feed(windower, [0, 1, 2, 5, 6, 7, 8, 9, 10, 11]) == [(8, (8.0, 9.0, 10.0, 11.0))]
    assert windower.gaps == 1


def outcome(label: str = "low", confidence: float = 0.95, anomaly: float = 0.5) -> Outcome:
    return Outcome(model="m", model_version="1", label=label, confidence=confidence, anomaly_score=anomaly)


def test_policy_rules_and_priorities() -> None:
    policy = EscalationPolicy(PolicySettings(min_confidence=0.8, max_anomaly_score=2.0, critical_labels=["fire"]))
    assert policy.decide("d", "power", outcome(), NOW).escalate is False
    assert policy.decide("d", "power", outcome(), NOW).rule == "confident"
    unsure = policy.decide("d", "power", outcome(confidence=0.6), NOW)
    assert unsure.escalate and unsure.reasons == (EscalationReason.LOW_CONFIDENCE,)
    anomalous = policy.decide("d", "power", outcome(anomaly=3.0, confidence=0.6), NOW)
    assert anomalous.reasons == (EscalationReason.ANOMALY, EscalationReason.LOW_CONFIDENCE)
    assert anomalous.priority < unsure.priority
    critical = policy.decide("d", "power", outcome(label="fire"), NOW)
    assert critical.escalate and critical.priority == 0 and critical.rule == "critical_rule"


def test_policy_budget_holds_back_all_but_critical_events() -> None:
    policy = EscalationPolicy(
        PolicySettings(max_escalations_per_minute=2, critical_labels=["fire"], episode_reminder_s=0)
    )
    decisions = [policy.decide("d", "power", outcome(confidence=0.1), NOW) for _ in range(3)]
    assert [d.escalate for d in decisions] == [True, True, False]
    assert decisions[2].rule == "over_budget"
    assert policy.decide("d", "power", outcome(label="fire"), NOW).escalate
    assert policy.decide("other", "power", outcome(confidence=0.1), NOW).escalate  # budgets are per device
    assert policy.decide("d", "power", outcome(confidence=0.1), NOW + 30).escalate  # refilled after 30 s


def test_an_episode_is_escalated_once_then_reminded() -> None:
    policy = EscalationPolicy(PolicySettings(episode_reminder_s=300))
    stuck = outcome(anomaly=5.0)
    first = policy.decide("d", "power", stuck, NOW)
    assert first.escalate
    again = policy.decide("d", "power", stuck, NOW + 10)
    assert not again.escalate
    assert again.rule == "same_episode"
    assert policy.decide("d", "current", stuck, NOW + 10).escalate  # another stream, another episode
    assert policy.decide("d", "power", outcome(confidence=0.5), NOW + 20).escalate  # another rule
    assert policy.decide("d", "power", stuck, NOW + 30).escalate  # the rule changed: a new episode
    assert not policy.decide("d", "power", stuck, NOW + 40).escalate
    assert policy.decide("d", "power", stuck, NOW + 400).escalate  # reminder after 300 s
    assert not policy.decide("d", "power", outcome(), NOW + 410).escalate  # a clean window ends it
    assert policy.decide("d", "power", stuck, NOW + 420).escalate
