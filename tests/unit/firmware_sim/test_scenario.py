from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.errors import ScenarioError
from firmware_sim.fleet import Fleet
from firmware_sim.profiles import BUILT_IN, resolve_profile
from firmware_sim.scenario import load_scenario, parse_scenario
from firmware_sim.settings import SimSettings
from tests.unit.firmware_sim.conftest import scenario


def build(document: dict[str, object]) -> Fleet:
    return Fleet(SimSettings(mode="memory"), parse_scenario(document))


def test_groups_name_devices_and_override_rates_and_parameters() -> None:
    fleet = build(
        scenario(
            sites=[
                {
                    "name": "plant-1",
                    "devices": [
                        {"profile": "climate", "count": 3, "rates": {"humidity": 0.5}},
                        {"profile": "motor", "count": 1, "prefix": "fan", "params": {"vibration": {"shaft_hz": 50.0}}},
                    ],
                }
            ]
        )
    )
    assert fleet.device_ids() == ["climate-000", "climate-001", "climate-002", "fan-000"]
    climate = fleet.device("climate-001")
    assert climate is not None
    assert [s.config.rate_hz for s in climate.streams] == [0.1, 0.5]
    fan = fleet.device("fan-000")
    assert fan is not None
    assert 48.0 < fan.streams[0].signal.shaft_hz < 52.0  # type: ignore[attr-defined]


def test_custom_profiles_extend_built_in_ones() -> None:
    document = scenario(
        profiles={
            "cold_room": {
                "extends": "climate",
                "streams": [
                    {"name": "temperature", "signal": "temperature", "rate_hz": 1.0, "params": {"mean": 4.0}},
                    {"name": "door", "signal": "humidity", "rate_hz": 0.2},
                ],
            }
        },
        sites=[{"name": "shop", "devices": [{"profile": "cold_room", "count": 1}]}],
    )
    fleet = build(document)
    device = fleet.devices[0]
    assert [s.name for s in device.streams] == ["temperature", "humidity", "door"]
    assert device.streams[0].config.rate_hz == 1.0
    assert resolve_profile("climate", {}).streams == BUILT_IN["climate"].streams


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sites": [{"name": "a", "devices": [{"profile": "toaster"}]}]}, "unknown profile"),
        ({"sites": [{"name": "a", "devices": [{"profile": "climate", "rates": {"co2": 1.0}}]}]}, "no stream 'co2'"),
        (
            {
                "sites": [
                    {"name": "a", "devices": [{"profile": "thermometer", "prefix": "x"}]},
                    {"name": "b", "devices": [{"profile": "thermometer", "prefix": "x"}]},
                ]
            },
            "appears twice",
        ),
        ({"faults": [{"kind": "bearing_fault", "at_s": 1.0}]}, "vibration"),
        (
            {
                "profiles": {"a": {"extends": "b"}, "b": {"extends": "a"}},
                "sites": [{"name": "s", "devices": [{"profile": "a"}]}],
            },
            "extends itself",
        ),
    ],
)
def test_impossible_scenarios_are_refused_with_the_reason(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        build(scenario(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"faults": [{"kind": "spike"}]},
        {"faults": [{"kind": "spike", "at_s": 1, "every_s": 2}]},
        {"faults": [{"kind": "sneeze", "at_s": 1}]},
        {"clock": "live", "speed": 0.0},
        {"sites": []},
        {"surprise": True},
    ],
)
def test_invalid_scenarios_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ScenarioError):
        parse_scenario(scenario(**changes))


def test_scenario_files_and_bare_names(tmp_path: Path) -> None:
    assert load_scenario("plant").name == "plant"
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(broken)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")


def test_without_a_scenario_the_settings_describe_the_demos_meters() -> None:
    settings = SimSettings(devices=3, rate_hz=8.0, spike_probability=0.05, malformed_probability=0.01, site="demo")
    implicit = settings.load()
    assert implicit.clock == "live"
    assert implicit.devices == 3
    assert {fault.kind for fault in implicit.faults} == {"spike", "malformed"}
    assert SimSettings(duration_s=5.0, speed=1.0, scenario=Path("plant")).load().duration_s == 5.0
