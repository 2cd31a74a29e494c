"""The hub's federated routes against a real SuperLink: ``POST /api/v1/fl/runs`` submits the Flower app with
``flwr run`` to a loopback deployment (SuperLink and SuperNodes as processes), and the round it notarizes is
then read back through ``/api/v1/fl/rounds`` with each device's inclusion proof."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from cloud_hub.fl.deployment import CONNECTION, LoopbackDeployment
from cloud_hub.fl.settings import HubFederationSettings
from cloud_hub.store import Scope
from edgefleet.federation import prepare_fleet
from protocol.merkle import verify_proof
from protocol.notary import InclusionProof
from tests.unit.cloud_hub.hub import running_hub, sqlite_settings
from tests.unit.fl.conftest import BACKBONE_INT8, CLASSES, INITIAL_HEAD, synthetic_windows

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


async def test_an_operator_starts_a_run_on_the_superlink_and_reads_its_round(tmp_path: Path) -> None:
    partitions = []
    for device in range(2):
        labels = np.arange(30, dtype=np.int64) % CLASSES
        partitions.append((synthetic_windows(labels, seed=device), labels))
    fleet = prepare_fleet(tmp_path / "fleet", partitions)
    configs = [device.node_config(BACKBONE_INT8) for device in fleet.devices]
    with LoopbackDeployment(tmp_path / "deployment", configs) as deployment:
        fl = HubFederationSettings(
            state_dir=tmp_path / "state",
            connection=CONNECTION,
            flwr_home=deployment.flwr_home,
            run_config={
                "device-keys": str(fleet.device_keys),
                "initial-head": str(INITIAL_HEAD),
                "min-nodes": 2,
                "local-epochs": 2,
            },
        )
        async with running_hub(sqlite_settings(tmp_path, fl=fl)) as hub:
            async with hub.client(Scope.OPERATOR) as http:
                started = await http.post("/api/v1/fl/runs", json={"num_rounds": 1, "reason": "integration"})
                assert started.status_code == 202, started.text
                run_id = started.json()["run_id"]
                busy = await http.post("/api/v1/fl/runs")
                assert busy.status_code == 409, busy.text

                deadline = time.monotonic() + 300
                while True:
                    triggers = await http.get("/api/v1/fl/triggers")
                    assert triggers.status_code == 200, triggers.text
                    if triggers.json()["running"] is None:
                        break
                    assert time.monotonic() < deadline, deployment.logs()
                    await asyncio.sleep(2.0)
                assert deployment.status(run_id) == "finished:completed", deployment.logs()

                rounds = (await http.get("/api/v1/fl/rounds")).json()
                assert rounds["total"] == 1, deployment.logs()
                (entry,) = rounds["items"]
                assert entry["clients"] == ["dev-1", "dev-2"] and entry["leaf_count"] == 2
                assert entry["tx_hash"] is not None and entry["merkle_root"] is not None
                detail = (await http.get(f"/api/v1/fl/rounds/{entry['round_id']}")).json()
                assert detail["ledger_leaf_count"] == 2 and detail["chain"] is None, "the hub itself has no notary"

            async with hub.client(Scope.DEVICE, device="dev-1") as http:
                response = await http.get(f"/api/v1/fl/rounds/{entry['round_id']}/proof/dev-1")
                assert response.status_code == 200, response.text
                proof = InclusionProof.model_validate_json(json.dumps(response.json()["inclusion_proof"]))
                assert verify_proof(proof.leaf, proof.proof, bytes.fromhex(entry["merkle_root"]))
                assert proof.model_hash.hex() == entry["global_model_hash"]
