"""HubServer: uvicorn inside the caller's event loop, on loopback."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from cloud_hub.errors import HubStartupError
from cloud_hub.server import HubServer
from cloud_hub.settings import HubSettings
from protocol.broker import BrokerSettings
from tests.services import free_port
from tests.unit.cloud_hub.factories import write_tiny_model

pytestmark = pytest.mark.integration


def settings_for(tmp_path: Path, **values: object) -> HubSettings:
    return HubSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", port=0, **values)  # type: ignore[arg-type]


async def test_serves_on_a_free_port_and_stops_cleanly(tmp_path: Path) -> None:
    async with HubServer(settings_for(tmp_path, demo_mode=True), start_ingest=False) as hub:
        assert hub.port > 0
        assert hub.base_url == f"http://127.0.0.1:{hub.port}"
        assert hub.counters is None
        async with httpx.AsyncClient(base_url=hub.base_url) as http:
            health = (await http.get("/api/v1/health")).json()
        assert health["status"] == "ok"
        assert health["demo_mode"] is True
        port = hub.port

    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the server should no longer listen"


async def test_missing_model_fails_start_up_with_the_reason(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, model_manifest=tmp_path / "missing.manifest.json")
    with pytest.raises(HubStartupError, match=r"cannot read model manifest .*missing\.manifest\.json"):
        async with HubServer(settings):
            pass


async def test_port_in_use_fails_start_up(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = settings_for(tmp_path).model_copy(update={"port": taken.getsockname()[1]})
        with pytest.raises(HubStartupError, match=r"cannot listen on 127\.0\.0\.1"):
            async with HubServer(settings, start_ingest=False):
                pass


async def test_unreachable_broker_fails_start_up_when_waiting_for_it(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        model_manifest=write_tiny_model(tmp_path / "model"),
        broker=BrokerSettings(port=free_port()),
    )
    with pytest.raises(HubStartupError, match="could not subscribe at the MQTT broker"):
        async with HubServer(settings, ready_timeout_s=0.5):
            pass


async def test_unreachable_broker_does_not_block_start_up_when_not_waiting(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        model_manifest=write_tiny_model(tmp_path / "model"),
        broker=BrokerSettings(port=free_port()),
    )
    async with HubServer(settings, ready_timeout_s=None) as hub:
        assert hub.ingestor is not None and not hub.ingestor.subscribed
        async with httpx.AsyncClient(base_url=hub.base_url) as http:
            response = await http.get("/api/v1/health")
        assert response.status_code == 503
        assert response.json()["status"] == "degraded"
