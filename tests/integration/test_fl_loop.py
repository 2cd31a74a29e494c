"""The loop closes: federated rounds on the fleet produce a better model that goes live on the devices.

Everything is real and on loopback: a Hardhat EVM node with the notary contract, the hub (SQLite) anchoring
models on that contract, Flower's deployment engine (SuperLink and SuperNodes as processes) running three
rounds over three devices with non-IID PLAID data, notarized on the same contract, the next int8 model
registered with the hub, rolled out to the devices' group at 100 %, and three edge agents that fetch it,
check its signature and its on-chain hash, and swap it in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from cloud_hub.fl.deployment import LoopbackDeployment, descendant_pids
from cloud_hub.fl.evaluation import read_task_description
from cloud_hub.fl.global_model import build_global_model
from cloud_hub.notary import ChainSettings
from cloud_hub.notary.chain import open_notary
from cloud_hub.server import HubServer
from cloud_hub.settings import HubSettings
from edge_agent.agent import EdgeAgent
from edge_agent.chain import ChainReader
from edge_agent.fl.dataset import LocalDataset
from edge_agent.model import load_model
from edge_agent.settings import AgentSettings, UpdateSettings
from edge_agent.transport import mqtt_connector
from edgefleet.federation import write_key_pair
from protocol import BrokerSettings
from protocol.notary import InclusionProof, LeafRecord, model_anchor_id
from protocol.signing import public_key_of
from tests.integration.test_fl_deployment import BACKBONE_INT8, COMMITTED, base_run_config, plaid_fleet
from tests.services import EVM_OWNER_KEY, Mosquitto, running_evm_node, until

pytest.importorskip("sktime", reason="PLAID comes with sktime (the sim or train extra)")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

GROUP = "fl-fleet"
SITE = "lab-1"


@pytest.fixture
def evm_node(tmp_path: Path) -> Iterator[str]:
    with running_evm_node(tmp_path) as url:
        yield url


async def test_rounds_on_the_fleet_give_a_better_model_that_goes_live_with_its_hash_on_chain(
    mosquitto: Mosquitto, evm_node: str, tmp_path: Path
) -> None:
    fleet, holdout, initial_accuracy = plaid_fleet(tmp_path / "fleet", 3)
    signing = tmp_path / "model-signing.key"
    key = write_key_pair(signing, tmp_path / "model-signing.pub")
    key_file = tmp_path / "notary.key"
    key_file.write_text(EVM_OWNER_KEY + "\n")
    notary = open_notary(
        ChainSettings(url=evm_node, private_key_file=key_file, ledger_dir=tmp_path / "ledger"), deploy=True
    )
    contract = notary.address

    # The devices start on the first head (round 0) over the frozen int8 backbone, signed by the fleet's key.
    description = read_task_description(COMMITTED / "federated_plaid.json")
    with np.load(COMMITTED / "federated_plaid_head_initial.npz") as head:
        initial = build_global_model(
            backbone_fp32=COMMITTED / "federated_plaid_backbone_fp32.onnx",
            weight=head["weight"],
            bias=head["bias"],
            calibration=np.load(COMMITTED / "federated_plaid_calibration.npy"),
            description=dataclasses.replace(description, version="fl-0"),
            output_dir=tmp_path / "initial",
            signing_key=key,
        )

    broker = BrokerSettings(host=mosquitto.host, port=mosquitto.port)
    admin = "efh_" + secrets.token_urlsafe(32)
    hub_settings = HubSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        port=0,
        broker=broker,
        model_manifest=COMMITTED / "italy_power_cloud_fp32.manifest.json",
        admin_token=admin,
        trusted_model_keys=[tmp_path / "model-signing.pub"],
        chain=ChainSettings(url=evm_node, contract_address=contract, private_key_file=key_file),
        rollout_interval_s=3600,
    )
    async with (
        HubServer(hub_settings) as hub,
        httpx.AsyncClient(base_url=hub.base_url, headers={"Authorization": f"Bearer {admin}"}) as operator,
    ):
        agents: list[EdgeAgent] = []
        for device in fleet.devices:
            answer = await operator.post(
                "/api/v1/devices", json={"device_id": device.device_id, "site": SITE, "device_group": GROUP}
            )
            assert answer.status_code in (200, 201), answer.text
            token = (
                await operator.post("/api/v1/tokens", json={"scope": "device", "device_id": device.device_id})
            ).json()["token"]
            home = tmp_path / device.device_id
            home.mkdir()
            (home / "device.token").write_text(token + "\n")
            settings = AgentSettings(
                site=SITE,
                devices=[device.device_id],
                broker=broker,
                client_id=f"agent-{device.device_id}",
                outbox_path=home / "outbox.db",
                trusted_model_keys=[tmp_path / "model-signing.pub"],
                model_manifest=initial.manifest_path,
                updates=UpdateSettings(
                    hub_url=hub.base_url, token_file=home / "device.token", model_dir=home / "models", backoff_s=0.2
                ),
            )
            model = load_model(settings.model_manifest, trusted_keys=[public_key_of(key)])
            connect = mqtt_connector(broker, client_id=f"agent-{device.device_id}")
            agents.append(EdgeAgent(settings, model=model, connect=connect))

        token_file = tmp_path / "fl-hub.token"
        token_file.write_text(admin + "\n")
        for agent in agents:
            await agent.__aenter__()
        try:
            for agent in agents:
                await asyncio.wait_for(agent.connected.wait(), 10)
            assert {agent.model.manifest.version for agent in agents} == {"fl-0"}

            # Three notarized rounds on the deployment engine; the next model goes to the hub's registry.
            configs = [device.node_config(BACKBONE_INT8) for device in fleet.devices]
            state = tmp_path / "state"
            run_config = base_run_config(
                fleet,
                state,
                **{
                    "num-rounds": 3,
                    "strategy": "fedgeomedian",
                    "chain": "evm",
                    "chain-url": evm_node,
                    "chain-contract": contract,
                    "chain-key-file": str(key_file),
                    "backbone-int8": str(BACKBONE_INT8),
                    "holdout": str(holdout),
                    "backbone-fp32": str(COMMITTED / "federated_plaid_backbone_fp32.onnx"),
                    "calibration": str(COMMITTED / "federated_plaid_calibration.npy"),
                    "task-description": str(COMMITTED / "federated_plaid.json"),
                    "model-signing-key": str(signing),
                    "hub-url": hub.base_url,
                    "hub-token-file": str(token_file),
                },
            )

            def federate() -> None:
                with LoopbackDeployment(tmp_path / "deployment", configs) as deployment:
                    pids = {process.popen.pid for process in deployment.processes}
                    status = deployment.run(run_config, timeout=600)
                    assert status == "finished:completed", deployment.logs()
                    pids |= set().union(*(descendant_pids(pid) for pid in pids))
                for pid in pids:  # nothing the deployment started outlives it
                    stat = Path(f"/proc/{pid}/stat")
                    assert not stat.exists() or "Z" in stat.read_text().rsplit(")", 1)[1][:3]

            await asyncio.to_thread(federate)
            run = json.loads((state / "run.json").read_text())
            accuracy = {int(r): m["holdout-accuracy"] for r, m in run["server_metrics"].items()}
            assert accuracy[3] > accuracy[0] + 0.03 and accuracy[0] == pytest.approx(initial_accuracy, abs=1e-6)
            version = run["model"]["version"]

            # Every round's root is on the contract, as journaled.
            rounds = [json.loads(line) for line in (state / "rounds.jsonl").read_text().splitlines()]
            assert len(rounds) == 3
            for entry in rounds:
                record = notary.get_round(entry["round_id"])
                assert record is not None and record.root.hex() == entry["root"] and record.leaf_count == 3

            # Every device checks its inclusion proof of every round against the chain itself (no web3).
            reader = ChainReader(evm_node, contract)
            for device in fleet.devices:
                with LocalDataset(device.dataset) as dataset:
                    for entry in rounds:
                        receipt = dataset.round(entry["round_id"])
                        assert receipt is not None and receipt.proof is not None and receipt.model_hash is not None
                        proof = InclusionProof(
                            round_id=entry["round_id"],
                            record=LeafRecord(
                                device_id=device.device_id, update_digest=receipt.digest, signature=receipt.signature
                            ),
                            proof=receipt.proof,
                            model_hash=receipt.model_hash,
                        )
                        assert reader.verify_inclusion(proof).root.hex() == entry["root"]
                        assert reader.contract_verifies(proof)

            # The hub registered and anchored the model on the same contract; a rollout takes it to the group.
            listed = await operator.get(f"/api/v1/models/{description.name}/{version}")
            assert listed.status_code == 200, listed.text
            sha256 = listed.json()["manifest"]["sha256"]
            assert notary.model_anchor(model_anchor_id(description.name, version)) == bytes.fromhex(sha256)
            created = await operator.post(
                "/api/v1/rollouts",
                json={
                    "model_name": description.name,
                    "model_version": version,
                    "device_group": GROUP,
                    "canary_percent": 100,
                },
            )
            assert created.status_code == 201, created.text
            await until(
                lambda: all(a.model.manifest.version == version for a in agents), 120, "the new model live", poll_s=0.1
            )
            for agent in agents:
                assert agent.model.manifest.sha256 == sha256
                assert agent.updater is not None and agent.updater.fetcher.anchor_checks == 1
        finally:
            for agent in reversed(agents):
                await agent.__aexit__(None, None, None)
