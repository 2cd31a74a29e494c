from __future__ import annotations

from pathlib import Path

import pytest

from cloud_hub.settings import HubSettings
from edge_agent.settings import AgentSettings
from edgefleet.config import ConfigError, load_settings
from firmware_sim.settings import SimSettings

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "edgefleet.example.toml"


def test_the_example_settings_file_is_valid_for_every_deployable() -> None:
    agent = load_settings(AgentSettings, "agent", EXAMPLE)
    assert agent.policy.min_confidence == 0.8
    assert load_settings(HubSettings, "hub", EXAMPLE).share_group == "hub"
    assert load_settings(SimSettings, "sim", EXAMPLE).ground_truth == Path("var/sim-faults.jsonl")


def test_the_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_AGENT_SITE", "plant-9")
    monkeypatch.setenv("EDGEFLEET_AGENT_BROKER__PORT", "1999")
    agent = load_settings(AgentSettings, "agent", EXAMPLE)
    assert agent.site == "plant-9"
    assert agent.broker.port == 1999
    assert agent.broker.host == "127.0.0.1"


def test_bad_settings_are_refused_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[agent]\nmax_batch = 0\nunknown = "x"\n')
    with pytest.raises(ConfigError, match="max_batch"):
        load_settings(AgentSettings, "agent", bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[agent\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(AgentSettings, "agent", broken)
