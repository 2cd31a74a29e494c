"""The hub's REST API, versioned under ``/api/v1``, and its ASGI app.

Routes are thin: they check who calls (:func:`cloud_hub.dependencies.require`), read the request, and
call a service (store, adjudicator, registry, rollouts, drift monitor). Every route but ``/health``
needs a bearer token; ``/metrics`` (Prometheus) sits outside the API. Every state-changing request
that names a token is written to the audit log, allowed or not.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud_hub.adjudication import Adjudicator, Judge
from cloud_hub.auth import (
    ADMIN_SCOPES,
    OPERATE_SCOPES,
    READ_SCOPES,
    Authenticator,
    AuthError,
    Principal,
    RateLimiter,
    audit,
    count_live_tokens,
    create_token,
    ensure_token,
    list_audit,
    list_tokens,
    revoke_token,
)
from cloud_hub.dependencies import (
    PRINCIPAL_KEY,
    HubServices,
    IngestorDep,
    JudgeDep,
    MetricsDep,
    ServicesDep,
    SettingsDep,
    StoreDep,
    require,
)
from cloud_hub.drift import DriftMonitor
from cloud_hub.errors import (
    ConflictError,
    HubError,
    HubStartupError,
    JudgeError,
    ModelRejectedError,
    NotFoundError,
    PublishError,
    StoreError,
    WindowError,
)
from cloud_hub.fl.routes import router as federated_router
from cloud_hub.fl.runs import FederatedRuns
from cloud_hub.ingest import Ingestor
from cloud_hub.log import log_event
from cloud_hub.metrics import HubMetrics
from cloud_hub.notary.interface import Notary
from cloud_hub.registry import ModelNotAnchoredError, ModelRegistry, read_trusted_keys
from cloud_hub.rollout import RolloutService
from cloud_hub.schemas import (
    AgreementPublic,
    AuditEntryPublic,
    AuditPublic,
    ChainPublic,
    DevicePublic,
    DeviceRegister,
    DevicesPublic,
    DriftAlertPublic,
    DriftAlertsPublic,
    DriftCheckPublic,
    EscalationResultPublic,
    EventPublic,
    EventsPublic,
    HealthPublic,
    IngestPublic,
    InvalidPublic,
    ModelCardPublic,
    ModelPublic,
    ModelUpload,
    ProblemPublic,
    RegisteredModelPublic,
    RegisteredModelsPublic,
    RolloutAction,
    RolloutCreate,
    RolloutPublic,
    RolloutsPublic,
    RolloutStatusPublic,
    StatsPublic,
    TokenCreate,
    TokenCreatedPublic,
    TokenPublic,
    TriggerPublic,
    TriggersPublic,
    WhoAmIPublic,
)
from cloud_hub.settings import HubSettings
from cloud_hub.store import EventKind, RolloutState, Scope, Store
from protocol.codec import decode_as, encode
from protocol.errors import ProtocolError
from protocol.messages import Escalation
from protocol.topics import Kind, Topic

logger = logging.getLogger("edgefleet.hub.api")

API_PREFIX = "/api/v1"
MAX_PAGE = 1000
IdentifierQuery = Query(min_length=1, max_length=64)
IdentifierPath = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VersionPath = Path(min_length=1, max_length=64)
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=2**62)]
RowId = Annotated[int, Path(ge=1, le=2**62)]

Reader = Annotated[Principal, Depends(require(READ_SCOPES))]
ReaderOrDevice = Annotated[Principal, Depends(require(READ_SCOPES | {Scope.DEVICE}))]
Operator = Annotated[Principal, Depends(require(OPERATE_SCOPES))]
Admin = Annotated[Principal, Depends(require(ADMIN_SCOPES))]
Sender = Annotated[Principal, Depends(require(frozenset({Scope.DEVICE, Scope.ADMIN})))]

Responses = dict[int | str, dict[str, Any]]
DENIED: Responses = {
    401: {"model": ProblemPublic, "description": "No token, or an unknown or revoked one."},
    403: {"model": ProblemPublic, "description": "The token's scope does not allow this."},
    429: {"model": ProblemPublic, "description": "The token is over its rate limit (see Retry-After)."},
}
NOT_FOUND: Responses = {404: {"model": ProblemPublic}}
CONFLICT: Responses = {409: {"model": ProblemPublic}}
INVALID: Responses = {422: {"model": InvalidPublic}}

router = APIRouter(prefix=API_PREFIX, responses=DENIED)
public_router = APIRouter(prefix=API_PREFIX)


# Devices and events ---------------------------------------------------------------------------------


@router.post("/devices", response_model=DevicePublic, status_code=201, tags=["devices"], responses=INVALID)
async def register_device(body: DeviceRegister, store: StoreDep, _: Operator) -> DevicePublic:
    """Register a device (or move a known one to another site or group)."""
    return DevicePublic.from_row(
        await store.register_device(body.device_id, site=body.site, device_group=body.device_group)
    )


@router.get("/devices", response_model=DevicesPublic, tags=["devices"])
async def list_devices(
    store: StoreDep,
    _: Reader,
    site: Annotated[str | None, IdentifierQuery] = None,
    group: Annotated[str | None, IdentifierQuery] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> DevicesPublic:
    page = await store.list_devices(site=site, group=group, limit=limit, offset=offset)
    return DevicesPublic(
        items=[DevicePublic.from_row(device) for device in page.items], total=page.total, limit=limit, offset=offset
    )


@router.get("/devices/{device_id}", response_model=DevicePublic, tags=["devices"], responses=NOT_FOUND)
async def get_device(
    device_id: Annotated[str, IdentifierPath], store: StoreDep, principal: ReaderOrDevice
) -> DevicePublic:
    """A device's status (from its birth, death and health messages) and when it was last seen."""
    if principal.scope is Scope.DEVICE and not principal.may_act_as(device_id):
        raise HTTPException(status_code=403, detail=f"a device token for {principal.device_id!r} reads only itself")
    device = await store.get_device(device_id)
    if device is None:
        raise HTTPException(status_code=404, detail=f"device {device_id!r} is not known to the hub")
    return DevicePublic.from_row(device)


