"""The hub's federated-learning routes (/api/v1/fl) on SQLite, and drift starting a run.

Rounds are notarized the way the ServerApp does it (``notarize_round`` into a JSON Lines ledger under the
run's state directory, one journal entry per round from ``round_entry``) on the in-memory notary, which
the hub's coordinator is then given as its chain. Runs go to the in-memory launcher, swapped in through
``dependency_overrides`` as the hub's own tests swap dependencies.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_hub.fl.errors import UpdateRejectedError
from cloud_hub.fl.journal import RoundJournal, round_entry
from cloud_hub.fl.notarizing import AcceptedUpdate, NotarizedRound
from cloud_hub.fl.routes import get_launcher
from cloud_hub.fl.runs import CONSUMER, FederatedRuns, InMemoryLauncher
from cloud_hub.fl.settings import HubFederationSettings
from cloud_hub.notary import InMemoryNotary, JsonLinesRoundLedger, LeafRecord, notarize_round
from cloud_hub.store import Scope, Store
from protocol.notary import InclusionProof
from protocol.updates import sign_update
from tests.unit.cloud_hub import factories
from tests.unit.cloud_hub.hub import ApiHub, running_hub, sqlite_settings

DEVICES = ["dev-1", "dev-2", "dev-3"]


@pytest.fixture(autouse=True)
async def aiosqlite_threads_finish() -> AsyncIterator[None]:
    yield
    await asyncio.sleep(0.05)


def notarize_rounds(state_dir: Path, notary: InMemoryNotary, *, rounds: int) -> list[NotarizedRound]:
    """``rounds`` rounds of three signed updates each (round 2 also rejects a fourth device), journaled."""
    ledger = JsonLinesRoundLedger(state_dir / "ledger")
    journal = RoundJournal(state_dir)
    keys = {device: Ed25519PrivateKey.generate() for device in DEVICES}
    done = []
    for server_round in range(1, rounds + 1):
        round_id = server_round
        accepted, records = [], []
        for node_id, device in enumerate(DEVICES, start=1):
            digest = hashlib.sha256(f"update {device} {round_id}".encode()).digest()
            signature = sign_update(keys[device], round_id, device, digest)
            record = LeafRecord(device_id=device, update_digest=digest, signature=signature)
            records.append(record)
            accepted.append(AcceptedUpdate(node_id, device, digest, signature, record.leaf(round_id)))
        model_hash = hashlib.sha256(f"global model {round_id}".encode()).digest()
        committed = notarize_round(notary, ledger, round_id, records, model_hash)
        rejected = [UpdateRejectedError(9, "dev-9", "signature does not verify")] if server_round == 2 else []
        notarized = NotarizedRound(
            round_id=round_id,
            server_round=server_round,
            accepted=accepted,
            rejected=rejected,
            root=committed.root,
            leaves=[leaf.leaf(round_id) for leaf in sorted(records, key=lambda r: r.device_id)],
            model_hash=model_hash,
            receipt=committed.receipt,
            notarize_seconds=0.01,
        )
        journal.append(round_entry(notarized, strategy="fedmedian"))
        done.append(notarized)
    journal.write_run(
        {
            "status": "finished",
            "strategy": "fedmedian",
            "num_rounds": rounds,
            "first_round_id": 1,
            "last_round_id": rounds,
            "started_at": time.time() - 60,
            "server_metrics": {str(r): {"holdout-accuracy": 0.7 + r / 100} for r in range(rounds + 1)},
            "client_metrics": {str(r): {"accuracy": 0.6 + r / 100} for r in range(1, rounds + 1)},
            "model": {"artifact": "/models/fl-1-2.onnx", "sha256": "ab" * 32, "version": "fl-1-2", "signed": True},
        }
    )
    return done


def federation_of(hub: ApiHub) -> FederatedRuns:
    federation: FederatedRuns = hub.app.state.federation
    return federation


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[ApiHub]:
    settings = sqlite_settings(
        tmp_path,
        fl=HubFederationSettings(state_dir=tmp_path / "fl", run_config={"num-rounds": 3}),
        drift_reference_size=40,
        drift_window=40,
    )
    async with running_hub(settings) as running:
        yield running


@pytest.fixture
def notary(hub: ApiHub) -> InMemoryNotary:
    notary = InMemoryNotary()
    federation_of(hub).notary = notary
    return notary


@pytest.fixture
def launcher(hub: ApiHub) -> InMemoryLauncher:
    launcher = InMemoryLauncher()
    hub.app.dependency_overrides[get_launcher] = lambda: launcher
    return launcher


async def test_rounds_are_listed_and_read_with_their_chain_record(
    hub: ApiHub, notary: InMemoryNotary, tmp_path: Path
) -> None:
    notarized = notarize_rounds(tmp_path / "fl", notary, rounds=2)
    async with hub.client(Scope.READ_ONLY) as http:
        listing = (await http.get("/api/v1/fl/rounds")).json()
        assert listing["total"] == 2
        assert [item["round_id"] for item in listing["items"]] == [1, 2]

        response = await http.get("/api/v1/fl/rounds/2")
        assert response.status_code == 200, response.text
        detail = response.json()
        second = notarized[1]
        assert detail["strategy"] == "fedmedian"
        assert detail["clients"] == DEVICES and detail["accepted"] == 3
        assert detail["rejected"] == [{"device_id": "dev-9", "node_id": 9, "reason": "signature does not verify"}]
        assert second.root is not None and second.model_hash is not None
        assert detail["merkle_root"] == second.root.hex()
        assert detail["leaf_count"] == 3 and detail["ledger_leaf_count"] == 3
        assert detail["global_model_hash"] == second.model_hash.hex()
        assert detail["tx_hash"] == "0x" + second.receipt.tx_hash.hex()
        assert detail["block_number"] == second.receipt.block_number
        assert detail["metrics"]["server.holdout-accuracy"] == pytest.approx(0.72)
        assert detail["metrics"]["clients.accuracy"] == pytest.approx(0.62)
        assert detail["model"]["version"] == "fl-1-2", "the run's last round produced the model"
        assert detail["chain"]["committed"] and detail["chain"]["matches"]
        assert detail["chain"]["block_number"] == second.receipt.block_number

        first = (await http.get("/api/v1/fl/rounds/1")).json()
        assert first["model"] is None and first["rejected"] == []

        missing = await http.get("/api/v1/fl/rounds/7")
        assert missing.status_code == 404 and "round 7" in missing.json()["detail"]

        with (tmp_path / "fl" / "rounds.jsonl").open("a") as journal:
            journal.write('{"round_id": 3, "server_')  # the ServerApp is appending round 3 right now
        assert (await http.get("/api/v1/fl/rounds")).json()["total"] == 2


async def test_a_round_the_chain_does_not_hold_says_so(hub: ApiHub, tmp_path: Path) -> None:
    notarize_rounds(tmp_path / "fl", InMemoryNotary(), rounds=1)  # notarized on another chain
    federation_of(hub).notary = InMemoryNotary()
    async with hub.client(Scope.OPERATOR) as http:
        detail = (await http.get("/api/v1/fl/rounds/1")).json()
    assert detail["chain"] == {
        "committed": False,
        "matches": False,
        "root": None,
        "leaf_count": None,
        "model_hash": None,
        "block_number": None,
    }


async def test_a_device_reads_its_own_proof_and_it_verifies_against_the_chain(
    hub: ApiHub, notary: InMemoryNotary, tmp_path: Path
) -> None:
    notarize_rounds(tmp_path / "fl", notary, rounds=2)
    async with hub.client(Scope.DEVICE, device="dev-2") as http:
        response = await http.get("/api/v1/fl/rounds/2/proof/dev-2")
        assert response.status_code == 200, response.text
        body = response.json()
        proof = InclusionProof.model_validate_json(json.dumps(body["inclusion_proof"]))
        assert proof.record.device_id == "dev-2" and proof.round_id == 2
        assert body["leaf"] == proof.leaf.hex()
        assert notary.verify_inclusion(2, proof.leaf, proof.proof)
        proof.check(notary.get_round(2))  # what the device does with it

        other = await http.get("/api/v1/fl/rounds/2/proof/dev-1")
        assert other.status_code == 403 and "only its own" in other.json()["detail"]
        assert (await http.get("/api/v1/fl/rounds")).status_code == 403, "a device reads no round listing"

    for scope in (Scope.OPERATOR, Scope.ADMIN, Scope.READ_ONLY):
        async with hub.client(scope) as http:
            assert (await http.get("/api/v1/fl/rounds/1/proof/dev-1")).status_code == 200
    async with hub.client(Scope.OPERATOR) as http:
        absent = await http.get("/api/v1/fl/rounds/1/proof/dev-9")
        assert absent.status_code == 404 and "no update in round 1" in absent.json()["detail"]
        assert (await http.get("/api/v1/fl/rounds/5/proof/dev-1")).status_code == 404
    async with hub.client(None) as http:
        assert (await http.get("/api/v1/fl/rounds/1/proof/dev-1")).status_code == 401
        assert (await http.get("/api/v1/fl/rounds")).status_code == 401


async def test_an_operator_starts_a_run_and_a_second_waits_for_it(
    hub: ApiHub, launcher: InMemoryLauncher, tmp_path: Path
) -> None:
    async with hub.client(Scope.OPERATOR) as http:
        started = await http.post("/api/v1/fl/runs", json={"num_rounds": 2, "strategy": "multikrum", "reason": "test"})
        assert started.status_code == 202, started.text
        run = started.json()
        assert run["run_id"] == 1 and run["reason"] == "test" and run["requested_by"].startswith("token:")
        assert launcher.submitted == [
            {"num-rounds": 2, "state-dir": str((tmp_path / "fl").resolve()), "strategy": "multikrum"}
        ]

        again = await http.post("/api/v1/fl/runs")
        assert again.status_code == 409 and "run 1 is still going" in again.json()["detail"]
        triggers = (await http.get("/api/v1/fl/triggers")).json()
        assert triggers["running"]["run_id"] == 1

        launcher.finish(1)
        after = await http.post("/api/v1/fl/runs")
        assert after.status_code == 202 and after.json()["run_id"] == 2
        assert launcher.submitted[-1]["num-rounds"] == 3, "the [hub.fl] run config applies"

        invalid = await http.post("/api/v1/fl/runs", json={"strategy": "fedsum"})
        assert invalid.status_code == 422
        assert (await http.post("/api/v1/fl/runs", json={"rounds": 2})).status_code == 422
    for scope, device in ((Scope.READ_ONLY, None), (Scope.DEVICE, "dev-1")):
        async with hub.client(scope, device=device) as http:
            assert (await http.post("/api/v1/fl/runs")).status_code == 403
    async with hub.client(None) as http:
        assert (await http.post("/api/v1/fl/runs")).status_code == 401
    assert len(launcher.submitted) == 2, "refused requests start nothing"

    async with hub.client(Scope.ADMIN) as http:
        audit = (await http.get("/api/v1/audit", params={"limit": 100})).json()["items"]
    actions = [(entry["action"], entry["status"]) for entry in audit if entry["action"] == "POST /api/v1/fl/runs"]
    assert (("POST /api/v1/fl/runs", 202) in actions) and (("POST /api/v1/fl/runs", 409) in actions)
    assert ("POST /api/v1/fl/runs", 403) in actions, "refused privileged requests are audited too"


async def test_without_a_coordinator_a_run_is_refused_with_a_reason(hub: ApiHub) -> None:
    async with hub.client(Scope.OPERATOR) as http:
        response = await http.post("/api/v1/fl/runs")
        assert response.status_code == 503
        assert "no federated coordinator" in response.json()["detail"]

        hub.app.dependency_overrides[get_launcher] = lambda: InMemoryLauncher(fail="connection refused")
        failed = await http.post("/api/v1/fl/runs")
        assert failed.status_code == 503 and "connection refused" in failed.json()["detail"]


async def test_a_hub_without_federated_learning_has_no_rounds(tmp_path: Path) -> None:
    async with running_hub(sqlite_settings(tmp_path)) as plain, plain.client(Scope.OPERATOR) as http:
        assert (await http.get("/api/v1/fl/rounds")).json() == {"items": [], "total": 0}
        assert (await http.get("/api/v1/fl/rounds/1")).status_code == 404
        assert (await http.get("/api/v1/fl/rounds/1/proof/dev-1")).status_code == 404
        refused = await http.post("/api/v1/fl/runs")
        assert refused.status_code == 503 and "[hub.fl]" in refused.json()["detail"]
        triggers = (await http.get("/api/v1/fl/triggers")).json()
        assert triggers["drift_rounds"] is False and triggers["due"] is None


async def feed(store: Store, *, count: int, start: float, shifted: bool) -> None:
    rng = random.Random(count + int(shifted))
    values = [value * 3 + 10 for value in factories.WINTER] if shifted else None
    confidence = 0.9 if shifted else 0.6
    pairs = []
    for index in range(count):
        esc = factories.escalation(device=f"dev-{index % 3}", site="north", timestamp=start + index, values=values)
        edge = esc.edge.model_copy(update={"confidence": min(1.0, confidence + rng.uniform(-0.05, 0.05))})
        esc = esc.model_copy(update={"edge": edge})
        pairs.append((esc, factories.verdict_for(esc)))
    await store.record_escalations(pairs)


async def drift_once(hub: ApiHub) -> int:
    start = time.time()
    await feed(hub.store, count=40, start=start, shifted=False)
    await feed(hub.store, count=40, start=start + 100, shifted=True)
    report = await hub.services.drift.check()
    assert len(report.triggers) == 1, "the drift monitor opened a retraining trigger"
    return report.triggers[0].id


async def test_drift_raises_a_trigger_the_federated_trigger_sees_and_a_run_answers(tmp_path: Path) -> None:
    settings = sqlite_settings(
        tmp_path,
        fl=HubFederationSettings(state_dir=tmp_path / "fl", drift_rounds=True, cooldown_s=0.0),
        drift_reference_size=40,
        drift_window=40,
    )
    async with running_hub(settings) as hub:
        federation = federation_of(hub)
        launcher = InMemoryLauncher()
        federation.launcher = launcher
        assert federation.schedules
        assert await federation.start_due() is None, "no drift, no schedule: no run"

        trigger_id = await drift_once(hub)
        assert federation.trigger.due(time.time()) == "drift", "the listener reported the drift"
        async with hub.client(Scope.READ_ONLY) as http:
            pending = (await http.get("/api/v1/fl/triggers")).json()
        assert pending["drift_rounds"] is True and pending["due"] == "drift"
        assert [item["id"] for item in pending["items"]] == [trigger_id] and pending["total"] == 1

        started = await federation.start_due()
        assert started is not None and started.reason == "drift" and started.triggers == [trigger_id]
        assert launcher.submitted and launcher.submitted[0]["state-dir"] == str((tmp_path / "fl").resolve())
        consumed = (await hub.services.drift.triggers()).items[0]
        assert consumed.consumed_by == f"{CONSUMER} run {started.run_id}"
        assert await federation.start_due() is None, "answered: nothing is due any more"
        async with hub.client(Scope.READ_ONLY) as http:
            after = (await http.get("/api/v1/fl/triggers")).json()
        assert after["total"] == 0 and after["due"] is None and after["running"]["run_id"] == started.run_id


async def test_a_trigger_stored_while_the_hub_was_down_is_seen_at_start(tmp_path: Path) -> None:
    fl = HubFederationSettings(state_dir=tmp_path / "fl", drift_rounds=True, cooldown_s=0.0)
    settings = sqlite_settings(tmp_path, fl=fl, drift_reference_size=40, drift_window=40)
    async with running_hub(settings.model_copy(update={"fl": None})) as hub:
        trigger_id = await drift_once(hub)  # raised by a hub that runs no federated learning
    async with running_hub(settings) as hub:
        federation = federation_of(hub)
        federation.launcher = InMemoryLauncher()
        started = await federation.start_due()
        assert started is not None and started.triggers == [trigger_id]


async def test_drift_starts_no_run_unless_switched_on(hub: ApiHub) -> None:
    federation = federation_of(hub)
    federation.launcher = InMemoryLauncher()
    await drift_once(hub)
    assert not federation.schedules
    assert await federation.due() is None
    assert await federation.start_due() is None
    assert (await hub.services.drift.triggers(open_only=True)).total == 1, "the trigger waits, unconsumed"


async def test_the_running_hub_checks_for_drift_and_starts_the_run_by_itself(tmp_path: Path) -> None:
    from cloud_hub.api import create_app

    fl = HubFederationSettings(state_dir=tmp_path / "fl", drift_rounds=True, cooldown_s=0.0, check_interval_s=0.05)
    settings = sqlite_settings(
        tmp_path, fl=fl, drift_reference_size=40, drift_window=40, drift_interval_s=0.05, rollout_interval_s=60.0
    )
    app = create_app(settings, start_ingest=False, load_model=False, background=True)
    async with app.router.lifespan_context(app):
        hub = ApiHub(app=app, settings=settings)
        launcher = InMemoryLauncher()
        federation_of(hub).launcher = launcher
        start = time.time()
        await feed(hub.store, count=40, start=start, shifted=False)
        await feed(hub.store, count=40, start=start + 100, shifted=True)
        deadline = time.monotonic() + 10.0
        while not launcher.submitted:
            assert time.monotonic() < deadline, "the hub's drift check and trigger started no run"
            await asyncio.sleep(0.05)
        current = federation_of(hub).current
        assert current is not None and current.reason == "drift" and current.requested_by == CONSUMER
