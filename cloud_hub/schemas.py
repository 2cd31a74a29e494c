"""What the REST API returns (``*Public``). Requests so far carry only query parameters, checked in the routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud_hub.adjudication import Judge
from cloud_hub.ingest import IngestCounters
from cloud_hub.store import Device, DeviceStatus, Event, EventKind, StoreStats
from protocol.messages import SensorKind


class _Schema(BaseModel):
    # Responses are built from stored JSON too: a field a later protocol version adds is left out, not an error.
    model_config = ConfigDict(frozen=True, extra="ignore")


class StreamPublic(_Schema):
    name: str
    sensor: SensorKind
    unit: str
    sample_rate_hz: float


class DeviceHealthPublic(_Schema):
    reported_at: datetime
    uptime_s: float
    messages_sent: int
    buffered: int = 0
    reconnects: int = 0
    cpu_percent: float | None = None
    memory_bytes: int | None = None


class DevicePublic(_Schema):
    device_id: str
    site: str
    status: DeviceStatus
    status_since: datetime | None
    firmware_version: str | None
    streams: list[StreamPublic]
    first_seen: datetime
    last_seen: datetime
    last_health: DeviceHealthPublic | None
    last_death_reason: str | None

    @classmethod
    def from_row(cls, device: Device) -> DevicePublic:
        health = None
        if device.last_health is not None and device.last_health_at is not None:
            health = DeviceHealthPublic.model_validate({**device.last_health, "reported_at": device.last_health_at})
        return cls(
            device_id=device.device_id,
            site=device.site,
            status=device.status,
            status_since=device.status_since,
            firmware_version=device.firmware_version,
            streams=[StreamPublic.model_validate(stream) for stream in device.streams],
            first_seen=device.first_seen,
            last_seen=device.last_seen,
            last_health=health,
            last_death_reason=device.last_death_reason,
        )


class DevicesPublic(_Schema):
    items: list[DevicePublic]
    total: int
    limit: int
    offset: int


class OutcomePublic(_Schema):
    model: str
    model_version: str
    label: str
    confidence: float
    anomaly_score: float


class EventPublic(_Schema):
    id: int
    message_id: str
    device_id: str
    site: str
    kind: EventKind
    stream: str | None
    occurred_at: datetime
    received_at: datetime
    edge: OutcomePublic | None
    verdict: OutcomePublic | None
    agrees_with_edge: bool | None
    reasons: list[str]
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, event: Event) -> EventPublic:
        return cls(
            id=event.id,
            message_id=event.message_id,
            device_id=event.device_id,
            site=event.site,
            kind=event.kind,
            stream=event.stream,
            occurred_at=event.occurred_at,
            received_at=event.received_at,
            edge=_outcome(
                event.edge_model,
                event.edge_model_version,
                event.edge_label,
                event.edge_confidence,
                event.edge_anomaly_score,
            ),
            verdict=_outcome(
                event.verdict_model,
                event.verdict_model_version,
                event.verdict_label,
                event.verdict_confidence,
                event.verdict_anomaly_score,
            ),
            agrees_with_edge=event.agrees,
            reasons=list(event.reasons),
            detail=dict(event.detail),
        )


def _outcome(
    model: str | None, version: str | None, label: str | None, confidence: float | None, anomaly: float | None
) -> OutcomePublic | None:
    if model is None or version is None or label is None or confidence is None or anomaly is None:
        return None
    return OutcomePublic(model=model, model_version=version, label=label, confidence=confidence, anomaly_score=anomaly)


class EventsPublic(_Schema):
    items: list[EventPublic]
    total: int
    limit: int
    offset: int


class StatsPublic(_Schema):
    devices: int
    devices_by_status: dict[str, int]
    events: int
    events_by_kind: dict[str, int]
    escalations: int = Field(description="Escalations judged and stored, each once however often it arrived.")
    verdicts_agreeing: int = Field(description="Verdicts whose label agrees with the edge's.")
    verdicts_disagreeing: int

    @classmethod
    def from_stats(cls, stats: StoreStats) -> StatsPublic:
        return cls(
            devices=stats.devices,
            devices_by_status=stats.devices_by_status,
            events=stats.events,
            events_by_kind=stats.events_by_kind,
            escalations=stats.escalations,
            verdicts_agreeing=stats.verdicts_agreeing,
            verdicts_disagreeing=stats.verdicts_disagreeing,
        )


class ModelPublic(_Schema):
    name: str
    version: str
    sha256: str
    window_size: int
    labels: list[str]

    @classmethod
    def from_judge(cls, judge: Judge) -> ModelPublic:
        manifest = judge.manifest
        return cls(
            name=manifest.name,
            version=manifest.version,
            sha256=manifest.sha256,
            window_size=manifest.input.window_size,
            labels=list(manifest.output.labels),
        )


class IngestPublic(_Schema):
    subscribed: bool
    received: dict[str, int]
    rejected: dict[str, int]
    failures: dict[str, int]
    judged: int
    verdicts_sent: int
    duplicates: int
    connections: int

    @classmethod
    def from_counters(cls, counters: IngestCounters, *, subscribed: bool) -> IngestPublic:
        return cls(
            subscribed=subscribed,
            received=dict(counters.received),
            rejected=dict(counters.rejected),
            failures=dict(counters.failures),
            judged=counters.judged,
            verdicts_sent=counters.verdicts_sent,
            duplicates=counters.duplicates,
            connections=counters.connections,
        )


class HealthPublic(_Schema):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unavailable"]
    model: ModelPublic | None
    ingest: IngestPublic | None
    demo_mode: bool


class ProblemPublic(_Schema):
    detail: str
