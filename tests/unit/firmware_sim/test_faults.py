"""Each fault model does what the catalogue says, and the ground truth says exactly where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firmware_sim.faults import CATALOGUE, FaultKind, FaultRule, read_ground_truth
from protocol import DeviceBirth, ProtocolError, TelemetryBatch, TelemetryReading, Topic, decode
from tests.unit.firmware_sim.conftest import scenario, simulate, telemetry

DEVICE, STREAM = "probe-000", "temperature"


async def run_with(fault: dict[str, Any] | None, **changes: Any) -> tuple[Any, list[tuple[str, bytes]]]:
    faults = [{"devices": f"lab/{DEVICE}", "stream": STREAM, **fault}] if fault else []
    return await simulate(scenario(faults=faults, **changes))


def readings(sent: list[tuple[str, bytes]]) -> dict[int, TelemetryReading]:
    result: dict[int, TelemetryReading] = {}
    for message in telemetry(sent, DEVICE, STREAM):
        assert isinstance(message, TelemetryReading)
        result.setdefault(message.seq, message)
    return result


def records(fleet: Any, kind: str) -> list[dict[str, Any]]:
    return [r for r in fleet.truth.records if r["kind"] == kind]


async def test_value_faults_change_only_their_window_and_are_logged() -> None:
    _, clean_sent = await run_with(None)
    clean = readings(clean_sent)
    scale = 4.0  # the thermometer's daily amplitude: spike and drift magnitudes are multiples of it

    fleet, sent = await run_with({"kind": "spike", "at_s": 30, "magnitude": 5.0})
    spiked = readings(sent)
    changed = [seq for seq in clean if abs(spiked[seq].value - clean[seq].value) > 1e-6]
    assert changed == [30]
    assert spiked[30].value - clean[30].value == pytest.approx(5.0 * scale, abs=0.02)
    [record] = records(fleet, "spike")
    assert (record["device"], record["stream"], record["start"], record["end"]) == (DEVICE, STREAM, 30, 30)
    assert record["start_ts"] == pytest.approx(spiked[30].timestamp)

    fleet, sent = await run_with({"kind": "drift", "at_s": 10, "duration_s": 20, "magnitude": 2.0})
    drifted = readings(sent)
    offsets = [drifted[seq].value - clean[seq].value for seq in range(10, 30)]
    assert offsets == sorted(offsets)
    assert offsets[-1] == pytest.approx(2.0 * scale, abs=0.02)
    assert drifted[31].value == clean[31].value
    assert records(fleet, "drift")[0]["end"] == 29

    fleet, sent = await run_with({"kind": "stuck", "at_s": 20, "duration_s": 15})
    stuck = readings(sent)
    assert {stuck[seq].value for seq in range(20, 35)} == {clean[19].value}
    assert stuck[35].value == clean[35].value

    fleet, sent = await run_with({"kind": "noise_burst", "at_s": 10, "duration_s": 30, "magnitude": 1.0})
    noisy = readings(sent)
    noise = np.array([noisy[seq].value - clean[seq].value for seq in range(10, 40)])
    assert 0.5 * scale < noise.std() < 2.0 * scale
    assert all(noisy[seq].value == clean[seq].value for seq in range(40, 59))


async def test_message_faults_drop_skew_repeat_reorder_and_garble() -> None:
    _, clean_sent = await run_with(None)
    clean = readings(clean_sent)

    fleet, sent = await run_with({"kind": "dropout", "at_s": 10, "duration_s": 5})
    assert sorted(readings(sent)) == [seq for seq in sorted(clean) if not 10 <= seq <= 14]
    assert (records(fleet, "dropout")[0]["start"], records(fleet, "dropout")[0]["end"]) == (10, 14)

    fleet, sent = await run_with({"kind": "clock_skew", "at_s": 10, "duration_s": 5, "magnitude": 90.0})
    skewed = readings(sent)
    assert skewed[12].timestamp - clean[12].timestamp == pytest.approx(90.0)
    assert skewed[12].value == clean[12].value
    assert skewed[20].timestamp == clean[20].timestamp

    fleet, sent = await run_with({"kind": "duplicate", "at_s": 10, "duration_s": 3})
    messages = telemetry(sent, DEVICE, STREAM)
    seqs = [m.seq for m in messages]  # type: ignore[attr-defined]
    assert [seq for seq in seqs if seqs.count(seq) == 2] == [10, 10, 11, 11, 12, 12]
    assert messages[seqs.index(10)].message_id == messages[seqs.index(10) + 1].message_id

    fleet, sent = await run_with({"kind": "out_of_order", "at_s": 10, "duration_s": 4})
    seqs = [m.seq for m in telemetry(sent, DEVICE, STREAM)]  # type: ignore[attr-defined]
    assert seqs[8:16] == [8, 9, 11, 10, 13, 12, 14, 15]
    assert sorted(seqs) == sorted(clean)

    fleet, sent = await run_with({"kind": "malformed", "at_s": 10, "duration_s": 6})
    topic_suffix = f"/{DEVICE}/telemetry/{STREAM}"
    refused = []
    for topic, payload in sent:
        if topic.endswith(topic_suffix):
            try:
                decode(payload, topic=Topic.parse(topic))
            except ProtocolError as exc:
                refused.append(exc.code)
    # Every garbled payload is refused by the codec, each with a reason an agent can report.
    assert len(refused) == fleet.totals().malformed == 6
    assert set(refused) <= {"malformed_payload", "schema_violation", "non_finite", "topic_mismatch"}
    assert records(fleet, "malformed")[0]["end"] == 15


async def test_a_bearing_fault_grows_in_on_a_motor_and_only_there() -> None:
    document = scenario(
        duration_s=20.0,
        sites=[{"name": "lab", "devices": [{"profile": "motor", "count": 1, "prefix": "motor"}]}],
        faults=[{"kind": "bearing_fault", "stream": "*", "at_s": 5, "ramp_s": 10}],
    )
    fleet, sent = await simulate(document)
    _, clean_sent = await simulate({**document, "faults": []})

    def rms(items: list[tuple[str, bytes]], second: int) -> float:
        batches = [m for m in telemetry(items, "motor-000", "vibration") if isinstance(m, TelemetryBatch)]
        values = [v for b in batches if second * 2560 <= b.seq < (second + 1) * 2560 for v in b.values]
        return float(np.sqrt(np.mean(np.square(values))))

    assert rms(sent, 2) == pytest.approx(rms(clean_sent, 2))
    assert rms(sent, 8) > rms(clean_sent, 8) * 1.1
    assert rms(sent, 18) > rms(sent, 8)
    [record] = records(fleet, "bearing_fault")
    assert record["stream"] == "vibration"
    assert record["start"] == 5 * 2560
    assert record["end"] == 20 * 2560 - 1 or record["end"] >= 19 * 2560


async def test_random_faults_follow_their_rate_and_share(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    document = scenario(
        duration_s=600.0,
        sites=[{"name": "lab", "devices": [{"profile": "thermometer", "count": 40, "prefix": "probe"}]}],
        faults=[
            {"kind": "spike", "every_s": 60.0},
            {"kind": "malformed", "probability": 0.01, "share": 0.5},
        ],
    )
    fleet, _ = await simulate(document, ground_truth=truth)
    logged = read_ground_truth(truth)
    assert logged == fleet.truth.records
    spikes = [r for r in logged if r["kind"] == "spike"]
    assert 40 * 600 / 60 * 0.7 < len(spikes) < 40 * 600 / 60 * 1.3
    garbled_devices = {r["device"] for r in logged if r["kind"] == "malformed"}
    assert 10 <= len(garbled_devices) <= 30
    assert {"device", "stream", "kind", "start", "end"} <= set(logged[0])


async def test_an_outage_buffers_then_reconnects_with_a_birth_and_the_backlog_in_order() -> None:
    document = scenario(network={"outages": [{"start_s": 10, "duration_s": 20, "devices": "lab/probe-000"}]})
    fleet, sent = await simulate(document)
    device_topics = [(topic, payload) for topic, payload in sent if "/probe-000/" in topic]
    kinds = [topic.split("/")[3] for topic, _ in device_topics]
    births = [index for index, kind in enumerate(kinds) if kind == "birth"]
    assert len(births) == 2
    seqs = [m.seq for m in telemetry(sent, "probe-000", STREAM)]  # type: ignore[attr-defined]
    assert seqs == list(range(len(seqs)))
    # What was sampled during the outage follows the second birth, all at once.
    after = [decode(p) for _, p in device_topics[births[1] + 1 :]]
    backlog = [m for m in after if isinstance(m, TelemetryReading)][:20]
    assert [m.seq for m in backlog] == list(range(backlog[0].seq, backlog[0].seq + 20))
    assert isinstance(decode(device_topics[births[1]][1]), DeviceBirth)
    [outage] = [r for r in fleet.truth.records if r["kind"] == "outage"]
    assert outage["device"] == "probe-000"
    assert outage["end_ts"] - outage["start_ts"] == pytest.approx(20.0)
    assert fleet.device("probe-000").counters.simulated_reconnects == 1  # type: ignore[union-attr]


def test_the_catalogue_covers_every_kind_and_rules_need_one_timing() -> None:
    assert set(CATALOGUE) == set(FaultKind)
    with pytest.raises(ValueError, match="exactly one"):
        FaultRule(FaultKind.SPIKE)
    with pytest.raises(ValueError, match="exactly one"):
        FaultRule(FaultKind.SPIKE, at_s=1.0, every_s=2.0)


async def test_malformed_alongside_keeps_the_valid_reading() -> None:
    _, clean_sent = await run_with(None)
    fleet, sent = await run_with({"kind": "malformed", "at_s": 10, "duration_s": 3, "alongside": True})
    assert readings(sent).keys() == readings(clean_sent).keys()
    on_topic = [p for t, p in sent if t.endswith(f"/{DEVICE}/telemetry/{STREAM}")]
    assert len(on_topic) == len(readings(clean_sent)) + 3
    assert fleet.totals().malformed == 3
