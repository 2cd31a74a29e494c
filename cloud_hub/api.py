"""The hub's REST API, versioned under ``/api/v1``.

Routes are thin: they read query parameters and call the :class:`Store`. The long-lived parts (store,
judge, ingestor) are made in the app's ``lifespan`` and handed out by the ``get_*`` dependencies, which
tests replace through ``app.dependency_overrides``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse

from cloud_hub.adjudication import BatchingJudge, Judge
from cloud_hub.errors import HubError, StoreError
from cloud_hub.ingest import Ingestor
from cloud_hub.log import log_event
from cloud_hub.schemas import (
    DevicePublic,
    DevicesPublic,
    EventPublic,
    EventsPublic,
    HealthPublic,
    IngestPublic,
    ModelPublic,
    ProblemPublic,
    StatsPublic,
)
from cloud_hub.settings import HubSettings
from cloud_hub.store import EventKind, Store

logger = logging.getLogger("edgefleet.hub.api")

API_PREFIX = "/api/v1"
MAX_PAGE = 1000
IdentifierQuery = Query(min_length=1, max_length=64)


@dataclass
class HubServices:
    """The long-lived parts of a running hub; ``judge`` and ``ingestor`` are ``None`` when ingest is off."""

    store: Store
    judge: Judge | None
    ingestor: Ingestor | None


def get_settings(request: Request) -> HubSettings:
    settings: HubSettings = request.app.state.settings
    return settings


def get_services(request: Request) -> HubServices:
    services: HubServices | None = getattr(request.app.state, "services", None)
    if services is None:
        raise HTTPException(status_code=503, detail="the hub is not running (starting up or shutting down)")
    return services


def get_store(services: Annotated[HubServices, Depends(get_services)]) -> Store:
    return services.store


def get_judge(request: Request) -> Judge | None:
    services: HubServices | None = getattr(request.app.state, "services", None)
    return services.judge if services is not None else None


def get_ingestor(request: Request) -> Ingestor | None:
    services: HubServices | None = getattr(request.app.state, "services", None)
    return services.ingestor if services is not None else None


SettingsDep = Annotated[HubSettings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
JudgeDep = Annotated[Judge | None, Depends(get_judge)]
IngestorDep = Annotated[Ingestor | None, Depends(get_ingestor)]

router = APIRouter(prefix=API_PREFIX)


@router.get("/devices", response_model=DevicesPublic)
async def list_devices(
    store: StoreDep,
    site: Annotated[str | None, IdentifierQuery] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DevicesPublic:
    page = await store.list_devices(site=site, limit=limit, offset=offset)
    return DevicesPublic(
        items=[DevicePublic.from_row(device) for device in page.items], total=page.total, limit=limit, offset=offset
    )


@router.get("/devices/{device_id}", response_model=DevicePublic, responses={404: {"model": ProblemPublic}})
async def get_device(device_id: str, store: StoreDep) -> DevicePublic:
    device = await store.get_device(device_id)
    if device is None:
        raise HTTPException(status_code=404, detail=f"device {device_id!r} is not known to the hub")
    return DevicePublic.from_row(device)


@router.get("/events", response_model=EventsPublic, responses={422: {"model": ProblemPublic}})
async def list_events(
    store: StoreDep,
    device: Annotated[str | None, IdentifierQuery] = None,
    site: Annotated[str | None, IdentifierQuery] = None,
    kind: EventKind | None = None,
    since: Annotated[datetime | None, Query(description="ISO 8601; inclusive; UTC unless it has an offset.")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601; exclusive; UTC unless it has an offset.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
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


@router.get("/stats", response_model=StatsPublic)
async def stats(store: StoreDep) -> StatsPublic:
    return StatsPublic.from_stats(await store.stats())


@router.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
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


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log_event(logger, logging.ERROR, "request_failed", path=request.url.path, reason=str(exc))
    return JSONResponse(status_code=503, content={"detail": f"the database is unavailable: {exc}"})


def create_app(settings: HubSettings, *, start_ingest: bool = True) -> FastAPI:
    """The hub as an ASGI app. Its lifespan opens the store and, with ``start_ingest``, loads the model
    and starts the MQTT ingest (``start_ingest=False`` serves the API alone: no broker, no model).

    A failure to start is kept in ``app.state.startup_error`` (for :class:`cloud_hub.server.HubServer`)
    and raised.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.startup_error = None
        async with AsyncExitStack() as stack:
            try:
                store = Store.open(settings.database_url)
                stack.push_async_callback(store.close)
                await store.init_schema()
                judge: Judge | None = None
                ingestor: Ingestor | None = None
                if start_ingest:
                    judge = Judge.load(settings.model_manifest, threads=settings.threads)
                    batching = await stack.enter_async_context(
                        BatchingJudge(judge, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms)
                    )
                    ingestor = await stack.enter_async_context(
                        Ingestor(broker=settings.broker, store=store, judge=batching, share_group=settings.share_group)
                    )
            except HubError as exc:
                app.state.startup_error = exc
                log_event(logger, logging.ERROR, "hub_start_failed", reason=str(exc))
                raise
            app.state.services = HubServices(store=store, judge=judge, ingestor=ingestor)
            log_event(
                logger,
                logging.INFO,
                "hub_started",
                database=store.engine.url.render_as_string(hide_password=True),
                model=f"{judge.manifest.name}:{judge.manifest.version}" if judge is not None else None,
                ingest="on" if ingestor is not None else "off",
            )
            try:
                yield
            finally:
                app.state.services = None
                log_event(logger, logging.INFO, "hub_stopping")

    app = FastAPI(
        title="EdgeFleet hub",
        version="0.1.0",
        summary="Devices, events and verdicts of an EdgeFleet fleet.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.services = None
    app.add_exception_handler(StoreError, _store_unavailable)
    app.include_router(router)
    return app
