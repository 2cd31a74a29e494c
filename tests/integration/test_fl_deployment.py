"""Flower's deployment engine on loopback: a SuperLink and SuperNodes as processes, ``flwr run`` submitting
EdgeFleet's app; once insecure (the end-to-end loop), once with TLS and SuperNode authentication."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from cloud_hub.fl.deployment import LoopbackDeployment, descendant_pids, free_port, generate_node_key, generate_tls
from cloud_hub.fl.global_model import model_accuracy
from edge_agent.fl.dataset import LocalDataset
from edgefleet.federation import Fleet, dirichlet_partition, prepare_fleet, write_key_pair
from protocol.manifest import ModelManifest
from protocol.merkle import MerkleTree, leaf_hash
from protocol.signing import verify

pytest.importorskip("sktime", reason="PLAID comes with sktime (the sim or train extra)")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

COMMITTED = Path(__file__).resolve().parents[2] / "models" / "quantized"
BACKBONE_INT8 = COMMITTED / "federated_plaid_backbone_int8.onnx"


def plaid_fleet(directory: Path, devices: int) -> tuple[Fleet, Path, float]:
    """Devices with non-IID PLAID training windows; the test split kept by the hub; the starting head's score."""
    from models.federated import preprocessed_plaid

    data, train, test = preprocessed_plaid()
    parts = dirichlet_partition(data.train_labels, devices, alpha=0.5, seed=1)
    fleet = prepare_fleet(directory, [(train[p], data.train_labels[p]) for p in parts])
    holdout = directory / "holdout.npz"
    np.savez(holdout, windows=test, labels=data.test_labels)
    description = json.loads((COMMITTED / "federated_plaid.json").read_text())
    return fleet, holdout, float(description["test_accuracy"]["initial_head_on_int8_backbone"])


def base_run_config(fleet: Fleet, state: Path, **overrides: object) -> dict[str, object]:
    return {
        "device-keys": str(fleet.device_keys),
        "initial-head": str(COMMITTED / "federated_plaid_head_initial.npz"),
        "state-dir": str(state),
        "min-nodes": len(fleet.devices),
        **overrides,
    }


def test_three_devices_three_rounds_a_better_signed_model(tmp_path: Path) -> None:
    fleet, holdout, initial_accuracy = plaid_fleet(tmp_path / "fleet", 3)
    signing = tmp_path / "model-signing.key"
    key = write_key_pair(signing, tmp_path / "model-signing.pub")
    state = tmp_path / "state"
    configs = [device.node_config(BACKBONE_INT8) for device in fleet.devices]
    with LoopbackDeployment(tmp_path / "deployment", configs) as deployment:
        pids = {process.popen.pid for process in deployment.processes}
        status = deployment.run(
            base_run_config(
                fleet,
                state,
                **{
                    "num-rounds": 3,
                    "strategy": "fedmedian",
                    "chain": "evm",  # the notary contract, on an EVM inside the ServerApp
                    "backbone-int8": str(BACKBONE_INT8),
                    "holdout": str(holdout),
                    "backbone-fp32": str(COMMITTED / "federated_plaid_backbone_fp32.onnx"),
                    "calibration": str(COMMITTED / "federated_plaid_calibration.npy"),
                    "task-description": str(COMMITTED / "federated_plaid.json"),
                    "model-signing-key": str(signing),
                },
            ),
            timeout=600,
        )
        children = set().union(*(descendant_pids(pid) for pid in pids))
        assert status == "finished:completed", deployment.logs()
    for pid in pids | children:  # nothing the deployment started outlives it
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]

    run = json.loads((state / "run.json").read_text())
    rounds = [json.loads(line) for line in (state / "rounds.jsonl").read_text().splitlines()]
    assert [entry["round_id"] for entry in rounds] == [1, 2, 3]
    assert all(entry["devices"] == ["dev-1", "dev-2", "dev-3"] and not entry["rejected"] for entry in rounds)
    assert all(entry["gas_used"] > 21_000 and entry["tx_hash"].startswith("0x") for entry in rounds)
    accuracy = {int(r): m["holdout-accuracy"] for r, m in run["server_metrics"].items()}
    assert accuracy[0] == pytest.approx(initial_accuracy, abs=1e-6)
    assert accuracy[3] > accuracy[0] + 0.03

    # Every device holds a verified inclusion proof for every round, and it leads to the journaled root.
    for device in fleet.devices:
        with LocalDataset(device.dataset) as dataset:
            for entry in rounds:
                record = dataset.round(entry["round_id"])
                assert record is not None and record.verified and record.root is not None
                assert record.root.hex() == entry["root"]
                leaf = leaf_hash(entry["round_id"], device.device_id, record.digest, record.signature)
                assert MerkleTree([bytes.fromhex(x) for x in entry["leaves"]]).root == record.root
                assert leaf.hex() in entry["leaves"]

    # The next edge model: int8, signed, registered, and better on the held-out split than the first head.
    model = run["model"]
    assert model["signed"] and model["version"] == "fl-1-3" and model["anchor_tx"].startswith("0x")
    registered = state / "registry" / "federated_plaid_edge_int8" / "fl-1-3"
    manifest = ModelManifest.model_validate_json((registered / "federated_plaid_edge_int8.manifest.json").read_text())
    verify(manifest, [key.public_key()])
    with np.load(holdout) as data:
        assert model_accuracy(registered / manifest.artifact, data["windows"], data["labels"]) > initial_accuracy + 0.02


