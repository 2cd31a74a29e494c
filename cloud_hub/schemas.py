"""What the REST API takes (``*Create``, ``*Register``, ``*Upload``) and returns (``*Public``).

One schema per direction: requests forbid unknown fields; responses ignore fields they do not know.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud_hub.adjudication import Judge
from cloud_hub.auth import Principal
from cloud_hub.drift import DriftReport
from cloud_hub.ingest import IngestCounters
from cloud_hub.rollout import CohortStats, RolloutStatus
from cloud_hub.store import (
    AgreementStat,
    ApiToken,
    AuditEntry,
    Device,
    DeviceStatus,
    DriftAlert,
    Event,
    EventKind,
    ModelVersion,
    RetrainingTrigger,
    Rollout,
    RolloutState,
    RolloutTransition,
    Scope,
    StoreStats,
)
from protocol.manifest import ModelManifest
from protocol.messages import Identifier, SensorKind, Verdict


class _Schema(BaseModel):
    # Responses are built from stored JSON too: a field a later protocol version adds is left out, not an error.
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Page(_Schema):
    """One page of a listing: ``items`` (declared by each listing), the full count, and where the page starts."""

    total: int
    limit: int
    offset: int


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
    device_group: str
    registered_at: datetime | None
    edge_model: str | None = Field(description="The edge model of the device's latest escalation.")
    edge_model_version: str | None
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
            device_group=device.device_group,
            registered_at=device.registered_at,
            edge_model=device.edge_model,
            edge_model_version=device.edge_model_version,
            status=device.status,
            status_since=device.status_since,
            firmware_version=device.firmware_version,
            streams=[StreamPublic.model_validate(stream) for stream in device.streams],
            first_seen=device.first_seen,
            last_seen=device.last_seen,
            last_health=health,
            last_death_reason=device.last_death_reason,
        )


class DevicesPublic(_Page):
    items: list[DevicePublic]


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


class EventsPublic(_Page):
    items: list[EventPublic]


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


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeviceRegister(_Request):
    device_id: Identifier
    site: Identifier
    device_group: Identifier | None = Field(default=None, description="Defaults to the site.")


class EscalationResultPublic(_Schema):
    verdict: Verdict
    duplicate: bool = Field(description="The escalation had been judged before; this is its stored verdict.")
    published: bool = Field(description="The verdict was also published to the device's verdict topic.")


class ModelUpload(_Request):
    manifest: ModelManifest
    artifact_base64: str = Field(min_length=1, description="The artifact's bytes, base64 (standard alphabet).")
    card: dict[str, Any] | None = Field(default=None, description="The model card (JSON), if there is one.")


class ModelAnchorPublic(_Schema):
    """Where the model's sha256 is anchored on chain (under ``<name>@<version>``)."""

    model_id: str
    contract: str
    tx_hash: str | None = Field(description="Null when an earlier, interrupted upload sent the transaction.")
    block_number: int | None


class RegisteredModelPublic(_Schema):
    name: str
    version: str
    role: str
    task: str
    sha256: str
    bytes: int
    signed: bool
    uploaded_at: datetime
    uploaded_by: int | None
    anchor: ModelAnchorPublic | None = Field(default=None, description="Null: the hub anchors no models.")

    @classmethod
    def from_row(cls, row: ModelVersion) -> RegisteredModelPublic:
        return cls(
            name=row.name,
            version=row.version,
            role=row.role,
            task=row.task,
            sha256=row.sha256,
            bytes=row.size_bytes,
            signed=row.manifest.get("signature") is not None,
            uploaded_at=row.uploaded_at,
            uploaded_by=row.uploaded_by,
            anchor=(
                ModelAnchorPublic(
                    model_id=f"{row.name}@{row.version}",
                    contract=row.anchor_contract,
                    tx_hash=row.anchor_tx,
                    block_number=row.anchor_block,
                )
                if row.anchor_contract is not None
                else None
            ),
        )


