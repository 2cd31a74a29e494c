"""The notary against a real EVM node process on loopback: Hardhat Network, from tools/evm-node.

The test setup installs the node from the npm registry (``npm ci`` in tools/evm-node) when its
node_modules are missing, and starts it on a free port. Without node and npm the tests are skipped
(under EDGEFLEET_REQUIRE_SERVICES=1, they fail).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_hub.notary.chain import Web3Notary, open_notary
from cloud_hub.notary.errors import (
    ModelAlreadyAnchoredError,
    NotaryTimeoutError,
    NotAuthorizedError,
    RoundAlreadyCommittedError,
)
from cloud_hub.notary.gas import gas_per_round
from cloud_hub.notary.ledger import JsonLinesRoundLedger
from cloud_hub.notary.service import notarize_round
from cloud_hub.notary.settings import ChainSettings
from edge_agent.chain import ChainReader, NotarizationError
from tests.services import EVM_OTHER_KEY, EVM_OWNER_KEY, running_evm_node
from tests.unit.cloud_hub.notary.support import digest, records

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
OWNER_KEY, OTHER_KEY = EVM_OWNER_KEY, EVM_OTHER_KEY


@pytest.fixture(scope="module")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_evm_node(tmp_path_factory.mktemp("evm-node")) as url:
        yield url


def _rpc(url: str, method: str, params: list[object]) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["result"]


def edgefleet(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import sys; from edgefleet.cli import app; sys.argv[0] = 'edgefleet'; app()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200", **env},
        check=False,
        timeout=180,
    )


@pytest.fixture(scope="module")
def deployed(node_url: str) -> str:
    """The notary deployed by `edgefleet chain deploy`, signed with the owner's private key."""
    result = edgefleet(
        "chain", "deploy", env={"EDGEFLEET_CHAIN_URL": node_url, "EDGEFLEET_CHAIN_PRIVATE_KEY": OWNER_KEY}
    )
    assert result.returncode == 0, result.stderr
    address = result.stdout.split("notary deployed at ")[1].split()[0]
    assert address.startswith("0x") and len(address) == 42
    return address


def _notary(node_url: str, address: str, key: str = OWNER_KEY, **options: object) -> Web3Notary:
    return open_notary(ChainSettings(url=node_url, contract_address=address, private_key=key, **options))  # type: ignore[arg-type]


def test_a_round_notarized_on_the_node_is_verified_by_devices_and_the_cli(
    node_url: str, deployed: str, tmp_path: Path
) -> None:
    notary = _notary(node_url, deployed)
    ledger = JsonLinesRoundLedger(tmp_path / "notary")
    notarized = notarize_round(notary, ledger, 1, records(10), digest("global model 1"))
    assert notarized.receipt is not None and notarized.receipt.gas_used > 0

    reader = ChainReader(node_url, deployed)
    for proof in notarized.proofs.values():
        assert reader.verify_inclusion(proof).root == notarized.root
        assert reader.contract_verifies(proof)
    forged = notarized.proofs["dev-003"].model_copy(update={"model_hash": digest("another model")})
    with pytest.raises(NotarizationError):
        reader.verify_inclusion(forged)

    notary.anchor_model("plaid-edge-int8@1", digest("artifact"))
    reader.verify_model("plaid-edge-int8@1", digest("artifact"))

    env = {
        "EDGEFLEET_CHAIN_URL": node_url,
        "EDGEFLEET_CHAIN_CONTRACT_ADDRESS": deployed,
        "EDGEFLEET_CHAIN_LEDGER_DIR": str(ledger.directory),
    }
    result = edgefleet("chain", "verify", "1", env=env)
    assert result.returncode == 0, result.stderr
    path = ledger.path(1)
    lines = path.read_text().splitlines()
    leaf = json.loads(lines[5])
    leaf["device_id"] = "dev-999"
    path.write_text("\n".join([*lines[:5], json.dumps(leaf), *lines[6:]]) + "\n")
    result = edgefleet("chain", "verify", "1", env=env)
    assert result.returncode == 1
    assert "differs from the chain's" in result.stderr
    status = edgefleet("chain", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert "chain id 31337" in status.stdout


def test_the_node_refuses_what_the_contract_refuses(node_url: str, deployed: str) -> None:
    owner, other = _notary(node_url, deployed), _notary(node_url, deployed, key=OTHER_KEY)
    owner.commit_round(2, digest("root 2"), 3, digest("model 2"))
    with pytest.raises(RoundAlreadyCommittedError):
        owner.commit_round(2, digest("another root"), 3, digest("model 2"))
    with pytest.raises(NotAuthorizedError):
        other.commit_round(3, digest("root 3"), 3, digest("model 3"))
    owner.anchor_model("digits@1", digest("weights"))
    with pytest.raises(ModelAlreadyAnchoredError):
        owner.anchor_model("digits@1", digest("other weights"))
    owner.allow_notary(other.sender_address)
    other.commit_round(3, digest("root 3"), 3, digest("model 3"))
    assert owner.get_round(3) is not None


def test_a_commit_waits_for_its_confirmations(node_url: str, deployed: str) -> None:
    notary = _notary(node_url, deployed, confirmations=2, poll_interval_s=0.05)
    done = threading.Event()
    outcome: list[object] = []

    def commit() -> None:
        outcome.append(notary.commit_round(4, digest("root 4"), 2, digest("model 4")))
        done.set()

    worker = threading.Thread(target=commit)
    worker.start()
    deadline = time.monotonic() + 30
    while notary.get_round(4) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert notary.get_round(4) is not None  # mined (Hardhat mines each transaction at once) ...
    assert not done.wait(0.5)  # ... but not yet confirmed
    _rpc(node_url, "evm_mine", [])
    assert not done.wait(0.5)
    _rpc(node_url, "evm_mine", [])
    assert done.wait(10)
    worker.join()
    receipt = outcome[0]
    assert int(str(_rpc(node_url, "eth_blockNumber", [])), 16) == receipt.block_number + 2  # type: ignore[attr-defined]

    impatient = _notary(node_url, deployed, confirmations=1, timeout_s=0.5, poll_interval_s=0.05)
    with pytest.raises(NotaryTimeoutError, match="confirmations"):
        impatient.commit_round(5, digest("root 5"), 2, digest("model 5"))


def test_gas_per_round_on_the_node_matches_the_in_process_chain(node_url: str, deployed: str) -> None:
    notary = _notary(node_url, deployed)
    on_node = gas_per_round((2, 10, 100), notary=notary, first_round=100)
    in_process = gas_per_round((2, 10, 100))
    assert len({figure.execution_gas for figure in on_node}) == 1
    assert {figure.execution_gas for figure in on_node} == {figure.execution_gas for figure in in_process}
