"""The REST API over a real (SQLite) store, with ingest off and no network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cloud_hub.api import create_app, get_store
from cloud_hub.settings import HubSettings
from cloud_hub.store import Store
from tests.unit.cloud_hub import factories

T0 = 1_750_000_000.0


@pytest.fixture
def settings(tmp_path: Path) -> HubSettings:
    return HubSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}", model_manifest=tmp_path / "absent.json"
    )


@pytest.fixture
async def seeded(store: Store) -> Store:
    await store.record_birth(factories.birth(device="dev-1", site="north", timestamp=T0))
    await store.record_birth(factories.birth(device="dev-2", site="north", timestamp=T0))
    await store.record_birth(factories.birth(device="dev-3", site="south", timestamp=T0))
    await store.record_health(factories.health(device="dev-1", timestamp=T0 + 1), site="north")
    for index in range(3):
        esc = factories.escalation(device="dev-1", site="north", timestamp=T0 + 10 + index)
        await store.record_escalation(esc, factories.verdict_for(esc, label="summer" if index else "winter"))
    return store


@pytest.fixture
async def client(settings: HubSettings, seeded: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, start_ingest=False)
    app.dependency_overrides[get_store] = lambda: seeded
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
        yield http


async def test_list_devices(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/devices")
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 3
    assert [device["device_id"] for device in body["items"]] == ["dev-1", "dev-2", "dev-3"]
    first = body["items"][0]
    assert first["status"] == "online"
    assert first["streams"] == [{"name": "power", "sensor": "power", "unit": "kW", "sample_rate_hz": 1.0}]
    assert first["last_health"]["uptime_s"] == 12.0
    assert first["last_seen"] == "2025-06-15T15:06:52Z", "the newest message's time, in UTC"


async def test_list_devices_of_a_site_page_by_page(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/devices", params={"site": "north", "limit": 1, "offset": 1})).json()
    assert body["total"] == 2
    assert [device["device_id"] for device in body["items"]] == ["dev-2"]
    assert (body["limit"], body["offset"]) == (1, 1)


async def test_get_device(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/devices/dev-3")
    assert response.status_code == 200
    assert response.json()["site"] == "south"


async def test_unknown_device_is_404_with_a_reason(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/devices/ghost")
    assert response.status_code == 404
    assert response.json() == {"detail": "device 'ghost' is not known to the hub"}


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/devices", {"limit": 0}),
        ("/api/v1/devices", {"limit": 1001}),
        ("/api/v1/devices", {"offset": -1}),
        ("/api/v1/events", {"kind": "party"}),
        ("/api/v1/events", {"since": "yesterday"}),
        ("/api/v1/events", {"since": "2025-06-16T00:00:00Z", "until": "2025-06-15T00:00:00Z"}),
    ],
)
async def test_bad_queries_are_422(client: httpx.AsyncClient, path: str, params: dict[str, object]) -> None:
    response = await client.get(path, params=params)  # type: ignore[arg-type]
    assert response.status_code == 422
    assert response.json()["detail"]


async def test_list_events_with_filters(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/events", params={"kind": "escalation", "device": "dev-1"})).json()
    assert body["total"] == 3
    newest = body["items"][0]
    assert newest["occurred_at"] == "2025-06-15T15:06:52Z"
    assert newest["edge"]["label"] == "winter"
    assert newest["verdict"]["label"] == "summer"
    assert newest["agrees_with_edge"] is False
    assert newest["reasons"] == ["low_confidence"]
    assert len(newest["detail"]["window"]["values"]) == 24

    # Naive times are UTC; since is inclusive, until exclusive.
    body = (
        await client.get(
            "/api/v1/events", params={"since": "2025-06-15T15:06:51", "until": "2025-06-15T15:06:52+00:00"}
        )
    ).json()
    assert [event["occurred_at"] for event in body["items"]] == ["2025-06-15T15:06:51Z"]

    births = (await client.get("/api/v1/events", params={"kind": "birth", "site": "north"})).json()
    assert births["total"] == 2


async def test_stats(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/stats")).json()
    assert body == {
        "devices": 3,
        "devices_by_status": {"online": 3},
        "events": 6,
        "events_by_kind": {"birth": 3, "escalation": 3},
        "escalations": 3,
        "verdicts_agreeing": 1,
        "verdicts_disagreeing": 2,
    }


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert {
        "/api/v1/devices",
        "/api/v1/devices/{device_id}",
        "/api/v1/events",
        "/api/v1/stats",
        "/api/v1/health",
    } <= set(document["paths"])


async def test_lifespan_serves_the_api_without_broker_or_model(settings: HubSettings) -> None:
    app: FastAPI = create_app(settings, start_ingest=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http,
    ):
        health = await http.get("/api/v1/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "database": "ok", "model": None, "ingest": None, "demo_mode": False}
        assert (await http.get("/api/v1/devices")).json()["total"] == 0


async def test_api_without_a_running_hub_is_503(settings: HubSettings) -> None:
    app = create_app(settings, start_ingest=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
        response = await http.get("/api/v1/devices")
    assert response.status_code == 503


async def test_database_failure_is_503(settings: HubSettings, tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    broken = Store.open(f"sqlite+aiosqlite:///{tmp_path / 'dir.db'}")
    app = create_app(settings, start_ingest=False)
    app.dependency_overrides[get_store] = lambda: broken
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            response = await http.get("/api/v1/stats")
    finally:
        await broken.close()
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the database is unavailable")
