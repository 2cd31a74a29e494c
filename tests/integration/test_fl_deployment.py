"""Flower's deployment engine on loopback: a SuperLink and SuperNodes as processes, ``flwr run`` submitting
EdgeFleet's app, with TLS and SuperNode authentication. The insecure end-to-end loop (rounds, a better
model, live on the devices with its hash on chain) is in test_fl_loop.py."""

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
from edgefleet.federation import Fleet, dirichlet_partition, prepare_fleet

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
