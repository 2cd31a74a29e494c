from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from firmware_sim.datasets import DatasetError, italy_power_demand, read_ts
from firmware_sim.fleet import Fleet
from firmware_sim.meter import PowerMeter
from firmware_sim.settings import SimSettings


def test_italy_power_demand_loads_the_official_splits() -> None:
    test = italy_power_demand("test")
    train = italy_power_demand("train")
    assert test.values.shape == (1029, 24)
    assert train.values.shape == (67, 24)
    assert set(test.labels) == {"winter", "summer"}
    with pytest.raises(DatasetError):
        italy_power_demand("validation")


def test_ts_reader_reports_where_a_file_is_broken(tmp_path: Path) -> None:
    broken = tmp_path / "x.ts"
    broken.write_text("@data\n1,2,oops:1\n")
    with pytest.raises(DatasetError, match=r"x\.ts:2"):
        read_ts(broken)


def test_a_meter_replays_whole_days_and_is_deterministic() -> None:
    days = italy_power_demand("test")
    first = [s.value_kw for s in itertools.islice(PowerMeter("m", days, seed=3, spike_probability=0.0).samples(), 96)]
    again = [s.value_kw for s in itertools.islice(PowerMeter("m", days, seed=3, spike_probability=0.0).samples(), 96)]
    other = [s.value_kw for s in itertools.islice(PowerMeter("m", days, seed=4, spike_probability=0.0).samples(), 96)]
    assert first == again
    assert first != other
    assert min(first) > 0.0
    # A day is a z-normalized profile scaled to the meter's load: it correlates with a dataset row.
    meter = PowerMeter("m", days, seed=3, spike_probability=0.0)
    day = np.array([s.value_kw for s in itertools.islice(meter.samples(), 24)])
    best = max(np.corrcoef(day, row)[0, 1] for row in days.values)
    assert best > 0.999
    assert meter.day_labels[0] in {"winter", "summer"}


def test_spikes_are_recorded_as_ground_truth(tmp_path: Path) -> None:
    days = italy_power_demand("test")
    meter = PowerMeter("m", days, seed=1, spike_probability=1.0)
    samples = list(itertools.islice(meter.samples(), 48))
    spiked = [s for s in samples if s.fault == "spike"]
    assert len(spiked) == 2
    assert [(f.start_seq, f.kind) for f in meter.faults] == [(s.seq, "spike") for s in spiked]
    day = [s.value_kw for s in samples if s.seq // 24 == spiked[0].seq // 24]
    assert spiked[0].value_kw == max(day)

    fleet = Fleet(SimSettings(devices=2, spike_probability=1.0, ground_truth=tmp_path / "truth.jsonl"))
    for device in fleet.devices:
        list(itertools.islice(device.meter.samples(), 24))
    fleet.write_ground_truth()
    records = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert {r["device"] for r in records} == {"meter-000", "meter-001"}
    assert all(r["kind"] == "spike" and r["stream"] == "power" for r in records)
