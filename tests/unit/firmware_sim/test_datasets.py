from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.datasets import (
    ACSF1_CLASSES,
    BASIC_MOTIONS_CHANNELS,
    PLAID_CLASSES,
    DatasetError,
    acsf1,
    basic_motions,
    italy_power_demand,
    plaid,
    read_ts,
)


def test_italy_power_demand_loads_the_official_splits() -> None:
    test = italy_power_demand("test")
    assert test.values.shape == (1029, 24)
    assert italy_power_demand("train").values.shape == (67, 24)
    assert set(test.labels) == {"winter", "summer"}
    with pytest.raises(DatasetError):
        italy_power_demand("validation")


def test_appliance_and_motion_recordings_load_with_their_labels() -> None:
    currents = plaid("train")
    assert len(currents.recordings) == 537
    assert set(currents.labels) == set(PLAID_CLASSES)
    assert {len(r[0]) for r in currents.recordings} >= {100, 1344}
    powers = acsf1("train")
    assert {r.shape for r in powers.recordings} == {(1, 1460)}
    assert set(powers.labels) == set(ACSF1_CLASSES)
    motions = basic_motions("train")
    assert motions.channels == BASIC_MOTIONS_CHANNELS
    assert {r.shape for r in motions.recordings} == {(6, 100)}
    assert set(motions.labels) == {"standing", "walking", "running", "badminton"}
    assert motions.of_class("running")


def test_ts_reader_reports_where_a_file_is_broken(tmp_path: Path) -> None:
    broken = tmp_path / "x.ts"
    broken.write_text("@data\n1,2,oops:1\n")
    with pytest.raises(DatasetError, match=r"x\.ts:2"):
        read_ts(broken)
    (tmp_path / "empty.ts").write_text("# nothing\n")
    with pytest.raises(DatasetError, match="no @data"):
        read_ts(tmp_path / "empty.ts")
