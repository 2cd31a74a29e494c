"""Scenario files (TOML): what a simulated fleet is, and what happens to it.

A scenario names its sites and, per site, groups of devices (a profile and a count, with rate and
parameter overrides); custom profiles; a fault schedule; network impairments (outage windows, added
latency); the duration, the clock and the seed. The same scenario and seed give the same payloads,
byte for byte. ``firmware_sim/scenarios/`` ships examples; ``docs/simulator.md`` describes every key.
"""

from __future__ import annotations

import fnmatch
import math
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from firmware_sim.errors import ScenarioError
from firmware_sim.faults import Direction, FaultKind, FaultRule

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]

SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StreamSpec(_Spec):
    """One stream of a profile: a signal model sampled at a rate, sent one sample or ``batch`` at a time."""

    name: Identifier
    signal: str
    rate_hz: float = Field(gt=0.0, le=100_000.0)
    batch: int = Field(default=1, ge=1, le=65_536)
    decimals: int = Field(default=3, ge=0, le=9)
    params: dict[str, Any] = Field(default_factory=dict)


class ProfileSpec(_Spec):
    """A kind of device: the streams it samples. ``extends`` starts from another profile; streams of
    the same name replace the base's, new ones are added."""

    description: str = ""
    extends: str | None = None
    streams: list[StreamSpec] = Field(default_factory=list)
    firmware_version: str | None = None


class DeviceGroup(_Spec):
    """``count`` devices of one profile, named ``<prefix>-<index>``."""

    profile: str
    count: int = Field(default=1, ge=1, le=100_000)
    prefix: Identifier | None = None
    rate_hz: float | None = Field(default=None, gt=0.0, description="Overrides every stream's rate.")
    rates: dict[str, float] = Field(default_factory=dict, description="Per-stream rate overrides.")
    params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Per-stream signal parameters.")


class SiteSpec(_Spec):
    name: Identifier
    devices: list[DeviceGroup] = Field(min_length=1)


class FaultSpec(_Spec):
    """A fault rule applied to the streams whose ``site/device`` and stream names match the globs;
    ``share`` of the matching devices (chosen by the seed) get it."""

    kind: FaultKind
    devices: str = "*"
    stream: str = "*"
    share: float = Field(default=1.0, ge=0.0, le=1.0)
    at_s: float | None = Field(default=None, ge=0.0)
    every_s: float | None = Field(default=None, gt=0.0)
    probability: float | None = Field(default=None, ge=0.0, le=1.0)
    duration_s: float | None = Field(default=None, ge=0.0)
    magnitude: float | None = None
    direction: Direction = "up"
    ramp_s: float = Field(default=60.0, gt=0.0)
    alongside: bool = Field(default=False, description="Malformed: garbage next to the valid message.")

    @model_validator(mode="after")
    def _one_timing(self) -> FaultSpec:
        given = [value is not None for value in (self.at_s, self.every_s, self.probability)]
        if sum(given) != 1:
            raise ValueError(f"a {self.kind} fault needs exactly one of at_s, every_s, probability")
        return self

    def rule(self) -> FaultRule:
        return FaultRule(
            kind=self.kind,
            at_s=self.at_s,
            every_s=self.every_s,
            probability=self.probability,
            duration_s=self.duration_s,
            magnitude=self.magnitude,
            direction=self.direction,
            ramp_s=self.ramp_s,
            alongside=self.alongside,
        )

    def matches(self, site: str, device: str, stream: str) -> bool:
        return fnmatch.fnmatchcase(f"{site}/{device}", self.devices) and fnmatch.fnmatchcase(stream, self.stream)


class OutageSpec(_Spec):
    """A window in which the matching devices' link is down: they buffer, then reconnect."""

    start_s: float = Field(ge=0.0)
    duration_s: float = Field(gt=0.0)
    devices: str = "*"

    def matches(self, site: str, device: str) -> bool:
        return fnmatch.fnmatchcase(f"{site}/{device}", self.devices)


class NetworkSpec(_Spec):
    latency_ms: float = Field(default=0.0, ge=0.0, description="Added delay between sampling and sending.")
    jitter_ms: float = Field(default=0.0, ge=0.0, description="Random extra delay (order is kept).")
    outages: list[OutageSpec] = Field(default_factory=list)


class Scenario(_Spec):
    """A whole simulated run."""

    name: str = "scenario"
    description: str = ""
    seed: int = Field(default=0, ge=0, lt=2**63)
    duration_s: float = Field(default=0.0, ge=0.0, description="Simulated seconds; 0 runs until stopped.")
    start: datetime = Field(
        default=datetime(2026, 1, 1, tzinfo=UTC), description="Timestamp origin of reproducible runs."
    )
    clock: Literal["reproducible", "live"] = "reproducible"
    speed: float = Field(
        default=1.0, ge=0.0, description="Simulated seconds per wall second; 0 runs as fast as possible."
    )
    health_interval_s: float = Field(default=60.0, gt=0.0)
    buffer_limit: int = Field(default=10_000, ge=1)
    telemetry_qos: Literal[0, 1] = 1
    firmware_version: str = "sim-1.0.0"
    profiles: dict[str, ProfileSpec] = Field(default_factory=dict)
    sites: list[SiteSpec] = Field(min_length=1)
    faults: list[FaultSpec] = Field(default_factory=list)
    network: NetworkSpec = NetworkSpec()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.clock == "live" and self.speed not in (1.0,):
            raise ValueError("a live clock runs at speed 1 (timestamps follow the wall clock)")
        return self

    @property
    def devices(self) -> int:
        return sum(group.count for site in self.sites for group in site.devices)

    @property
    def start_epoch(self) -> float:
        start = self.start if self.start.tzinfo is not None else self.start.replace(tzinfo=UTC)
        return start.timestamp()

    @property
    def finite(self) -> bool:
        return self.duration_s > 0.0 and not math.isinf(self.duration_s)


def parse_scenario(document: dict[str, Any], *, source: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(document)
    except ValidationError as exc:
        raise ScenarioError(f"invalid {source}: {exc}") from exc


def load_scenario(path: Path | str) -> Scenario:
    """Read a scenario file; a bare name (``plant``) is looked up among the shipped examples."""
    candidate = Path(path)
    if not candidate.suffix and not candidate.exists():
        candidate = SCENARIOS_DIR / f"{candidate}.toml"
    try:
        document = tomllib.loads(candidate.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"cannot read scenario {candidate}: {exc}") from exc
    return parse_scenario(document, source=str(candidate))


def shipped_scenarios() -> list[Path]:
    """The example scenarios that ship with the simulator."""
    return sorted(SCENARIOS_DIR.glob("*.toml"))
