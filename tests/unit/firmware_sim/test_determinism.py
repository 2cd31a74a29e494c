"""The same scenario and seed give the same payloads, byte for byte."""

from __future__ import annotations

import pytest

from firmware_sim.scenario import load_scenario, shipped_scenarios
from protocol import TelemetryReading, decode
from tests.unit.firmware_sim.conftest import scenario, simulate, telemetry

FAULTS = [
    {"kind": "spike", "every_s": 20.0},
    {"kind": "drift", "at_s": 5.0, "duration_s": 30.0},
    {"kind": "malformed", "probability": 0.05},
    {"kind": "duplicate", "every_s": 30.0, "duration_s": 2.0},
    {"kind": "out_of_order", "every_s": 30.0, "duration_s": 2.0},
    {"kind": "clock_skew", "at_s": 40.0, "duration_s": 5.0},
    {"kind": "dropout", "at_s": 50.0, "duration_s": 3.0},
    {"kind": "bearing_fault", "stream": "vibration", "at_s": 3.0},
]
SITES = [
    {
        "name": "lab",
        "devices": [
            {"profile": "climate", "count": 2, "rate_hz": 1.0, "prefix": "room"},
            {"profile": "smart_meter", "count": 2, "rate_hz": 2.0, "prefix": "meter"},
            {"profile": "motor", "count": 1, "prefix": "motor"},
            {"profile": "smart_plug", "count": 1, "prefix": "plug"},
        ],
    }
]
NETWORK = {"latency_ms": 30.0, "jitter_ms": 10.0, "outages": [{"start_s": 20.0, "duration_s": 10.0}]}


async def test_same_scenario_and_seed_give_the_same_bytes() -> None:
    document = scenario(sites=SITES, faults=FAULTS, network=NETWORK)
    first_fleet, first = await simulate(document)
    _, second = await simulate(document)
    assert len(first) > 1500
    assert first == second
    assert first_fleet.truth.records == (await simulate(document))[0].truth.records
    _, other = await simulate({**document, "seed": 12})
    assert first != other


async def test_a_device_does_not_change_when_others_join_after_it() -> None:
    small = scenario(sites=[{"name": "lab", "devices": [{"profile": "thermometer", "count": 1, "prefix": "probe"}]}])
    large = scenario(sites=[{"name": "lab", "devices": [{"profile": "thermometer", "count": 5, "prefix": "probe"}]}])
    _, alone = await simulate(small)
    _, crowded = await simulate(large)
    mine = [payload for topic, payload in crowded if "/probe-000/" in topic]
    assert mine == [payload for _, payload in alone]


async def test_reproducible_timestamps_come_from_the_scenario_start() -> None:
    document = scenario(start="2026-05-01T00:00:00Z", duration_s=10.0)
    _, sent = await simulate(document)
    readings = [r for r in telemetry(sent, "probe-000", "temperature") if isinstance(r, TelemetryReading)]
    start = 1777593600.0  # 2026-05-01T00:00:00Z
    assert len(readings) == 10
    assert [round(r.timestamp - start - r.seq, 6) for r in readings] == [round(readings[0].timestamp - start, 6)] * len(
        readings
    )
    assert 0.0 <= readings[0].timestamp - start < 1.0


async def test_live_runs_stamp_wall_clock_time_and_random_ids() -> None:
    import time

    document = scenario(clock="live", speed=1.0, duration_s=1.5)
    before = time.time()
    _, first = await simulate(document)
    _, second = await simulate(document)
    stamps = [decode(payload).timestamp for _, payload in first]
    assert all(before - 1.0 < stamp < time.time() + 1.0 for stamp in stamps)
    assert {decode(p).message_id for _, p in first}.isdisjoint({decode(p).message_id for _, p in second})


@pytest.mark.parametrize("path", shipped_scenarios(), ids=lambda p: p.stem)
def test_shipped_scenarios_load_and_build(path: object) -> None:
    from firmware_sim.fleet import Fleet
    from firmware_sim.settings import SimSettings

    loaded = load_scenario(path)  # type: ignore[arg-type]
    if loaded.devices > 1000:
        loaded = loaded.model_copy(
            update={
                "sites": [
                    loaded.sites[0].model_copy(
                        update={"devices": [loaded.sites[0].devices[0].model_copy(update={"count": 10})]}
                    )
                ]
            }
        )
    fleet = Fleet(SimSettings(mode="memory"), loaded)
    assert len(fleet.devices) == loaded.devices
