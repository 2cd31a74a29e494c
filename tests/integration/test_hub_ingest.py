"""The hub end to end over a real Mosquitto: escalations in, verdicts out, events stored once.

Runs twice: with a tiny model built by the test (checks the plumbing today) and with the committed
cloud model (skipped until ``models/`` has built it).
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import httpx
import pytest
from pydantic import SecretStr

from cloud_hub.server import HubServer
from cloud_hub.settings import HubSettings
from protocol.broker import BrokerSettings
from protocol.codec import decode_as, encode
from protocol.manifest import ModelManifest
from protocol.messages import Verdict
from protocol.topics import Kind, Topic
from tests.conftest import REPO
from tests.services import Mosquitto
from tests.unit.cloud_hub import factories
from tests.unit.cloud_hub.factories import SUMMER, WINTER, write_tiny_model

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "efh_" + secrets.token_urlsafe(32)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
COMMITTED_MANIFEST = REPO / "models/quantized/italy_power_cloud_fp32.manifest.json"
DEVICE = Topic(site="site-1", device="dev-1", kind=Kind.ESCALATION)
WAIT_S = 15.0


@dataclass(frozen=True)
class ModelUnderTest:
    manifest: Path
    labels: list[str]


@pytest.fixture(params=["tiny", "committed"])
def model(request: pytest.FixtureRequest, tmp_path: Path) -> ModelUnderTest:
    if request.param == "tiny":
        manifest = write_tiny_model(tmp_path / "model")
    elif COMMITTED_MANIFEST.exists():
        manifest = COMMITTED_MANIFEST
    else:
        pytest.skip(f"the committed cloud model is not built yet: {COMMITTED_MANIFEST.relative_to(REPO)} is missing")
    labels = ModelManifest.model_validate_json(manifest.read_bytes()).output.labels
    return ModelUnderTest(manifest=manifest, labels=list(labels))


def hub_settings(broker: Mosquitto, tmp_path: Path, manifest: Path) -> HubSettings:
    return HubSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        broker=BrokerSettings(host=broker.host, port=broker.port),
        model_manifest=manifest,
        port=0,
        max_wait_ms=1.0,
        admin_token=SecretStr(ADMIN_TOKEN),
    )


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"gave up after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def next_verdict(client: aiomqtt.Client, what: str) -> Verdict:
    try:
        async with asyncio.timeout(WAIT_S):
            message = await anext(aiter(client.messages))
    except TimeoutError:
        pytest.fail(f"no verdict arrived within {WAIT_S} s for {what}")
    assert isinstance(message.payload, bytes)
    return decode_as(Verdict, message.payload, topic=Topic.parse(message.topic.value))


async def test_escalations_get_verdicts_and_are_stored_once(
    mosquitto: Mosquitto, tmp_path: Path, model: ModelUnderTest
) -> None:
    labels = model.labels
    settings = hub_settings(mosquitto, tmp_path, model.manifest)
    escalation_topic = str(DEVICE)

    async with (
        HubServer(settings) as hub,
        aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="test-device-dev-1") as device,
    ):
        counters = hub.counters
        assert counters is not None
        await device.subscribe(str(DEVICE.sibling(Kind.VERDICT)), qos=1)
        await device.publish(str(DEVICE.sibling(Kind.BIRTH)), encode(factories.birth()), qos=1)

        esc = factories.escalation(values=WINTER)
        await device.publish(escalation_topic, encode(esc), qos=1)
        first = await next_verdict(device, "the escalation")
        await device.publish(escalation_topic, encode(esc), qos=1)
        second = await next_verdict(device, "the same escalation sent again")

        assert first.escalation_id == esc.message_id
        assert first.device_id == "dev-1"
        assert first.cloud.label in labels
        assert second == first, "a repeated escalation must get the verdict stored the first time"

        # Raw bytes, not our encoder: the hub must count it and carry on.
        await device.publish(escalation_topic, b"\x00 this is not JSON {", qos=1)
        await eventually(lambda: counters.rejected["malformed_payload"] == 1, "the malformed payload to be counted")

        later = factories.escalation(values=SUMMER)
        await device.publish(escalation_topic, encode(later), qos=1)
        third = await next_verdict(device, "an escalation after the malformed payload")
        assert third.escalation_id == later.message_id

        async with httpx.AsyncClient(base_url=hub.base_url, headers=ADMIN) as http:
            events = (await http.get("/api/v1/events", params={"kind": "escalation", "device": "dev-1"})).json()
            devices = (await http.get("/api/v1/devices")).json()
            health = (await http.get("/api/v1/health")).json()

        assert events["total"] == 2
        assert sorted(event["message_id"] for event in events["items"]) == sorted([esc.message_id, later.message_id])
        assert [(item["device_id"], item["status"]) for item in devices["items"]] == [("dev-1", "online")]
        assert health["status"] == "ok"
        assert health["ingest"]["subscribed"] is True
        assert health["model"]["labels"] == labels

        assert counters.duplicates == 1
        assert counters.verdicts_sent == 3
        assert dict(counters.rejected) == {"malformed_payload": 1}
        assert counters.received["escalation"] == 4
        assert counters.received["birth"] == 1
        assert dict(counters.failures) == {}


async def test_hub_reconnects_after_the_broker_restarts(own_mosquitto: Mosquitto, tmp_path: Path) -> None:
    settings = hub_settings(own_mosquitto, tmp_path, write_tiny_model(tmp_path / "model"))

    async with HubServer(settings) as hub:
        ingestor = hub.ingestor
        assert ingestor is not None
        await asyncio.to_thread(own_mosquitto.stop)
        await eventually(lambda: not ingestor.subscribed, "the hub to notice that the broker is gone")
        await asyncio.to_thread(own_mosquitto.start)
        await eventually(lambda: ingestor.subscribed, "the hub to reconnect", timeout_s=45.0)
        assert ingestor.counters.connections == 2

        async with aiomqtt.Client(own_mosquitto.host, own_mosquitto.port, identifier="test-device-dev-1") as device:
            await device.subscribe(str(DEVICE.sibling(Kind.VERDICT)), qos=1)
            esc = factories.escalation()
            await device.publish(str(DEVICE), encode(esc), qos=1)
            verdict = await next_verdict(device, "an escalation after the broker restarted")
        assert verdict.escalation_id == esc.message_id


async def test_https_escalation_verdict_goes_back_over_mqtt_too(mosquitto: Mosquitto, tmp_path: Path) -> None:
    settings = hub_settings(mosquitto, tmp_path, write_tiny_model(tmp_path / "model"))
    async with (
        HubServer(settings) as hub,
        aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="test-device-dev-1") as device,
        httpx.AsyncClient(base_url=hub.base_url, headers=ADMIN) as admin,
    ):
        await device.subscribe(str(DEVICE.sibling(Kind.VERDICT)), qos=1)
        token = (await admin.post("/api/v1/tokens", json={"scope": "device", "device_id": "dev-1"})).json()["token"]
        esc = factories.escalation(values=SUMMER)
        response = await admin.post(
            "/api/v1/escalations",
            content=encode(esc),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["published"] is True
        over_mqtt = await next_verdict(device, "the verdict of an escalation sent over HTTPS")
        assert over_mqtt.model_dump(mode="json", by_alias=True) == response.json()["verdict"]

        # The same escalation over MQTT now is a duplicate: answered with the same verdict, stored once.
        await device.publish(str(DEVICE), encode(esc), qos=1)
        assert await next_verdict(device, "the escalation sent again over MQTT") == over_mqtt
        assert (await admin.get("/api/v1/stats")).json()["escalations"] == 1


async def test_two_hub_workers_share_escalations(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Two workers on one database behind one shared subscription: each escalation judged by one of them."""
    manifest = write_tiny_model(tmp_path / "model")
    first = hub_settings(mosquitto, tmp_path, manifest)
    second = first.model_copy(update={"port": 0})
    async with (
        HubServer(first) as one,
        HubServer(second) as two,
        aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="test-device-dev-1") as device,
    ):
        await device.subscribe(str(DEVICE.sibling(Kind.VERDICT)), qos=1)
        sent = [factories.escalation(values=WINTER if index % 2 else SUMMER) for index in range(40)]
        for esc in sent:
            await device.publish(str(DEVICE), encode(esc), qos=1)
        verdicts = [await next_verdict(device, f"verdict {index}") for index in range(len(sent))]
        assert one.counters is not None and two.counters is not None
        judged = (one.counters.judged, two.counters.judged)
        assert sum(judged) == len(sent), f"each escalation judged once across the workers, got {judged}"
        assert min(judged) > 0, f"the shared subscription spreads the load, got {judged}"
        assert {verdict.escalation_id for verdict in verdicts} == {esc.message_id for esc in sent}
