"""A running hub app for API tests (SQLite here, PostgreSQL in tests/integration/test_hub_api_postgres.py).

``running_hub`` enters the app's lifespan (migrations, bootstrap token, services) without MQTT or
background tasks; ``ApiHub`` hands out clients with tokens of each scope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI

from cloud_hub.api import create_app
from cloud_hub.auth import create_token
from cloud_hub.dependencies import HubServices
from cloud_hub.settings import HubSettings
from cloud_hub.store import Scope, Store


@dataclass
class ApiHub:
    app: FastAPI
    settings: HubSettings

    @property
    def services(self) -> HubServices:
        services: HubServices = self.app.state.services
        return services

    @property
    def store(self) -> Store:
        return self.services.store

    async def token(self, scope: Scope, device: str | None = None) -> str:
        secret, _ = await create_token(self.store, scope=scope, device_id=device, label=f"test {scope.value}")
        return secret

    @asynccontextmanager
    async def client(
        self, scope: Scope | None = Scope.ADMIN, device: str | None = None
    ) -> AsyncIterator[httpx.AsyncClient]:
        """A client with a fresh token of ``scope`` (none at all for ``None``)."""
        headers = {"Authorization": f"Bearer {await self.token(scope, device)}"} if scope is not None else {}
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub", headers=headers) as http:
            yield http


@asynccontextmanager
async def running_hub(settings: HubSettings, *, load_model: bool = False) -> AsyncIterator[ApiHub]:
    app = create_app(settings, start_ingest=False, load_model=load_model, background=False)
    async with app.router.lifespan_context(app):
        yield ApiHub(app=app, settings=settings)


def sqlite_settings(directory: Path, **values: object) -> HubSettings:
    return HubSettings(
        database_url=f"sqlite+aiosqlite:///{directory / 'api.db'}",
        model_manifest=directory / "absent.json",
        **values,  # type: ignore[arg-type]
    )