class ChainPublic(_Schema):
    """The chain the hub anchors models on, for devices to check a model before they load it."""

    rpc_url: str = Field(description="An Ethereum JSON-RPC endpoint serving at least eth_call.")
    contract_address: str
    model_id_format: str = Field(default="{name}@{version}", description="How a model's anchor id is formed.")


class RegisteredModelsPublic(_Page):
    items: list[RegisteredModelPublic]


class AgreementPublic(_Schema):
    edge_model: str
    edge_model_version: str
    device_group: str
    judged: int
    agreed: int
    agreement_rate: float
    first_at: datetime
    last_at: datetime

    @classmethod
    def from_row(cls, row: AgreementStat) -> AgreementPublic:
        return cls(
            edge_model=row.edge_model,
            edge_model_version=row.edge_model_version,
            device_group=row.device_group,
            judged=row.judged,
            agreed=row.agreed,
            agreement_rate=row.agreed / row.judged if row.judged else 0.0,
            first_at=row.first_at,
            last_at=row.last_at,
        )


class ModelCardPublic(_Schema):
    model: RegisteredModelPublic
    manifest: dict[str, Any]
    card: dict[str, Any] | None
    agreement: list[AgreementPublic] = Field(description="How often the full model agreed with this version.")


class RolloutCreate(_Request):
    model_name: Identifier
    model_version: str = Field(min_length=1, max_length=64)
    device_group: Identifier
    canary_percent: float = Field(gt=0.0, le=100.0, allow_inf_nan=False)
    incumbent_version: str | None = Field(
        default=None, min_length=1, max_length=64, description="Defaults to the group's last promoted version."
    )
    min_samples: int | None = Field(default=None, ge=1, le=1_000_000)
    tolerance: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)


class RolloutAction(_Request):
    reason: str | None = Field(default=None, max_length=400)


class RolloutPublic(_Schema):
    id: int
    model_name: str
    model_version: str
    incumbent_version: str | None
    device_group: str
    canary_percent: float
    min_samples: int
    tolerance: float
    state: RolloutState
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Rollout) -> RolloutPublic:
        return cls(
            id=row.id,
            model_name=row.model_name,
            model_version=row.model_version,
            incumbent_version=row.incumbent_version,
            device_group=row.device_group,
            canary_percent=row.canary_percent,
            min_samples=row.min_samples,
            tolerance=row.tolerance,
            state=row.state,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class RolloutsPublic(_Page):
    items: list[RolloutPublic]


class TransitionPublic(_Schema):
    at: datetime
    from_state: RolloutState | None
    to_state: RolloutState
    reason: str
    actor: str
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, row: RolloutTransition) -> TransitionPublic:
        return cls(
            at=row.at,
            from_state=row.from_state,
            to_state=row.to_state,
            reason=row.reason,
            actor=row.actor,
            detail=dict(row.detail),
        )


class CohortPublic(_Schema):
    devices: int
    judged: int
    agreed: int
    errors: int
    agreement_rate: float | None
    error_rate: float | None

    @classmethod
    def from_stats(cls, stats: CohortStats) -> CohortPublic:
        return cls.model_validate(stats.as_dict())


class DecisionPublic(_Schema):
    target: RolloutState | None = Field(description="What the figures call for now; null: keep waiting.")
    reason: str


class RolloutStatusPublic(_Schema):
    rollout: RolloutPublic
    canary: CohortPublic
    incumbent: CohortPublic
    decision: DecisionPublic
    transitions: list[TransitionPublic]

    @classmethod
    def from_status(cls, status: RolloutStatus) -> RolloutStatusPublic:
        return cls(
            rollout=RolloutPublic.from_row(status.rollout),
            canary=CohortPublic.from_stats(status.canary),
            incumbent=CohortPublic.from_stats(status.incumbent),
            decision=DecisionPublic(target=status.decision.target, reason=status.decision.reason),
            transitions=[TransitionPublic.from_row(row) for row in status.transitions],
        )


