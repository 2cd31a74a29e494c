"""Escalations over HTTPS, the model registry, rollouts and drift through the REST API.

Backend-independent: tests/integration/test_hub_api_postgres.py runs these again on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_hub.api import create_app
from cloud_hub.settings import HubSettings
from cloud_hub.store import Scope
from protocol.codec import encode
from protocol.manifest import InputSpec, ModelManifest, OutputSpec, ZNormalize
from protocol.messages import SensorKind
from protocol.signing import sign
from tests.unit.cloud_hub import factories
from tests.unit.cloud_hub.factories import LABELS, SUMMER, WINDOW, tiny_model_bytes
from tests.unit.cloud_hub.hub import ApiHub

JSON = {"Content-Type": "application/json"}


def edge_manifest(version: str = "edge-2", data: bytes | None = None) -> tuple[ModelManifest, bytes]:
    artifact = data if data is not None else tiny_model_bytes()
    manifest = ModelManifest(
        name="tiny_edge",
        version=version,
        task="classification",
        role="edge",
        artifact="tiny_edge.onnx",
        sha256=hashlib.sha256(artifact).hexdigest(),
        bytes=len(artifact),
        input=InputSpec(
            name="window",
            shape=[None, WINDOW],
            sensor=SensorKind.POWER,
            unit="kW",
            window_size=WINDOW,
            hop=WINDOW,
            preprocessing=[ZNormalize()],
        ),
        output=OutputSpec(probabilities="probabilities", labels=LABELS, anomaly_score="anomaly_score"),
        parameters=2 * WINDOW,
        data="synthetic",
        rebuild="tests/unit/cloud_hub/test_api_hub.py",
    )
    return manifest, artifact


def upload_body(manifest: ModelManifest, artifact: bytes, card: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "manifest": manifest.model_dump(mode="json"),
        "artifact_base64": base64.b64encode(artifact).decode(),
        "card": card,
    }


# Escalations over HTTPS ----------------------------------------------------------------------------


async def test_https_escalation_is_judged_stored_and_answered_once(judging_hub: ApiHub) -> None:
    esc = factories.escalation(device="dev-1", values=SUMMER, edge_label="winter")
    async with judging_hub.client(Scope.DEVICE, device="dev-1") as device:
        first = await device.post("/api/v1/escalations", content=encode(esc), headers=JSON)
        again = await device.post("/api/v1/escalations", content=encode(esc), headers=JSON)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["duplicate"] is False
    assert body["published"] is False, "this hub runs without MQTT"
    assert body["verdict"]["esc"] == esc.message_id
    assert body["verdict"]["cloud"]["label"] == "summer"
    assert body["verdict"]["agrees"] is False
    assert again.json()["duplicate"] is True
    assert again.json()["verdict"] == body["verdict"], "a repeated escalation gets the stored verdict, same id"
    stats = await judging_hub.store.stats()
    assert stats.escalations == 1


async def test_https_escalation_needs_the_whole_wire_envelope(judging_hub: ApiHub) -> None:
    payload = json.loads(encode(factories.escalation(device="dev-1")))
    del payload["id"]  # a hub that invented the id would defeat idempotency
    async with judging_hub.client(Scope.DEVICE, device="dev-1") as device:
        response = await device.post("/api/v1/escalations", json=payload)
    assert response.status_code == 422
    assert "id" in response.text


async def test_a_window_the_model_cannot_take_is_422(judging_hub: ApiHub) -> None:
    esc = factories.escalation(device="dev-1", values=[1.0, 2.0, 3.0])
    async with judging_hub.client(Scope.DEVICE, device="dev-1") as device:
        response = await device.post("/api/v1/escalations", content=encode(esc), headers=JSON)
    assert response.status_code == 422
    assert "takes 24" in response.json()["detail"]


async def test_a_hub_without_a_model_says_so(hub: ApiHub) -> None:
    async with hub.client(Scope.DEVICE, device="dev-1") as device:
        response = await device.post(
            "/api/v1/escalations", content=encode(factories.escalation(device="dev-1")), headers=JSON
        )
    assert response.status_code == 503
    assert "without a model" in response.json()["detail"]


# Models --------------------------------------------------------------------------------------------


async def test_upload_list_card_and_download(judging_hub: ApiHub, signing_key: Ed25519PrivateKey) -> None:
    manifest, artifact = edge_manifest()
    signed = sign(manifest, signing_key)
    async with judging_hub.client(Scope.OPERATOR) as operator:
        created = await operator.post("/api/v1/models", json=upload_body(signed, artifact, {"summary": "tiny"}))
        again = await operator.post("/api/v1/models", json=upload_body(signed, artifact))
        listing = (await operator.get("/api/v1/models")).json()
        card = (await operator.get("/api/v1/models/tiny_edge/edge-2")).json()
    assert created.status_code == 201, created.text
    assert created.json()["signed"] is True
    assert again.status_code == 200, "the same upload again is accepted and changes nothing"
    assert listing["total"] == 1
    assert card["manifest"]["signature"] == signed.signature
    assert card["card"] == {"summary": "tiny"}
    assert card["agreement"] == []

    async with judging_hub.client(Scope.DEVICE, device="dev-7") as device:
        download = await device.get("/api/v1/models/tiny_edge/edge-2/artifact")
        stored_manifest = await device.get("/api/v1/models/tiny_edge/edge-2/manifest")
    assert download.status_code == 200
    assert download.content == artifact
    assert download.headers["x-content-sha256"] == manifest.sha256
    assert ModelManifest.model_validate(stored_manifest.json()) == signed


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("unsigned", "is not signed"),
        ("foreign_key", "not signed by a trusted key"),
        ("bytes_changed", "sha256"),
        ("size", "bytes"),
    ],
)
async def test_uploads_that_do_not_check_out_are_422(
    judging_hub: ApiHub, signing_key: Ed25519PrivateKey, tamper: str, reason: str
) -> None:
    manifest, artifact = edge_manifest()
    signed = sign(manifest, signing_key)
    if tamper == "unsigned":
        body = upload_body(manifest, artifact)
    elif tamper == "foreign_key":
        body = upload_body(sign(manifest, Ed25519PrivateKey.generate()), artifact)
    elif tamper == "bytes_changed":
        body = upload_body(signed, artifact[:-1] + bytes([artifact[-1] ^ 1]))
    else:
        body = upload_body(signed, artifact + b"\0")
    async with judging_hub.client(Scope.OPERATOR) as operator:
        response = await operator.post("/api/v1/models", json=body)
        listing = (await operator.get("/api/v1/models")).json()
    assert response.status_code == 422
    assert reason in response.json()["detail"]
    assert listing["total"] == 0, "nothing of a refused upload is kept"


async def test_same_version_with_other_bytes_is_409(judging_hub: ApiHub, signing_key: Ed25519PrivateKey) -> None:
    manifest, artifact = edge_manifest()
    other = tiny_model_bytes().replace(b"tiny_cloud", b"tiny_other")
    changed, _ = edge_manifest(data=other)
    async with judging_hub.client(Scope.OPERATOR) as operator:
        assert (
            await operator.post("/api/v1/models", json=upload_body(sign(manifest, signing_key), artifact))
        ).status_code == 201
        response = await operator.post("/api/v1/models", json=upload_body(sign(changed, signing_key), other))
    assert response.status_code == 409
    assert "new version" in response.json()["detail"]


async def test_unknown_model_is_404(judging_hub: ApiHub) -> None:
    async with judging_hub.client(Scope.READ_ONLY) as reader:
        assert (await reader.get("/api/v1/models/nothing/1")).status_code == 404
        assert (await reader.get("/api/v1/models/nothing/1/artifact")).status_code == 404


# Rollouts ------------------------------------------------------------------------------------------


async def prepare_rollout(hub: ApiHub, key: Ed25519PrivateKey, devices: int = 20) -> None:
    for index in range(devices):
        await hub.store.register_device(f"dev-{index:02d}", site="north", device_group="pilots")
    manifest, artifact = edge_manifest()
    async with hub.client(Scope.OPERATOR) as operator:
        response = await operator.post("/api/v1/models", json=upload_body(sign(manifest, key), artifact))
        assert response.status_code == 201


async def feed_cohorts(hub: ApiHub, *, canary_agrees: float, incumbent_agrees: float, per_device: int = 6) -> None:
    """Verdicts for every device of the group: canary devices run edge-2, the others edge-1."""
    from cloud_hub.rollout import in_canary

    now = time.time() + 5  # after the rollout began
    rollout = (await hub.services.rollouts.list_rollouts()).items[0]
    pairs = []
    for index in range(20):
        device = f"dev-{index:02d}"
        canary = in_canary(device, rollout.canary_percent)
        share = canary_agrees if canary else incumbent_agrees
        for sample in range(per_device):
            esc = factories.escalation(device=device, site="north", edge_label="winter", timestamp=now + sample)
            esc = esc.model_copy(
                update={"edge": esc.edge.model_copy(update={"model_version": "edge-2" if canary else "edge-1"})}
            )
            agrees = sample < round(share * per_device)
            pairs.append((esc, factories.verdict_for(esc, label="winter" if agrees else "summer")))
    await hub.store.record_escalations(pairs)


async def test_rollout_canary_then_promoted_by_the_figures(judging_hub: ApiHub, signing_key: Ed25519PrivateKey) -> None:
    await prepare_rollout(judging_hub, signing_key)
    async with judging_hub.client(Scope.OPERATOR) as operator:
        created = await operator.post(
            "/api/v1/rollouts",
            json={
                "model_name": "tiny_edge",
                "model_version": "edge-2",
                "device_group": "pilots",
                "canary_percent": 30,
                "incumbent_version": "edge-1",
                "min_samples": 10,
                "tolerance": 0.05,
            },
        )
        assert created.status_code == 201, created.text
        rollout_id = created.json()["id"]
        assert created.json()["state"] == "canary"
        second = await operator.post(
            "/api/v1/rollouts",
            json={"model_name": "tiny_edge", "model_version": "edge-2", "device_group": "pilots", "canary_percent": 5},
        )
        assert second.status_code == 409, "one open rollout per group"

        waiting = (await operator.post(f"/api/v1/rollouts/{rollout_id}/evaluate")).json()
        assert waiting["rollout"]["state"] == "canary"
        assert waiting["decision"]["target"] is None
        assert "waiting for 10 verdicts" in waiting["decision"]["reason"]

        await feed_cohorts(judging_hub, canary_agrees=5 / 6, incumbent_agrees=5 / 6)
        status = (await operator.post(f"/api/v1/rollouts/{rollout_id}/evaluate")).json()
    assert status["rollout"]["state"] == "promoted"
    assert status["canary"]["agreement_rate"] == pytest.approx(5 / 6)
    assert status["canary"]["devices"] + status["incumbent"]["devices"] == 20
    first, last = status["transitions"]
    assert (first["from_state"], first["to_state"]) == (None, "canary")
    assert first["detail"]["canary_devices"] == status["canary"]["devices"]
    assert (last["from_state"], last["to_state"]) == ("canary", "promoted")
    assert "no worse than the incumbent" in last["reason"]
    assert last["detail"]["canary"]["judged"] == status["canary"]["judged"]


async def test_rollout_rolled_back_when_the_canary_is_worse(
    judging_hub: ApiHub, signing_key: Ed25519PrivateKey
) -> None:
    await prepare_rollout(judging_hub, signing_key)
    async with judging_hub.client(Scope.OPERATOR) as operator:
        created = await operator.post(
            "/api/v1/rollouts",
            json={
                "model_name": "tiny_edge",
                "model_version": "edge-2",
                "device_group": "pilots",
                "canary_percent": 30,
                "incumbent_version": "edge-1",
                "min_samples": 10,
            },
        )
        rollout_id = created.json()["id"]
        await feed_cohorts(judging_hub, canary_agrees=2 / 6, incumbent_agrees=5 / 6)
        status = (await operator.post(f"/api/v1/rollouts/{rollout_id}/evaluate")).json()
        promote = await operator.post(f"/api/v1/rollouts/{rollout_id}/promote")
    assert status["rollout"]["state"] == "rolled_back"
    assert "agrees less with the full model" in status["transitions"][-1]["reason"]
    assert promote.status_code == 409, "a rolled-back rollout is final"


async def test_rollout_abort_and_unknown_model(judging_hub: ApiHub, signing_key: Ed25519PrivateKey) -> None:
    await prepare_rollout(judging_hub, signing_key)
    async with judging_hub.client(Scope.OPERATOR) as operator:
        missing = await operator.post(
            "/api/v1/rollouts",
            json={"model_name": "tiny_edge", "model_version": "edge-9", "device_group": "pilots", "canary_percent": 10},
        )
        created = await operator.post(
            "/api/v1/rollouts",
            json={"model_name": "tiny_edge", "model_version": "edge-2", "device_group": "pilots", "canary_percent": 10},
        )
        aborted = await operator.post(f"/api/v1/rollouts/{created.json()['id']}/abort", json={"reason": "wrong group"})
        listing = (await operator.get("/api/v1/rollouts", params={"state": "aborted"})).json()
    assert missing.status_code == 404
    assert aborted.json()["rollout"]["state"] == "aborted"
    assert aborted.json()["transitions"][-1]["reason"] == "wrong group"
    assert listing["total"] == 1


# Drift ---------------------------------------------------------------------------------------------


async def test_drift_alert_and_trigger_through_the_api(judging_hub: ApiHub) -> None:
    judging_hub.services.drift._reference_size = 30  # small samples keep the test fast
    judging_hub.services.drift._window = 30
    start = time.time()
    pairs = []
    for index in range(60):
        confident = index < 30
        esc = factories.escalation(device="dev-1", site="north", timestamp=start + index)
        edge = esc.edge.model_copy(
            update={"confidence": 0.9 - index % 5 * 0.01 if confident else 0.5 + index % 5 * 0.01}
        )
        esc = esc.model_copy(update={"edge": edge})
        pairs.append((esc, factories.verdict_for(esc)))
    await judging_hub.store.record_escalations(pairs)
    async with judging_hub.client(Scope.OPERATOR) as operator:
        check = (await operator.post("/api/v1/drift/check")).json()
        again = (await operator.post("/api/v1/drift/check")).json()
        alerts = (await operator.get("/api/v1/drift")).json()
        triggers = (await operator.get("/api/v1/drift/triggers", params={"open_only": True})).json()
        consumed = await operator.post(f"/api/v1/drift/triggers/{triggers['items'][0]['id']}/consume")
        twice = await operator.post(f"/api/v1/drift/triggers/{triggers['items'][0]['id']}/consume")
    assert check["drifted"] >= 1
    assert {alert["metric"] for alert in check["alerts"]} >= {"edge_confidence"}
    assert again["alerts"] == [], "the same drift is not raised twice for the same observations"
    assert alerts["total"] == len(check["alerts"])
    assert triggers["total"] == 1
    assert triggers["items"][0]["device_group"] == "north"
    assert consumed.status_code == 200
    assert consumed.json()["consumed_by"].startswith("token:")
    assert twice.status_code == 409


async def test_the_hub_evaluates_open_rollouts_by_itself(
    hub_settings: HubSettings, tiny_manifest: Path, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    public = tmp_path / "trusted-background.pem"
    public.write_bytes(
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings = hub_settings.model_copy(
        update={"model_manifest": tiny_manifest, "trusted_model_keys": [public], "rollout_interval_s": 0.05}
    )
    app = create_app(settings, start_ingest=False, load_model=True, background=True)
    async with app.router.lifespan_context(app):
        hub = ApiHub(app=app, settings=settings)
        await prepare_rollout(hub, signing_key)
        async with hub.client(Scope.OPERATOR) as operator:
            created = await operator.post(
                "/api/v1/rollouts",
                json={
                    "model_name": "tiny_edge",
                    "model_version": "edge-2",
                    "device_group": "pilots",
                    "canary_percent": 30,
                    "incumbent_version": "edge-1",
                    "min_samples": 10,
                },
            )
            await feed_cohorts(hub, canary_agrees=1.0, incumbent_agrees=5 / 6)
            for _ in range(100):
                status = (await operator.get(f"/api/v1/rollouts/{created.json()['id']}")).json()
                if status["rollout"]["state"] != "canary":
                    break
                await asyncio.sleep(0.05)
            # The evaluator refreshes the gauge after it commits the transition: the API can show the new
            # state a moment before /metrics does.
            for _ in range(100):
                metrics = (await operator.get("/metrics")).text
                if 'edgefleet_hub_rollouts{state="promoted"} 1.0' in metrics:
                    break
                await asyncio.sleep(0.05)
    assert status["rollout"]["state"] == "promoted"
    assert status["transitions"][-1]["actor"] == "hub"
    assert 'edgefleet_hub_rollouts{state="promoted"} 1.0' in metrics
    assert 'edgefleet_hub_rollout_transitions_total{state="promoted"} 1.0' in metrics
