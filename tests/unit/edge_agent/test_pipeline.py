from __future__ import annotations

import json

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from edge_agent.model import LoadedModel
from edge_agent.outbox import Envelope
from edge_agent.pipeline import Pipeline
from edge_agent.settings import AgentSettings, PolicySettings
from protocol import (
    ErrorEvent,
    Escalation,
    InferenceResult,
    Kind,
    Outcome,
    TelemetryReading,
    Topic,
    Verdict,
    decode,
    encode,
)
from tests import fakes

NOW = 1_800_000_000.0
TOPIC = Topic(site="plant-1", device="meter-001", kind=Kind.TELEMETRY, stream="power")


def reading(seq: int, value: float) -> bytes:
    return encode(
        TelemetryReading(
            device_id="meter-001", timestamp=NOW, stream="power", sensor="power", unit="kW", seq=seq, value=value
        )
    )


def run_day(pipeline: Pipeline, values: list[float], start: int = 0) -> list[Envelope]:
    out: list[Envelope] = []
    for offset, value in enumerate(values):
        out += pipeline.handle(str(TOPIC), reading(start + offset, value), NOW)
    while pipeline.pending:
        out += pipeline.infer_pending(NOW)
    return out


def test_confident_windows_are_decided_locally(settings: AgentSettings, fake_model: LoadedModel) -> None:
    pipeline = Pipeline(settings, fake_model)
    out = run_day(pipeline, [10.0, 20.0, 30.0, 40.0])
    assert pipeline.stats.windows == 1
    assert pipeline.stats.decisions["high"] == 1
    assert [Topic.parse(o.topic).kind for o in out] == [Kind.INFERENCE]
    result = decode(out[0].payload)
    assert isinstance(result, InferenceResult)
    assert result.escalated is False
    assert result.window_start_seq == 0


def test_unsure_windows_are_escalated_with_their_window(settings: AgentSettings, fake_model: LoadedModel) -> None:
    pipeline = Pipeline(settings, fake_model)
    out = run_day(pipeline, [10.0, 11.0, 9.0, 10.0])  # flat trend: p(high) = 0.5
    kinds = [Topic.parse(o.topic).kind for o in out]
    assert kinds == [Kind.INFERENCE, Kind.ESCALATION]
    escalation = decode(out[1].payload)
    assert isinstance(escalation, Escalation)
    assert escalation.window.values == [10.0, 11.0, 9.0, 10.0]
    assert escalation.site == "plant-1"
    assert [r.value for r in escalation.reasons] == ["low_confidence"]
    assert pipeline.stats.rules["low_confidence"] == 1
    assert pipeline.ledger.open == 1


def test_a_verdict_closes_its_escalation(settings: AgentSettings, fake_model: LoadedModel) -> None:
    pipeline = Pipeline(settings, fake_model)
    escalation = decode(run_day(pipeline, [10.0, 11.0, 9.0, 10.0])[1].payload)
    assert isinstance(escalation, Escalation)
    verdict = Verdict(
        device_id="meter-001",
        timestamp=NOW,
        escalation_id=escalation.message_id,
        cloud=Outcome(model="cloud", model_version="1", label="low", confidence=0.9, anomaly_score=0.1),
        agrees_with_edge=escalation.edge.label == "low",
    )
    pipeline.handle(str(TOPIC.sibling(Kind.VERDICT)), encode(verdict), NOW)
    assert pipeline.stats.verdicts == 1
    assert pipeline.ledger.open == 0
    pipeline.handle(str(TOPIC.sibling(Kind.VERDICT)), encode(verdict), NOW)  # repeated delivery
    assert pipeline.stats.verdicts == 1


def test_micro_batches_respect_max_batch(fake_model: LoadedModel) -> None:
    settings = AgentSettings(site="plant-1", max_batch=3, policy=PolicySettings(min_confidence=0.0))
    pipeline = Pipeline(settings, fake_model)
    for device in range(5):
        topic = Topic(site="plant-1", device=f"m{device}", kind=Kind.TELEMETRY, stream="power")
        for seq in range(4):
            payload = encode(
                TelemetryReading(
                    device_id=f"m{device}", timestamp=NOW, stream="power", sensor="power", unit="kW", seq=seq,
                    value=float(seq),
                )
            )  # fmt: skip
            pipeline.handle(str(topic), payload, NOW)
    assert pipeline.pending == 5
    pipeline.infer_pending(NOW)
    pipeline.infer_pending(NOW)
    assert fake_model.backend.batches == [3, 2]  # type: ignore[attr-defined]


def test_bad_input_becomes_an_error_event_on_the_device_error_topic(
    settings: AgentSettings, fake_model: LoadedModel
) -> None:
    pipeline = Pipeline(settings, fake_model)
    out = pipeline.handle(str(TOPIC), b'{"type":"telemetry.reading","v":1,"value":', NOW)
    assert len(out) == 1
    assert out[0].topic == "edgefleet/plant-1/meter-001/error"
    event = decode(out[0].payload)
    assert isinstance(event, ErrorEvent)
    assert event.code.value == "malformed_payload"
    assert event.payload_excerpt.startswith('{"type"')
    out = pipeline.handle(str(TOPIC), reading(0, -7.0), NOW)
    event = decode(out[0].payload)
    assert isinstance(event, ErrorEvent) and event.code.value == "out_of_range" and event.offending_id
    assert pipeline.stats.rejected == {"malformed_payload": 1, "out_of_range": 1}


def test_a_reading_for_another_device_topic_is_refused(settings: AgentSettings, fake_model: LoadedModel) -> None:
    pipeline = Pipeline(settings, fake_model)
    other = Topic(site="plant-1", device="meter-002", kind=Kind.TELEMETRY, stream="power")
    out = pipeline.handle(str(other), reading(0, 5.0), NOW)
    assert decode(out[0].payload).code.value == "topic_mismatch"  # type: ignore[attr-defined]


GOOD = json.loads(reading(0, 5.0))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300))
def test_garbage_bytes_never_crash_the_pipeline(payload: bytes) -> None:
    pipeline = Pipeline(AgentSettings(site="plant-1"), fakes.fake_model())
    out = pipeline.handle(str(TOPIC), payload, NOW)
    assert len(out) == 1
    assert isinstance(decode(out[0].payload), ErrorEvent)


@hypothesis_settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(GOOD)), value=json_values)
def test_schema_mutations_are_accepted_or_rejected_never_crash(field: str, value: object) -> None:
    pipeline = Pipeline(AgentSettings(site="plant-1"), fakes.fake_model())
    payload = json.dumps({**GOOD, field: value}).encode()
    out = pipeline.handle(str(TOPIC), payload, NOW)
    assert pipeline.stats.rejections + pipeline.stats.readings >= 1
    assert all(isinstance(decode(o.payload), ErrorEvent) for o in out)


@hypothesis_settings(max_examples=200, deadline=None)
@given(topic=st.text(max_size=60), payload=st.binary(max_size=50))
def test_any_topic_is_handled(topic: str, payload: bytes) -> None:
    pipeline = Pipeline(AgentSettings(site="plant-1"), fakes.fake_model())
    pipeline.handle(topic, payload, NOW)
    assert pipeline.stats.messages == 1