class DriftAlertPublic(_Schema):
    id: int
    at: datetime
    device_group: str
    model: str
    model_version: str
    metric: str
    psi: float
    ks: float
    ks_p_value: float
    threshold_psi: float
    live_count: int
    reference_count: int

    @classmethod
    def from_row(cls, row: DriftAlert) -> DriftAlertPublic:
        return cls(
            id=row.id,
            at=row.at,
            device_group=row.device_group,
            model=row.model,
            model_version=row.model_version,
            metric=row.metric,
            psi=row.psi,
            ks=row.ks,
            ks_p_value=row.ks_p_value,
            threshold_psi=row.threshold_psi,
            live_count=row.live_count,
            reference_count=row.reference_count,
        )


class DriftAlertsPublic(_Page):
    items: list[DriftAlertPublic]


class TriggerPublic(_Schema):
    id: int
    at: datetime
    device_group: str
    model: str
    model_version: str
    reason: str
    alert_id: int | None
    consumed_at: datetime | None
    consumed_by: str | None

    @classmethod
    def from_row(cls, row: RetrainingTrigger) -> TriggerPublic:
        return cls(
            id=row.id,
            at=row.at,
            device_group=row.device_group,
            model=row.model,
            model_version=row.model_version,
            reason=row.reason,
            alert_id=row.alert_id,
            consumed_at=row.consumed_at,
            consumed_by=row.consumed_by,
        )


class TriggersPublic(_Page):
    items: list[TriggerPublic]


class DriftCheckPublic(_Schema):
    checked: int = Field(description="Metrics compared (per group, model version and metric).")
    drifted: int
    alerts: list[DriftAlertPublic]
    triggers: list[TriggerPublic]

    @classmethod
    def from_report(cls, report: DriftReport) -> DriftCheckPublic:
        return cls(
            checked=len(report.checked),
            drifted=sum(check.drifted for check in report.checked),
            alerts=[DriftAlertPublic.from_row(alert) for alert in report.alerts],
            triggers=[TriggerPublic.from_row(trigger) for trigger in report.triggers],
        )


class TokenCreate(_Request):
    scope: Scope
    device_id: Identifier | None = Field(default=None, description="Required for (and only for) device tokens.")
    label: str = Field(default="", max_length=128)


class TokenPublic(_Schema):
    id: int
    scope: Scope
    device_id: str | None
    label: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: ApiToken) -> TokenPublic:
        return cls(
            id=row.id,
            scope=row.scope,
            device_id=row.device_id,
            label=row.label,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )


class TokenCreatedPublic(_Schema):
    token: str = Field(description="The secret, shown this once; the hub keeps only its sha256.")
    id: int
    scope: Scope
    device_id: str | None


class WhoAmIPublic(_Schema):
    token_id: int
    scope: Scope
    device_id: str | None
    label: str

    @classmethod
    def from_principal(cls, principal: Principal) -> WhoAmIPublic:
        return cls(
            token_id=principal.token_id, scope=principal.scope, device_id=principal.device_id, label=principal.label
        )


class AuditEntryPublic(_Schema):
    id: int
    at: datetime
    token_id: int | None
    scope: str | None
    device_id: str | None
    action: str
    target: str
    status: int
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, row: AuditEntry) -> AuditEntryPublic:
        return cls(
            id=row.id,
            at=row.at,
            token_id=row.token_id,
            scope=row.scope,
            device_id=row.device_id,
            action=row.action,
            target=row.target,
            status=row.status,
            detail=dict(row.detail),
        )


class AuditPublic(_Page):
    items: list[AuditEntryPublic]


class InvalidPublic(_Schema):
    """A 422: a reason (from the hub) or, for a request that does not fit its schema, the list of issues."""

    detail: str | list[dict[str, Any]]
