"""A rolled-out model reaches a device: a real HubServer (SQLite, in-process EVM notary), a real Mosquitto
and a real EdgeAgent. The agent fetches with its own token, checks signature, sha256 and the on-chain
anchor, and hot-swaps; a tampered artifact and a model whose anchor differs are refused, and the
running model stays live.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update

from cloud_hub.notary import ChainSettings
from cloud_hub.server import HubServer
from cloud_hub.settings import HubSettings
from cloud_hub.store import ModelVersion
from edge_agent.agent import EdgeAgent
from edge_agent.model import load_model, read_manifest
from edge_agent.settings import AgentSettings, UpdateSettings
from edge_agent.transport import mqtt_connector
from protocol import BrokerSettings, decode, encode
from protocol.manifest import ModelManifest
from protocol.messages import CommandReply, TelemetryReading
from protocol.signing import public_key_of, sign
from tests.services import Mosquitto, until
from tests.signed_models import EDGE, MODELS, copy_model, write_public_key

pytestmark = pytest.mark.integration

GROUP = "line-1"
DEVICE = "meter-001"


def signed_edge_model(
    key: Ed25519PrivateKey, version: str, artifact: Path | None = None
) -> tuple[ModelManifest, bytes]:
    """The committed int8 edge model (or ``artifact`` in its place) under ``version``, signed."""
    data = (artifact or MODELS / f"{EDGE}.onnx").read_bytes()
    manifest = read_manifest(MODELS / f"{EDGE}.manifest.json").model_copy(
        update={"version": version, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    )
    return sign(manifest, key), data


def upload_body(manifest: ModelManifest, data: bytes) -> dict[str, object]:
    return {"manifest": manifest.model_dump(mode="json"), "artifact_base64": base64.b64encode(data).decode()}


async def test_a_rolled_out_model_is_fetched_checked_on_chain_and_goes_live(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    trusted = write_public_key(key, tmp_path / "model-key.pem")
    broker = BrokerSettings(host=mosquitto.host, port=mosquitto.port)
    admin = "efh_" + secrets.token_urlsafe(32)
    hub_settings = HubSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        port=0,
        broker=broker,
        model_manifest=MODELS / "italy_power_cloud_fp32.manifest.json",
        admin_token=admin,
        trusted_model_keys=[trusted],
        chain=ChainSettings(),  # the in-process EVM, its reads served on loopback for the device
        rollout_interval_s=3600,
    )
    async with (
        HubServer(hub_settings) as hub,
        httpx.AsyncClient(base_url=hub.base_url, headers={"Authorization": f"Bearer {admin}"}) as operator,
    ):
        registered = await operator.post(
            "/api/v1/devices", json={"device_id": DEVICE, "site": "plant-1", "device_group": GROUP}
        )
        assert registered.status_code in (200, 201), registered.text
        token = (await operator.post("/api/v1/tokens", json={"scope": "device", "device_id": DEVICE})).json()["token"]
        token_file = tmp_path / "device.token"
        token_file.write_text(token + "\n")

        settings = AgentSettings(
            site="plant-1",
            devices=[DEVICE],
            broker=broker,
            client_id="agent-model-update",
            outbox_path=tmp_path / "outbox.db",
            http_port=0,
            trusted_model_keys=[trusted],
            model_manifest=copy_model(tmp_path / "v1", version="1.0.0", key=key),
            updates=UpdateSettings(
                hub_url=hub.base_url, token_file=token_file, model_dir=tmp_path / "models", retries=1, backoff_s=0.1
            ),
        )
        model = load_model(settings.model_manifest, trusted_keys=[public_key_of(key)])
        agent = EdgeAgent(settings, model=model, connect=mqtt_connector(broker, client_id="agent-model-update"))
        replies: list[CommandReply] = []
        subscribed = asyncio.Event()
        listener = asyncio.create_task(collect_replies(broker, replies, subscribed))
        await asyncio.wait_for(subscribed.wait(), 10)
        async with agent:
            await asyncio.wait_for(agent.connected.wait(), 10)
            updater = agent.updater
            assert updater is not None

            async def health() -> dict[str, object]:
                async with httpx.AsyncClient() as http:
                    answer = (await http.get(f"http://127.0.0.1:{agent.http_port}/health")).json()
                assert isinstance(answer, dict)
                return answer

            async def roll_out(version: str) -> int:
                created = await operator.post(
                    "/api/v1/rollouts",
                    json={"model_name": EDGE, "model_version": version, "device_group": GROUP, "canary_percent": 100},
                )
                assert created.status_code == 201, created.text
                return int(created.json()["id"])

            # 1. A signed model, anchored at upload, rolled out to all of the group: it goes live.
            manifest, data = signed_edge_model(key, "2.0.0")
            uploaded = await operator.post("/api/v1/models", json=upload_body(manifest, data))
            assert uploaded.status_code == 201, uploaded.text
            assert uploaded.json()["anchor"]["tx_hash"].startswith("0x")
            first = await roll_out("2.0.0")
            readings = asyncio.create_task(publish_readings(broker, count=200))
            await until(lambda: agent.model.manifest.version == "2.0.0", 60, "version 2.0.0 live")
            await readings
            assert (await health())["model"] == {"name": EDGE, "version": "2.0.0", "backend": "onnxruntime"}
            assert updater.fetcher.anchor_checks == 1, "the anchor was read on chain"
            assert (tmp_path / "models" / f"{EDGE}-2.0.0" / f"{EDGE}.onnx").read_bytes() == data
            assert (await operator.post(f"/api/v1/rollouts/{first}/promote")).status_code == 200
            assert await agent.drained(10)
            assert agent.stats.rejections == 0, "no reading was refused across the swap"
            assert agent.stats.telemetry_messages == 200

            # 2. A tampered artifact (the hub's copy altered after upload) is refused; 2.0.0 keeps running.
            manifest3, data3 = signed_edge_model(key, "3.0.0")
            assert (await operator.post("/api/v1/models", json=upload_body(manifest3, data3))).status_code == 201
            tampered = bytearray(data3)
            tampered[200] ^= 0xFF
            async with hub.store.transaction("tamper with a model") as session:
                await session.execute(
                    update(ModelVersion).where(ModelVersion.version == "3.0.0").values(artifact=bytes(tampered))
                )
            refused_before = updater.refused
            second = await roll_out("3.0.0")
            await until(lambda: updater.refused > refused_before, 60, "3.0.0 refused")
            assert agent.model.manifest.version == "2.0.0"
            assert not (tmp_path / "models" / f"{EDGE}-3.0.0").exists(), "nothing half-written where models load"
            assert (await operator.post(f"/api/v1/rollouts/{second}/abort")).status_code == 200

            # 3. A validly signed build whose sha256 is not the one anchored for its version is refused.
            manifest4, data4 = signed_edge_model(key, "4.0.0")
            assert (await operator.post("/api/v1/models", json=upload_body(manifest4, data4))).status_code == 201
            other, other_data = signed_edge_model(key, "4.0.0", artifact=MODELS / "italy_power_edge_fp32.onnx")
            async with hub.store.transaction("swap a model build") as session:
                await session.execute(
                    update(ModelVersion)
                    .where(ModelVersion.version == "4.0.0")
                    .values(
                        artifact=other_data,
                        sha256=other.sha256,
                        size_bytes=other.bytes,
                        manifest=json.loads(other.model_dump_json()),
                    )
                )
            refused_before = updater.refused
            checks_before = updater.fetcher.anchor_checks
            await roll_out("4.0.0")
            await until(lambda: updater.refused > refused_before, 60, "4.0.0 refused")
            assert agent.model.manifest.version == "2.0.0"
            assert updater.fetcher.anchor_checks == checks_before, "the anchor check failed"
            assert not (tmp_path / "models" / f"{EDGE}-4.0.0").exists()
            assert (await health())["model"] == {"name": EDGE, "version": "2.0.0", "backend": "onnxruntime"}
            assert updater.updated == 1
            await until(lambda: len(replies) >= 7, 10, "the replies at the broker")
        listener.cancel()
        outcomes = [(reply.status.value, reply.detail) for reply in replies]
        assert outcomes[:2] == [
            ("accepted", "fetching the model from the hub"),
            ("ok", "the model is live (on probation)"),
        ]
        rejected = [detail for status, detail in outcomes if status == "rejected"]
        assert len(rejected) == 2
        assert "the artifact's sha256 is" in rejected[0]
        assert "differs from the anchored" in rejected[1]
        assert ("ok", "already running this version") in outcomes, "the abort sent the incumbent again"


async def collect_replies(broker: BrokerSettings, replies: list[CommandReply], subscribed: asyncio.Event) -> None:
    """The device's command replies, as the hub side of the broker sees them."""
    async with mqtt_connector(broker, client_id="reply-listener")() as session:
        await session.subscribe([f"edgefleet/plant-1/{DEVICE}/reply"], qos=1)
        subscribed.set()
        async for message in session.messages():
            reply = decode(message.payload)
            assert isinstance(reply, CommandReply)
            replies.append(reply)


async def publish_readings(broker: BrokerSettings, *, count: int) -> None:
    """Readings from the device while the model is swapped."""
    connect = mqtt_connector(broker, client_id="firmware-model-update")
    async with connect() as session:
        for seq in range(count):
            reading = TelemetryReading(
                device_id=DEVICE,
                timestamp=time.time(),
                stream="power",
                sensor="power",
                unit="kW",
                seq=seq,
                value=1.0 + (seq % 24) / 10,
            )
            await session.publish(f"edgefleet/plant-1/{DEVICE}/telemetry/power", encode(reading), qos=1)
            await asyncio.sleep(0.005)
