"""What routes receive through ``Depends``: the running hub's services and the caller's principal.

The long-lived parts are made in the app's ``lifespan`` (:func:`cloud_hub.api.create_app`) and kept in
``app.state.services``; tests replace any ``get_*`` function through ``app.dependency_overrides``.
Routers added to the hub from elsewhere (``create_app(extra_routers=...)``) use the same dependencies:
``Depends(require(OPERATE_SCOPES))`` for a route operators may call, say.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud_hub.adjudication import Adjudicator, Judge
from cloud_hub.auth import Authenticator, Principal, RateLimiter
from cloud_hub.drift import DriftMonitor
from cloud_hub.ingest import Ingestor
from cloud_hub.metrics import HubMetrics
from cloud_hub.registry import ModelRegistry
from cloud_hub.rollout import RolloutService
from cloud_hub.settings import HubSettings
from cloud_hub.store import Scope, Store

PRINCIPAL_KEY = "edgefleet.principal"
"""Where the request's principal is kept in the ASGI scope (read by the audit middleware)."""


@dataclass
class HubServices:
    """The long-lived parts of a running hub; ``judge``, ``adjudicator`` and ``ingestor`` are ``None``
    when the hub runs without a model or without MQTT."""

    store: Store
    judge: Judge | None
    adjudicator: Adjudicator | None
    ingestor: Ingestor | None
    registry: ModelRegistry
    rollouts: RolloutService
    drift: DriftMonitor
    authenticator: Authenticator
    limiter: RateLimiter
    metrics: HubMetrics


def get_settings(request: Request) -> HubSettings:
    settings: HubSettings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> HubMetrics:
    metrics: HubMetrics = request.app.state.metrics
    return metrics


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
MetricsDep = Annotated[HubMetrics, Depends(get_metrics)]
ServicesDep = Annotated[HubServices, Depends(get_services)]
StoreDep = Annotated[Store, Depends(get_store)]
JudgeDep = Annotated[Judge | None, Depends(get_judge)]
IngestorDep = Annotated[Ingestor | None, Depends(get_ingestor)]

bearer = HTTPBearer(auto_error=False, description="An API token: `edgefleet hub token create --scope SCOPE`.")
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require(scopes: frozenset[Scope]) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting tokens of ``scopes``: 401 without a valid token, 429 over the token's rate,
    403 for a token of another scope."""
    allowed = ", ".join(sorted(scope.value for scope in scopes))

    async def principal(
        request: Request, services: ServicesDep, metrics: MetricsDep, credentials: CredentialsDep
    ) -> Principal:
        if credentials is None:
            raise HTTPException(
                status_code=401,
                detail="an API token is required: Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        found = await services.authenticator.authenticate(credentials.credentials)
        if found is None:
            raise HTTPException(
                status_code=401, detail="unknown or revoked API token", headers={"WWW-Authenticate": "Bearer"}
            )
        request.scope[PRINCIPAL_KEY] = found
        wait = services.limiter.retry_after(found.token_id)
        if wait > 0:
            metrics.rate_limited.inc()
            raise HTTPException(
                status_code=429,
                detail=f"token {found.token_id} is over its rate limit; retry in {wait:.2f} s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        if found.scope not in scopes:
            raise HTTPException(
                status_code=403, detail=f"a {found.scope.value} token may not do this (it needs one of: {allowed})"
            )
        return found

    return principal