@router.get("/events", response_model=EventsPublic, tags=["events"], responses=INVALID)
async def list_events(
    store: StoreDep,
    _: Reader,
    device: Annotated[str | None, IdentifierQuery] = None,
    site: Annotated[str | None, IdentifierQuery] = None,
    kind: EventKind | None = None,
    since: Annotated[datetime | None, Query(description="ISO 8601; inclusive; UTC unless it has an offset.")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601; exclusive; UTC unless it has an offset.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> EventsPublic:
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and since >= until:
        raise HTTPException(status_code=422, detail="'since' must be earlier than 'until'")
    page = await store.list_events(
        device=device, site=site, kind=kind, since=since, until=until, limit=limit, offset=offset
    )
    return EventsPublic(
        items=[EventPublic.from_row(event) for event in page.items], total=page.total, limit=limit, offset=offset
    )


@router.get("/stats", response_model=StatsPublic, tags=["events"])
async def stats(store: StoreDep, _: Reader) -> StatsPublic:
    return StatsPublic.from_stats(await store.stats())


@router.get("/agreement", response_model=list[AgreementPublic], tags=["models"])
async def agreement(
    store: StoreDep,
    _: Reader,
    model: Annotated[str | None, IdentifierQuery] = None,
    version: Annotated[str | None, IdentifierQuery] = None,
    group: Annotated[str | None, IdentifierQuery] = None,
) -> list[AgreementPublic]:
    """How often the full model agreed with each edge model version, per device group."""
    rows = await store.agreement(model=model, version=version, group=group)
    return [AgreementPublic.from_row(row) for row in rows]


# Escalations over HTTPS ----------------------------------------------------------------------------


@router.post(
    "/escalations",
    response_model=EscalationResultPublic,
    tags=["escalations"],
    responses={**INVALID, 503: {"model": ProblemPublic, "description": "The hub runs without a model."}},
)
async def post_escalation(
    escalation: Escalation, request: Request, services: ServicesDep, metrics: MetricsDep, principal: Sender
) -> EscalationResultPublic:
    """Judge an escalation (wire form, as on MQTT) and return the verdict, which also goes to the device.

    A device token may send only its own escalations. A message id seen before is answered with the
    stored verdict (``duplicate: true``) and not judged or stored again.
    """
    try:
        # Again through the codec, so that the wire rules hold here too (the envelope is required).
        escalation = decode_as(Escalation, await request.body())
    except ProtocolError as exc:
        raise HTTPException(status_code=422, detail=exc.reason) from exc
    if not principal.may_act_as(escalation.device_id):
        raise HTTPException(
            status_code=403, detail=f"this token acts as {principal.device_id!r}, not {escalation.device_id!r}"
        )
    if services.adjudicator is None:
        raise HTTPException(status_code=503, detail="this hub runs without a model and judges no escalations")
    try:
        adjudication = await services.adjudicator.adjudicate(escalation)
    except WindowError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    except JudgeError as exc:
        metrics.adjudications.labels(result="failed", via="https").inc()
        raise HTTPException(status_code=503, detail=f"the model could not judge it: {exc}") from exc
    metrics.adjudications.labels(result="duplicate" if adjudication.duplicate else "judged", via="https").inc()
    published = False
    if services.ingestor is not None:
        topic = Topic(site=escalation.site, device=escalation.device_id, kind=Kind.VERDICT, root=services.ingestor.root)
        try:
            await services.ingestor.publish(str(topic), encode(adjudication.verdict))
            published = True
        except PublishError as exc:
            log_event(logger, logging.WARNING, "verdict_not_published", device_id=escalation.device_id, reason=str(exc))
    return EscalationResultPublic(verdict=adjudication.verdict, duplicate=adjudication.duplicate, published=published)


# Models --------------------------------------------------------------------------------------------


@router.post(
    "/models",
    response_model=RegisteredModelPublic,
    status_code=201,
    tags=["models"],
    responses={
        **INVALID,
        **CONFLICT,
        503: {"model": ProblemPublic, "description": "The chain did not anchor the model; nothing was stored."},
    },
)
async def upload_model(
    body: ModelUpload, response: Response, services: ServicesDep, principal: Operator
) -> RegisteredModelPublic:
    """Register a model: the artifact (base64) with its signed manifest and, optionally, its card.

    The artifact's size and sha256 must match the manifest and the manifest must be signed by a key the
    hub trusts. The same upload again answers 200; the same name and version with other bytes, 409.
    A hub with a notary anchors the sha256 on chain first: 503 (nothing stored) when that fails.
    """
    try:
        artifact = base64.b64decode(body.artifact_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HTTPException(status_code=422, detail=f"artifact_base64 is not base64: {exc}") from exc
    row, created = await services.registry.upload(
        body.manifest, artifact, card=body.card, uploaded_by=principal.token_id
    )
    if not created:
        response.status_code = 200
    return RegisteredModelPublic.from_row(row)


@router.get("/models", response_model=RegisteredModelsPublic, tags=["models"])
async def list_models(
    services: ServicesDep,
    _: Reader,
    name: Annotated[str | None, IdentifierQuery] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> RegisteredModelsPublic:
    page = await services.registry.list(name=name, limit=limit, offset=offset)
    return RegisteredModelsPublic(
        items=[RegisteredModelPublic.from_row(row) for row in page.items], total=page.total, limit=limit, offset=offset
    )


@router.get("/models/{name}/{version}", response_model=ModelCardPublic, tags=["models"], responses=NOT_FOUND)
async def get_model(
    name: Annotated[str, IdentifierPath], version: Annotated[str, VersionPath], services: ServicesDep, _: Reader
) -> ModelCardPublic:
    """A model's card: its manifest, its card, and how often the full model agreed with it."""
    row = await services.registry.get(name, version)
    rows = await services.store.agreement(model=name, version=version)
    return ModelCardPublic(
        model=RegisteredModelPublic.from_row(row),
        manifest=dict(row.manifest),
        card=dict(row.card) if row.card is not None else None,
        agreement=[AgreementPublic.from_row(stat) for stat in rows],
    )


@router.get("/models/{name}/{version}/manifest", tags=["models"], responses=NOT_FOUND)
async def get_model_manifest(
    name: Annotated[str, IdentifierPath],
    version: Annotated[str, VersionPath],
    services: ServicesDep,
    _: ReaderOrDevice,
) -> JSONResponse:
    """The manifest as uploaded (signature included), to be stored beside the artifact."""
    row = await services.registry.get(name, version)
    return JSONResponse(content=row.manifest)


@router.get(
    "/models/{name}/{version}/artifact",
    tags=["models"],
    responses={**NOT_FOUND, 200: {"content": {"application/octet-stream": {}}, "description": "The artifact."}},
    response_class=Response,
)
async def download_model(
    name: Annotated[str, IdentifierPath],
    version: Annotated[str, VersionPath],
    services: ServicesDep,
    _: ReaderOrDevice,
) -> Response:
    artifact = await services.registry.artifact(name, version)
    return Response(
        content=artifact.data,
        media_type="application/octet-stream",
        headers={
            "ETag": f'"{artifact.sha256}"',
            "X-Content-SHA256": artifact.sha256,
            "Content-Disposition": f'attachment; filename="{name}-{version}.onnx"',
        },
    )


@router.get(
    "/chain",
    response_model=ChainPublic,
    tags=["models"],
    responses={404: {"model": ProblemPublic, "description": "The hub anchors no models on chain."}},
)
async def get_chain(request: Request, services: ServicesDep, _: ReaderOrDevice) -> ChainPublic:
    """The chain and contract the registry anchors models on, so that a device checks against the same."""
    notary = services.registry.notary
    rpc_url: str | None = getattr(request.app.state, "chain_url", None)
    if notary is None or rpc_url is None:
        raise HTTPException(status_code=404, detail="this hub anchors no models on chain (no [hub.chain] settings)")
    return ChainPublic(rpc_url=rpc_url, contract_address=notary.address)


# Rollouts ------------------------------------------------------------------------------------------


@router.post(
    "/rollouts",
    response_model=RolloutPublic,
    status_code=201,
    tags=["rollouts"],
    responses={**NOT_FOUND, **CONFLICT, **INVALID},
)
async def create_rollout(
    body: RolloutCreate, services: ServicesDep, settings: SettingsDep, principal: Operator
) -> RolloutPublic:
    """Start a staged rollout: the canary share of the group first (update_model commands go out)."""
    rollout = await services.rollouts.create(
        model_name=body.model_name,
        model_version=body.model_version,
        device_group=body.device_group,
        canary_percent=body.canary_percent,
        incumbent_version=body.incumbent_version,
        min_samples=body.min_samples if body.min_samples is not None else settings.rollout_min_samples,
        tolerance=body.tolerance if body.tolerance is not None else settings.rollout_tolerance,
        actor=principal.actor,
    )
    return RolloutPublic.from_row(rollout)


@router.get("/rollouts", response_model=RolloutsPublic, tags=["rollouts"])
async def list_rollouts(
    services: ServicesDep,
    _: Reader,
    state: RolloutState | None = None,
    group: Annotated[str | None, IdentifierQuery] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> RolloutsPublic:
    page = await services.rollouts.list_rollouts(state=state, group=group, limit=limit, offset=offset)
    return RolloutsPublic(
        items=[RolloutPublic.from_row(row) for row in page.items], total=page.total, limit=limit, offset=offset
    )


@router.get("/rollouts/{rollout_id}", response_model=RolloutStatusPublic, tags=["rollouts"], responses=NOT_FOUND)
async def rollout_status(rollout_id: RowId, services: ServicesDep, _: Reader) -> RolloutStatusPublic:
    """The rollout, its cohorts' figures, what they call for now, and every transition so far."""
    return RolloutStatusPublic.from_status(await services.rollouts.status(rollout_id))


@router.post(
    "/rollouts/{rollout_id}/promote",
    response_model=RolloutStatusPublic,
    tags=["rollouts"],
    responses={**NOT_FOUND, **CONFLICT},
)
async def promote_rollout(
    rollout_id: RowId, services: ServicesDep, principal: Operator, body: RolloutAction | None = None
) -> RolloutStatusPublic:
    reason = (body.reason if body else None) or "promoted by hand"
    await services.rollouts.promote(rollout_id, actor=principal.actor, reason=reason)
    await _refresh_rollout_gauge(services)
    return RolloutStatusPublic.from_status(await services.rollouts.status(rollout_id))


@router.post(
    "/rollouts/{rollout_id}/abort",
    response_model=RolloutStatusPublic,
    tags=["rollouts"],
    responses={**NOT_FOUND, **CONFLICT},
)
async def abort_rollout(
    rollout_id: RowId, services: ServicesDep, principal: Operator, body: RolloutAction | None = None
) -> RolloutStatusPublic:
    reason = (body.reason if body else None) or "aborted by hand"
    await services.rollouts.abort(rollout_id, actor=principal.actor, reason=reason)
    await _refresh_rollout_gauge(services)
    return RolloutStatusPublic.from_status(await services.rollouts.status(rollout_id))


@router.post(
    "/rollouts/{rollout_id}/evaluate", response_model=RolloutStatusPublic, tags=["rollouts"], responses=NOT_FOUND
)
async def evaluate_rollout(rollout_id: RowId, services: ServicesDep, principal: Operator) -> RolloutStatusPublic:
    """Evaluate now rather than at the next interval: promote or roll back if the figures say so."""
    status = await services.rollouts.evaluate(rollout_id, actor=principal.actor)
    await _refresh_rollout_gauge(services)
    return RolloutStatusPublic.from_status(status)


# Drift ---------------------------------------------------------------------------------------------


@router.get("/drift", response_model=DriftAlertsPublic, tags=["drift"])
async def list_drift(
    services: ServicesDep,
    _: Reader,
    group: Annotated[str | None, IdentifierQuery] = None,
    model: Annotated[str | None, IdentifierQuery] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> DriftAlertsPublic:
    """Drift alerts, newest first."""
    page = await services.drift.alerts(group=group, model=model, limit=limit, offset=offset)
    return DriftAlertsPublic(
        items=[DriftAlertPublic.from_row(row) for row in page.items], total=page.total, limit=limit, offset=offset
    )


@router.post("/drift/check", response_model=DriftCheckPublic, tags=["drift"])
async def check_drift(services: ServicesDep, metrics: MetricsDep, _: Operator) -> DriftCheckPublic:
    """Check for drift now rather than at the next interval."""
    report = await services.drift.check()
    for alert in report.alerts:
        metrics.drift_alerts.labels(metric=alert.metric).inc()
    return DriftCheckPublic.from_report(report)


@router.get("/drift/triggers", response_model=TriggersPublic, tags=["drift"])
async def list_triggers(
    services: ServicesDep, _: Reader, open_only: bool = False, limit: Limit = 100, offset: Offset = 0
) -> TriggersPublic:
    """Retraining triggers raised by drift, newest first (``open_only``: not consumed yet)."""
    page = await services.drift.triggers(open_only=open_only, limit=limit, offset=offset)
    return TriggersPublic(
        items=[TriggerPublic.from_row(row) for row in page.items], total=page.total, limit=limit, offset=offset
    )


@router.post(
    "/drift/triggers/{trigger_id}/consume",
    response_model=TriggerPublic,
    tags=["drift"],
    responses={**NOT_FOUND, **CONFLICT},
)
async def consume_trigger(trigger_id: RowId, services: ServicesDep, principal: Operator) -> TriggerPublic:
    """Take a retraining trigger (the federated-learning coordinator does); 409 if it was taken before."""
    return TriggerPublic.from_row(await services.drift.consume(trigger_id, consumer=principal.actor))


# Access --------------------------------------------------------------------------------------------


@router.get("/whoami", response_model=WhoAmIPublic, tags=["access"])
async def whoami(principal: Annotated[Principal, Depends(require(frozenset(Scope)))]) -> WhoAmIPublic:
    return WhoAmIPublic.from_principal(principal)


@router.post("/tokens", response_model=TokenCreatedPublic, status_code=201, tags=["access"], responses=INVALID)
async def new_token(body: TokenCreate, store: StoreDep, _: Admin) -> TokenCreatedPublic:
    """Make a token; its secret is in this response only."""
    try:
        secret, token_id = await create_token(store, scope=body.scope, device_id=body.device_id, label=body.label)
    except AuthError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    return TokenCreatedPublic(token=secret, id=token_id, scope=body.scope, device_id=body.device_id)


@router.get("/tokens", response_model=list[TokenPublic], tags=["access"])
async def tokens(store: StoreDep, _: Admin) -> list[TokenPublic]:
    return [TokenPublic.from_row(row) for row in await list_tokens(store)]


@router.post("/tokens/{token_id}/revoke", status_code=204, tags=["access"], responses=NOT_FOUND)
async def revoke(token_id: RowId, services: ServicesDep, _: Admin) -> Response:
    if not await revoke_token(services.store, token_id):
        raise HTTPException(status_code=404, detail=f"no live token {token_id}")
    services.authenticator.forget()
    return Response(status_code=204)


@router.get("/audit", response_model=AuditPublic, tags=["access"])
async def audit_log(
    store: StoreDep,
    _: Admin,
    token_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601; inclusive.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> AuditPublic:
    """Every privileged action (each state-changing request made with a token), newest first."""
    page = await list_audit(store, token_id=token_id, since=_utc(since), limit=limit, offset=offset)
    return AuditPublic(
        items=[AuditEntryPublic.from_row(row) for row in page.items], total=page.total, limit=limit, offset=offset
    )


# Health (no token: load balancers and orchestrators ask it) ----------------------------------------


@public_router.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic}}, tags=["health"])
async def health(
    response: Response, store: StoreDep, judge: JudgeDep, ingestor: IngestorDep, settings: SettingsDep
) -> HealthPublic:
    try:
        await store.ping()
        database_ok = True
    except StoreError:
        database_ok = False
    ingest = (
        IngestPublic.from_counters(ingestor.counters, subscribed=ingestor.subscribed) if ingestor is not None else None
    )
    healthy = database_ok and (ingest is None or ingest.subscribed)
    if not healthy:
        response.status_code = 503
    return HealthPublic(
        status="ok" if healthy else "degraded",
        database="ok" if database_ok else "unavailable",
        model=ModelPublic.from_judge(judge) if judge is not None else None,
        ingest=ingest,
        demo_mode=settings.demo_mode,
    )


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def _refresh_rollout_gauge(services: HubServices) -> None:
    states = [state.value for state in RolloutState]
    services.metrics.set_rollouts(await services.rollouts.count_by_state(), states)


# The app -------------------------------------------------------------------------------------------


def _problem(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        if status >= 500:
            log_event(logger, logging.ERROR, "request_failed", path=request.url.path, reason=str(exc))
            return JSONResponse(status_code=status, content={"detail": f"the database is unavailable: {exc}"})
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    return handler


async def _not_anchored(request: Request, exc: Exception) -> JSONResponse:
    log_event(logger, logging.ERROR, "model_not_anchored", path=request.url.path, reason=str(exc))
    return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "5"})


async def _open_notary(settings: HubSettings, stack: AsyncExitStack, app: FastAPI) -> Notary:
    """The registry's notary; with the in-process EVM, its reads served on loopback for devices."""
    chain = settings.chain
    assert chain is not None
    try:
        from cloud_hub.notary.chain import open_notary
        from cloud_hub.notary.rpc import ChainReadServer
    except ImportError as exc:
        raise HubStartupError(f"[hub.chain] is set but the chain extra is not installed: {exc}") from exc
    # Compiling the contract and deploying it (in process) block: keep them off the event loop.
    notary = await asyncio.to_thread(open_notary, chain, deploy=chain.url is None)
    rpc_url = chain.url
    if rpc_url is None:
        reads = stack.enter_context(ChainReadServer(notary, host=settings.host, port=settings.chain_read_port))
        rpc_url = reads.url
    app.state.chain_url = settings.chain_public_url or rpc_url
    log_event(logger, logging.INFO, "notary_ready", contract=notary.address, rpc_url=app.state.chain_url)
    return notary


async def _every(interval_s: float, action: Callable[[], Awaitable[object]], what: str) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await action()
        except HubError as exc:
            log_event(logger, logging.WARNING, f"{what}_failed", reason=str(exc))


def create_app(
    settings: HubSettings,
    *,
    start_ingest: bool = True,
    load_model: bool | None = None,
    extra_routers: Sequence[APIRouter] = (),
    background: bool = True,
) -> FastAPI:
    """The hub as an ASGI app.

    Its lifespan migrates the database (``upgrade head``), registers the bootstrap admin token, loads
    the model (``load_model``, by default as ``start_ingest``) and starts the MQTT ingest
    (``start_ingest``). ``extra_routers`` are included beside the hub's own (the federated-learning
    routes, say); they may use :mod:`cloud_hub.dependencies`. ``background`` runs the periodic rollout
    evaluation and drift checks. A failure to start is kept in ``app.state.startup_error`` (for
    :class:`cloud_hub.server.HubServer`) and raised.
    """
    with_model = start_ingest if load_model is None else load_model
    metrics = HubMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.startup_error = None
        async with AsyncExitStack() as stack:
            try:
                store = Store.open(settings.database_url, **settings.engine_options())
                stack.push_async_callback(store.close)
                await store.init_schema()
                if settings.admin_token is not None:
                    await ensure_token(store, settings.admin_token.get_secret_value())
                elif not await count_live_tokens(store, Scope.ADMIN):
                    log_event(
                        logger,
                        logging.WARNING,
                        "no_admin_token",
                        hint="make one with: edgefleet hub token create --scope admin",
                    )
                notary = await _open_notary(settings, stack, app) if settings.chain is not None else None
                registry = ModelRegistry(
                    store,
                    trusted_keys=read_trusted_keys(settings.trusted_model_keys),
                    allow_unsigned=settings.demo_mode,
                    max_bytes=settings.max_upload_bytes,
                    notary=notary,
                )
                judge: Judge | None = None
                adjudicator: Adjudicator | None = None
                ingestor: Ingestor | None = None
                if with_model:
                    judge = Judge.load(settings.model_manifest, threads=settings.threads)
                    adjudicator = await stack.enter_async_context(
                        Adjudicator(
                            judge,
                            store,
                            max_batch=settings.max_batch,
                            max_wait_ms=settings.max_wait_ms,
                            observer=metrics.observe_batch,
                        )
                    )
                    metrics.track_queue(lambda: adjudicator.queue_depth if adjudicator is not None else 0)
                if start_ingest:
                    if adjudicator is None:
                        raise HubError("the MQTT ingest needs the model (load_model=True)")
                    ingestor = await stack.enter_async_context(
                        Ingestor(
                            broker=settings.broker,
                            store=store,
                            adjudicator=adjudicator,
                            share_group=settings.share_group,
                            on_adjudication=lambda duplicate: metrics.adjudications.labels(
                                result="duplicate" if duplicate else "judged", via="mqtt"
                            ).inc(),
                        )
                    )

                def transitioned(rollout: object, source: object, target: RolloutState) -> None:
                    metrics.rollout_transitions.labels(state=target.value).inc()

                rollouts = RolloutService(
                    store,
                    publish=ingestor.publish if ingestor is not None else None,
                    device_model_dir=settings.device_model_dir,
                    root=settings.broker.root,
                    on_transition=transitioned,
                )
                drift = DriftMonitor(
                    store,
                    reference_size=settings.drift_reference_size,
                    window=settings.drift_window,
                    psi_threshold=settings.drift_psi_threshold,
                    ks_alpha=settings.drift_ks_alpha,
                )
                drift.on_drift(lambda alert, trigger: metrics.drift_alerts.labels(metric=alert.metric).inc())
                federation = FederatedRuns.from_settings(settings.fl, drift=drift, notary=notary)
            except HubError as exc:
                app.state.startup_error = exc
                log_event(logger, logging.ERROR, "hub_start_failed", reason=str(exc))
                raise
            services = HubServices(
                store=store,
                judge=judge,
                adjudicator=adjudicator,
                ingestor=ingestor,
                registry=registry,
                rollouts=rollouts,
                drift=drift,
                authenticator=Authenticator(store),
                limiter=RateLimiter(rate=settings.rate_limit_per_s, burst=settings.rate_limit_burst),
                metrics=metrics,
            )
            app.state.services = services
            app.state.federation = federation
            await _refresh_rollout_gauge(services)
            tasks: list[asyncio.Task[None]] = []
            if background:

                async def evaluate() -> None:
                    await rollouts.evaluate_open()
                    await _refresh_rollout_gauge(services)

                tasks.append(asyncio.create_task(_every(settings.rollout_interval_s, evaluate, "rollout_evaluation")))
                tasks.append(asyncio.create_task(_every(settings.drift_interval_s, drift.check, "drift_check")))
                if federation.schedules:  # drift (or a schedule) starts federated runs
                    tasks.append(
                        asyncio.create_task(_every(federation.check_interval_s, federation.start_due, "fl_trigger"))
                    )
            log_event(
                logger,
                logging.INFO,
                "hub_started",
                database=store.engine.url.render_as_string(hide_password=True),
                model=f"{judge.manifest.name}:{judge.manifest.version}" if judge is not None else None,
                ingest="on" if ingestor is not None else "off",
                demo_mode=settings.demo_mode,
            )
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                app.state.services = None
                app.state.federation = None
                log_event(logger, logging.INFO, "hub_stopping")

    app = FastAPI(
        title="EdgeFleet hub",
        version="1.0.0",
        summary="Devices, events, verdicts, models, rollouts and drift of an EdgeFleet fleet.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.services = None
    app.state.metrics = metrics
    app.state.chain_url = None
    app.state.federation = None
    app.add_exception_handler(StoreError, _problem(503))
    app.add_exception_handler(NotFoundError, _problem(404))
    app.add_exception_handler(ConflictError, _problem(409))
    app.add_exception_handler(ModelRejectedError, _problem(422))
    app.add_exception_handler(ModelNotAnchoredError, _not_anchored)

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        metrics.requests.labels(route=template, method=request.method, status=str(response.status_code)).inc()
        metrics.request_seconds.labels(route=template).observe(time.perf_counter() - start)
        principal: Principal | None = request.scope.get(PRINCIPAL_KEY)
        services: HubServices | None = app.state.services
        if principal is not None and services is not None and request.method not in ("GET", "HEAD", "OPTIONS"):
            try:
                await audit(
                    services.store,
                    principal=principal,
                    action=f"{request.method} {template}",
                    target=request.url.path,
                    status=response.status_code,
                )
            except StoreError as exc:
                log_event(logger, logging.ERROR, "audit_failed", path=request.url.path, reason=str(exc))
        return response

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(content=generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
    app.include_router(public_router)
    app.include_router(federated_router)  # /api/v1/fl: rounds, proofs, runs
    # Routers of other components (the federated-learning coordinator's rounds, for one) go in here.
    for extra in extra_routers:
        app.include_router(extra)
    return app
