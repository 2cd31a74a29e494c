"""Access control through the API: who may do what, rate limits, the audit log.

Backend-independent: tests/integration/test_hub_api_postgres.py runs these again on PostgreSQL.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from cloud_hub.auth import TokenBucket, hash_token
from cloud_hub.store import ApiToken, Scope
from protocol.codec import encode
from tests.unit.cloud_hub import factories
from tests.unit.cloud_hub.hub import ApiHub, running_hub

JSON = {"Content-Type": "application/json"}


async def test_no_token_is_401_with_a_challenge(hub: ApiHub) -> None:
    async with hub.client(None) as anonymous:
        response = await anonymous.get("/api/v1/devices")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API token is required" in response.json()["detail"]


@pytest.mark.parametrize("header", ["Bearer efh_not-a-token", "Bearer nonsense", "Basic dXNlcjpwYXNz"])
async def test_an_unknown_token_is_401(hub: ApiHub, header: str) -> None:
    async with hub.client(None) as anonymous:
        response = await anonymous.get("/api/v1/devices", headers={"Authorization": header})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("scope", "method", "path", "body"),
    [
        (Scope.READ_ONLY, "POST", "/api/v1/devices", {"device_id": "d", "site": "s"}),
        (Scope.READ_ONLY, "POST", "/api/v1/rollouts/1/promote", None),
        (Scope.OPERATOR, "GET", "/api/v1/audit", None),
        (Scope.OPERATOR, "POST", "/api/v1/tokens", {"scope": "admin"}),
        (Scope.DEVICE, "GET", "/api/v1/devices", None),
        (Scope.DEVICE, "GET", "/api/v1/events", None),
        (Scope.DEVICE, "POST", "/api/v1/models", {}),
    ],
)
async def test_wrong_scope_is_403(
    hub: ApiHub, scope: Scope, method: str, path: str, body: dict[str, object] | None
) -> None:
    async with hub.client(scope, device="dev-1" if scope is Scope.DEVICE else None) as client:
        response = await client.request(method, path, json=body)
    assert response.status_code == 403, response.text
    assert f"a {scope.value} token may not do this" in response.json()["detail"]


async def test_a_device_acts_only_as_itself(judging_hub: ApiHub) -> None:
    await judging_hub.store.record_birth(factories.birth(device="dev-1"))
    await judging_hub.store.record_birth(factories.birth(device="dev-2"))
    theirs = factories.escalation(device="dev-2")
    async with judging_hub.client(Scope.DEVICE, device="dev-1") as device:
        own = await device.get("/api/v1/devices/dev-1")
        other = await device.get("/api/v1/devices/dev-2")
        impersonation = await device.post("/api/v1/escalations", content=encode(theirs), headers=JSON)
    assert own.status_code == 200
    assert other.status_code == 403
    assert impersonation.status_code == 403
    assert "not 'dev-2'" in impersonation.json()["detail"]
    assert await judging_hub.store.stored_verdict(theirs.message_id) is None, "nothing of it was judged or stored"


async def test_only_admins_send_escalations_for_others(judging_hub: ApiHub) -> None:
    esc = factories.escalation(device="dev-2")
    async with judging_hub.client(Scope.OPERATOR) as operator:
        refused = await operator.post("/api/v1/escalations", content=encode(esc), headers=JSON)
    async with judging_hub.client(Scope.ADMIN) as admin:
        accepted = await admin.post("/api/v1/escalations", content=encode(esc), headers=JSON)
    assert refused.status_code == 403
    assert accepted.status_code == 200


async def test_tokens_are_stored_hashed_and_can_be_revoked(hub: ApiHub) -> None:
    async with hub.client(Scope.ADMIN) as admin:
        created = await admin.post("/api/v1/tokens", json={"scope": "read-only", "label": "dashboard"})
        secret = created.json()["token"]
        async with hub.store.transaction("read") as session:
            row = await session.get(ApiToken, created.json()["id"])
        assert row is not None and row.token_hash == hash_token(secret)
        assert secret not in repr(row.__dict__)

        headers = {"Authorization": f"Bearer {secret}"}
        assert (await admin.get("/api/v1/whoami", headers=headers)).json()["scope"] == "read-only"
        assert (await admin.post(f"/api/v1/tokens/{created.json()['id']}/revoke")).status_code == 204
        assert (await admin.get("/api/v1/devices", headers=headers)).status_code == 401


async def test_device_tokens_need_a_device(hub: ApiHub) -> None:
    async with hub.client(Scope.ADMIN) as admin:
        missing = await admin.post("/api/v1/tokens", json={"scope": "device"})
        stray = await admin.post("/api/v1/tokens", json={"scope": "operator", "device_id": "dev-1"})
        good = await admin.post("/api/v1/tokens", json={"scope": "device", "device_id": "dev-1"})
    assert missing.status_code == 422
    assert stray.status_code == 422
    assert good.status_code == 201
    assert good.json()["device_id"] == "dev-1"


async def test_rate_limit_is_per_token_with_retry_after(hub_settings: object) -> None:
    from cloud_hub.settings import HubSettings

    assert isinstance(hub_settings, HubSettings)
    settings = hub_settings.model_copy(update={"rate_limit_per_s": 0.5, "rate_limit_burst": 3})
    async with running_hub(settings) as hub:
        async with hub.client(Scope.READ_ONLY) as client:
            codes = [(await client.get("/api/v1/stats")).status_code for _ in range(4)]
            refused = await client.get("/api/v1/stats")
        async with hub.client(Scope.READ_ONLY) as other:
            fresh = await other.get("/api/v1/stats")
        metrics = await other_metrics(hub)
    assert codes == [200, 200, 200, 429]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    assert fresh.status_code == 200, "another token has its own bucket"
    assert "edgefleet_hub_rate_limited_total 2.0" in metrics


async def other_metrics(hub: ApiHub) -> str:
    async with hub.client(None) as anonymous:
        return (await anonymous.get("/metrics")).text


async def test_privileged_actions_are_audited(hub: ApiHub) -> None:
    async with hub.client(Scope.OPERATOR) as operator:
        await operator.post("/api/v1/devices", json={"device_id": "dev-5", "site": "north"})
        await operator.get("/api/v1/devices")  # a read is not audited
    async with hub.client(Scope.READ_ONLY) as reader:
        await reader.post("/api/v1/devices", json={"device_id": "dev-6", "site": "north"})  # refused, still audited
    async with hub.client(Scope.ADMIN) as admin:
        log = (await admin.get("/api/v1/audit")).json()
    actions = [(entry["scope"], entry["action"], entry["target"], entry["status"]) for entry in log["items"]]
    assert actions == [
        ("read-only", "POST /api/v1/devices", "/api/v1/devices", 403),
        ("operator", "POST /api/v1/devices", "/api/v1/devices", 201),
    ]


async def test_the_bootstrap_admin_token_works(hub_settings: object) -> None:
    from cloud_hub.settings import HubSettings

    assert isinstance(hub_settings, HubSettings)
    secret = "efh_" + "x" * 43
    settings = hub_settings.model_copy(update={"admin_token": SecretStr(secret)})
    async with running_hub(settings) as hub, hub.client(None) as anonymous:
        response = await anonymous.get("/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert response.json()["scope"] == "admin"


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=2.0)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) == pytest.approx(0.5)
    assert bucket.take(10.25) == pytest.approx(0.25)
    assert bucket.take(10.75) == 0.0