def https_status(url: str, context: ssl.SSLContext) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_tls_and_supernode_authentication(tmp_path: Path) -> None:
    fleet, _, _ = plaid_fleet(tmp_path / "fleet", 2)
    tls = generate_tls(tmp_path / "tls")
    configs = [device.node_config(BACKBONE_INT8) for device in fleet.devices]
    with LoopbackDeployment(tmp_path / "deployment", configs, tls=tls, node_auth=True) as deployment:
        registered = deployment.node_ids()
        assert len(registered) == 2
        # Plain HTTP gets no answer; HTTPS trusting the generated CA does.
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            urllib.request.urlopen(f"http://{deployment.address}/", timeout=5)
        context = ssl.create_default_context(cafile=str(tls.ca_certificate))
        assert 100 <= https_status(f"https://{deployment.address}/", context) < 600  # an HTTP answer: TLS worked
        # A SuperNode whose key was never registered is not admitted.
        generate_node_key(tmp_path / "stranger.key", tmp_path / "stranger.pub")
        log = tmp_path / "stranger.log"
        with log.open("wb") as output:
            stranger = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "flower-supernode"),
                    "--superlink",
                    deployment.address,
                    "--root-certificates",
                    str(tls.ca_certificate),
                    "--auth-supernode-private-key",
                    str(tmp_path / "stranger.key"),
                    "--port",
                    str(free_port()),
                    "--max-retries",
                    "2",
                ],
                env=deployment.environment(),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            children = descendant_pids(stranger.pid)
            try:
                assert stranger.wait(timeout=120) != 0
            finally:
                for pid in children | descendant_pids(stranger.pid) | {stranger.pid}:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                stranger.wait()
        assert "Failed to activate SuperNode" in log.read_text(errors="replace")
        assert deployment.node_ids() == registered
        status = deployment.run(base_run_config(fleet, tmp_path / "state", **{"num-rounds": 1}), timeout=600)
        assert status == "finished:completed", deployment.logs()
    (entry,) = [json.loads(line) for line in (tmp_path / "state" / "rounds.jsonl").read_text().splitlines()]
    assert entry["devices"] == ["dev-1", "dev-2"]


def test_a_deployment_refuses_node_authentication_without_tls(tmp_path: Path) -> None:
    from cloud_hub.fl.errors import DeploymentError

    with pytest.raises(DeploymentError, match="needs TLS"):
        LoopbackDeployment(tmp_path, [], node_auth=True)
