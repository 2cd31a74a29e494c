"""Settings of ``edgefleet sim run``; TOML table ``[sim]``, environment ``EDGEFLEET_SIM_*``.

With ``scenario`` set, the scenario file says what is simulated and these settings say where it
goes (broker, connection mode, ground-truth file). Without one, the fleet is the implicit scenario
the demo uses: ``devices`` smart meters on a live clock, with spike and malformed-payload faults.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from firmware_sim.faults import FaultKind
from firmware_sim.scenario import DeviceGroup, FaultSpec, Scenario, SiteSpec, load_scenario, parse_scenario
from protocol.broker import BrokerSettings
from protocol.settings import DeployableSettings

ConnectionMode = Literal["per_device", "multiplexed", "memory"]


class SimSettings(DeployableSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_SIM_", env_nested_delimiter="__", extra="forbid")

    scenario: Path | None = Field(default=None, description="Scenario file (TOML); a bare name picks a shipped one.")
    mode: ConnectionMode = Field(
        default="per_device",
        description="per_device: one MQTT connection per device (client id = device id, Last Will); "
        "multiplexed: devices share a few connections (load generation); memory: no broker (tests).",
    )
    connections: int = Field(default=4, ge=1, le=1024, description="Connections of the multiplexed mode.")
    max_inflight: int = Field(
        default=10_000, ge=1, le=65_535, description="QoS 1 messages unacknowledged per connection."
    )
    connect_concurrency: int = Field(default=256, ge=1, description="Connection attempts in progress at once.")
    speed: float | None = Field(default=None, ge=0.0, description="Overrides the scenario's speed (0 = unpaced).")
    duration_s: float | None = Field(default=None, ge=0.0, description="Overrides the scenario's duration.")
    ground_truth: Path | None = Field(default=None, description="JSON Lines file of injected faults.")
    broker: BrokerSettings = BrokerSettings()

    # The implicit scenario (no scenario file): smart meters, as the demo runs them.
    site: str = "site-1"
    devices: int = Field(default=5, ge=1, le=100_000)
    device_prefix: str = "meter"
    rate_hz: float = Field(default=8.0, gt=0.0, le=1000.0, description="Readings per second per device.")
    seed: int = 0
    spike_probability: float = Field(default=0.05, ge=0.0, le=1.0, description="Chance a day carries a spike.")
    malformed_probability: float = Field(default=0.0, ge=0.0, le=1.0, description="Chance a send is garbage.")
    health_interval_s: float = Field(default=10.0, gt=0.0)
    buffer_limit: int = Field(default=10_000, ge=1, description="Messages kept while disconnected.")
    firmware_version: str = "sim-0.1.0"

    def load(self) -> Scenario:
        """The scenario to run: the file's, or the implicit smart-meter fleet; with overrides applied."""
        scenario = load_scenario(self.scenario) if self.scenario is not None else self.implicit_scenario()
        updates: dict[str, object] = {}
        if self.speed is not None:
            updates["speed"] = self.speed
        if self.duration_s is not None:
            updates["duration_s"] = self.duration_s
        if not updates:
            return scenario
        return parse_scenario({**scenario.model_dump(), **updates}, source=f"scenario {scenario.name!r}")

    def implicit_scenario(self) -> Scenario:
        faults = []
        if self.spike_probability > 0.0:
            # A day is 24 readings: the chance per reading that gives the chance per day.
            per_reading = 1.0 - math.pow(1.0 - self.spike_probability, 1.0 / 24.0)
            faults.append(FaultSpec(kind=FaultKind.SPIKE, probability=min(per_reading, 1.0)))
        if self.malformed_probability > 0.0:
            faults.append(FaultSpec(kind=FaultKind.MALFORMED, probability=self.malformed_probability))
        return Scenario(
            name="smart-meters",
            seed=self.seed,
            clock="live",
            health_interval_s=self.health_interval_s,
            buffer_limit=self.buffer_limit,
            firmware_version=self.firmware_version,
            sites=[
                SiteSpec(
                    name=self.site,
                    devices=[
                        DeviceGroup(
                            profile="smart_meter", count=self.devices, prefix=self.device_prefix, rate_hz=self.rate_hz
                        )
                    ],
                )
            ],
            faults=faults,
        )
