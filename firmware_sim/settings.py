"""Settings of ``edgefleet sim run``; TOML table ``[sim]``, environment ``EDGEFLEET_SIM_*``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from protocol.broker import BrokerSettings
from protocol.settings import DeployableSettings


class SimSettings(DeployableSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_SIM_", env_nested_delimiter="__", extra="forbid")

    site: str = "site-1"
    devices: int = Field(default=5, ge=1, le=100_000)
    device_prefix: str = "meter"
    broker: BrokerSettings = BrokerSettings()
    rate_hz: float = Field(default=8.0, gt=0.0, le=1000.0, description="Readings per second per device.")
    seed: int = 0
    spike_probability: float = Field(default=0.05, ge=0.0, le=1.0, description="Chance a day carries a spike.")
    malformed_probability: float = Field(default=0.0, ge=0.0, le=1.0, description="Chance a send is garbage.")
    health_interval_s: float = Field(default=10.0, gt=0.0)
    buffer_limit: int = Field(default=10_000, ge=1, description="Readings kept while disconnected.")
    firmware_version: str = "sim-0.1.0"
    ground_truth: Path | None = Field(default=None, description="JSON Lines file of injected faults.")
