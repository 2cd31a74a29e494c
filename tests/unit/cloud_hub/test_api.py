"""The REST API over a real (SQLite) store, with ingest off and no network.

Backend-independent: tests/integration/test_hub_api_postgres.py runs these again on PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cloud_hub.api import create_app
from cloud_hub.dependencies import get_store
from cloud_hub.settings import HubSettings
from cloud_hub.store import Scope, Store
from tests.unit.cloud_hub import factories
from tests.unit.cloud_hub.hub import ApiHub

T0 = 1_750_000_000.0


async def seed(store: Store) -> None:
    await store.record_birth(factories.birth(device="dev-1", site="north", timestamp=T0))
    await store.record_birth(factories.birth(device="dev-2", site="north", timestamp=T0))
    await store.record_birth(factories.birth(device="dev-3", site="south", timestamp=T0))
    await store.record_health(factories.health(device="dev-1", timestamp=T0 + 1), site="north")
    for index in range(3):
        esc = factories.escalation(device="dev-1", site="north", timestamp=T0 + 10 + index)
        await store.record_escalation(esc, factories.verdict_for(esc, label="summer" if index else "winter"))


@pytest.fixture
async def seeded(hub: ApiHub) -> ApiHub:
    await seed(hub.store)
    return hub


async def test_list_devices(seeded: ApiHub) -> None:
    async with seeded.client(Scope.READ_ONLY) as client:
        response = await client.get("/api/v1/devices")
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 3
    assert [device["device_id"] for device in body["items"]] == ["dev-1", "dev-2", "dev-3"]
    first = body["items"][0]
    assert first["status"] == "online"
    assert first["device_group"] == "north", "a device's group is its site until it is registered in another"
    assert first["edge_model"] == "tiny_edge"
    assert first["streams"] == [{"name": "power", "sensor": "power", "unit": "kW", "sample_rate_hz": 1.0}]
    assert first["last_health"]["uptime_s"] == 12.0
    assert first["last_seen"] == "2025-06-15T15:06:52Z", "the newest message's time, in UTC"


async def test_list_devices_of_a_site_page_by_page(seeded: ApiHub) -> None:
    async with seeded.client(Scope.READ_ONLY) as client:
        body = (await client.get("/api/v1/devices", params={"site": "north", "limit": 1, "offset": 1})).json()
    assert body["total"] == 2
    assert [device["device_id"] for device in body["items"]] == ["dev-2"]
    assert (body["limit"], body["offset"]) == (1, 1)


async def test_register_a_device_into_a_group(seeded: ApiHub) -> None:
    async with seeded.client(Scope.OPERATOR) as client:
        created = await client.post(
            "/api/v1/devices", json={"device_id": "dev-9", "site": "east", "device_group": "pilots"}
        )
        moved = await client.post(
            "/api/v1/devices", json={"device_id": "dev-2", "site": "north", "device_group": "pilots"}
        )
        group = (await client.get("/api/v1/devices", params={"group": "pilots"})).json()
    assert created.status_code == 201
    assert created.json()["status"] == "unknown"
    assert created.json()["registered_at"] is not None
    assert moved.json()["status"] == "online", "registering a known device keeps what its messages said"
    assert [device["device_id"] for device in group["items"]] == ["dev-2", "dev-9"]


async def test_register_rejects_a_bad_identifier(hub: ApiHub) -> None:
    async with hub.client(Scope.OPERATOR) as client:
        response = await client.post("/api/v1/devices", json={"device_id": "no/slashes", "site": "east"})
    assert response.status_code == 422


async def test_get_device(seeded: ApiHub) -> None:
    async with seeded.client(Scope.READ_ONLY) as client:
        response = await client.get("/api/v1/devices/dev-3")
    assert response.status_code == 200
    assert response.json()["site"] == "south"


async def test_unknown_device_is_404_with_a_reason(seeded: ApiHub) -> None:
    async with seeded.client(Scope.READ_ONLY) as client:
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
async def test_bad_queries_are_422(seeded: ApiHub, path: str, params: dict[str, object]) -> None:
    async with seeded.client(Scope.READ_ONLY) as client:
        response = await client.get(path, params=params)  # type: ignore[arg-type]
    assert response.status_code == 422
    assert response.json()["detail"]


async def test_list_events_with_filters(seeded: ApiHub) -> None:
    async with seeded.client(Scope.READ_ONLY) as client:
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


async def test_stats_and_agreement(seeded: ApiHub) -> None:
    async with seeded.client(Scope.READ_ONLY) as client:
        body = (await client.get("/api/v1/stats")).json()
        agreement = (await client.get("/api/v1/agreement", params={"model": "tiny_edge"})).json()
    assert body == {
        "devices": 3,
        "devices_by_status": {"online": 3},
        "events": 6,
        "events_by_kind": {"birth": 3, "escalation": 3},
        "escalations": 3,
        "verdicts_agreeing": 1,
        "verdicts_disagreeing": 2,
    }
    [row] = agreement
    assert (row["edge_model_version"], row["device_group"], row["judged"], row["agreed"]) == ("edge-1", "north", 3, 1)
    assert row["agreement_rate"] == pytest.approx(1 / 3)


async def test_openapi_document(hub: ApiHub) -> None:
    async with hub.client(None) as client:
        document = (await client.get("/openapi.json")).json()
    assert {
        "/api/v1/devices",
        "/api/v1/devices/{device_id}",
        "/api/v1/events",
        "/api/v1/stats",
        "/api/v1/health",
        "/api/v1/escalations",
        "/api/v1/models",
        "/api/v1/models/{name}/{version}",
        "/api/v1/models/{name}/{version}/artifact",
        "/api/v1/rollouts",
        "/api/v1/rollouts/{rollout_id}/promote",
        "/api/v1/rollouts/{rollout_id}/abort",
        "/api/v1/drift",
        "/api/v1/audit",
    } <= set(document["paths"])
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_health_needs_no_token(hub: ApiHub) -> None:
    async with hub.client(None) as client:
        health = await client.get("/api/v1/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok", "model": None, "ingest": None, "demo_mode": False}


async def test_metrics(seeded: ApiHub) -> None:
    async with seeded.client(Scope.READ_ONLY) as client:
        await client.get("/api/v1/devices")
        await client.get("/api/v1/devices/ghost")
        text = (await client.get("/metrics")).text
    assert 'edgefleet_hub_requests_total{method="GET",route="/api/v1/devices",status="200"} 1.0' in text
    assert 'edgefleet_hub_requests_total{method="GET",route="/api/v1/devices/{device_id}",status="404"} 1.0' in text
    assert 'edgefleet_hub_rollouts{state="canary"} 0.0' in text
    assert "edgefleet_hub_queue_depth" in text


async def test_api_without_a_running_hub_is_503(tmp_path: Path) -> None:
    app = create_app(
        HubSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", model_manifest=tmp_path / "absent.json"),
        start_ingest=False,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
        response = await http.get("/api/v1/devices", headers={"Authorization": "Bearer efh_x"})
    assert response.status_code == 503


async def test_database_failure_is_503(hub: ApiHub, tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    broken = Store.open(f"sqlite+aiosqlite:///{tmp_path / 'dir.db'}")
    hub.app.dependency_overrides[get_store] = lambda: broken
    try:
        async with hub.client(Scope.READ_ONLY) as client:
            response = await client.get("/api/v1/stats")
    finally:
        hub.app.dependency_overrides.clear()
        await broken.close()
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the database is unavailable")
