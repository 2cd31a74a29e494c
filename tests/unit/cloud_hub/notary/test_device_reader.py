"""A device checks its inclusion and a model's anchor over JSON-RPC, without web3.

The in-process chain's reads are served on loopback by ChainReadServer; the device side is
edge_agent.chain.ChainReader (standard library only).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from cloud_hub.notary.chain import Web3Notary
from cloud_hub.notary.ledger import InMemoryRoundLedger
from cloud_hub.notary.rpc import ChainReadServer
from cloud_hub.notary.service import notarize_round
from edge_agent.chain import ChainReader, ChainReadError, NotarizationError
from protocol.merkle import ProofStep
from tests.services import free_port
from tests.unit.cloud_hub.notary.support import digest, records


@pytest.fixture
def served(chain_notary: Web3Notary) -> Iterator[tuple[Web3Notary, ChainReader]]:
    with ChainReadServer(chain_notary) as server:
        yield chain_notary, ChainReader(server.url, chain_notary.address.lower(), timeout_s=5)


def test_every_device_verifies_its_proof_against_the_chain(served: tuple[Web3Notary, ChainReader]) -> None:
    notary, reader = served
    notarized = notarize_round(notary, InMemoryRoundLedger(), 21, records(10), digest("model 21"))
    for proof in notarized.proofs.values():
        committed = reader.verify_inclusion(proof)
        assert committed.root == notarized.root and committed.leaf_count == 10
        assert reader.contract_verifies(proof)


async def test_the_async_checks_run_off_the_event_loop(served: tuple[Web3Notary, ChainReader]) -> None:
    notary, reader = served
    notarized = notarize_round(notary, InMemoryRoundLedger(), 2, records(3), digest("model 2"))
    committed = await reader.check_inclusion(notarized.proofs["dev-001"])
    assert committed.round_id == 2
    notary.anchor_model("digits-edge-int8@2", digest("artifact"))
    await reader.check_model("digits-edge-int8@2", digest("artifact"))
    with pytest.raises(NotarizationError):
        await reader.check_model("digits-edge-int8@2", digest("another artifact"))


def test_a_forged_proof_or_another_model_is_refused(served: tuple[Web3Notary, ChainReader]) -> None:
    notary, reader = served
    notarized = notarize_round(notary, InMemoryRoundLedger(), 5, records(4), digest("model 5"))
    genuine = notarized.proofs["dev-002"]

    forged_update = genuine.model_copy(
        update={"record": genuine.record.model_copy(update={"update_digest": digest("poisoned")})}
    )
    with pytest.raises(NotarizationError, match="does not lead"):
        reader.verify_inclusion(forged_update)
    assert not reader.contract_verifies(forged_update)

    flipped = [ProofStep(step.sibling, "left" if step.side == "right" else "right") for step in genuine.proof]
    with pytest.raises(NotarizationError):
        reader.verify_inclusion(genuine.model_copy(update={"proof": flipped}))

    with pytest.raises(NotarizationError, match="model hash"):
        reader.verify_inclusion(genuine.model_copy(update={"model_hash": digest("a model never notarized")}))

    with pytest.raises(NotarizationError, match="not committed"):
        reader.verify_inclusion(genuine.model_copy(update={"round_id": 6}))

    assert reader.model_anchor("plaid@9") is None
    with pytest.raises(NotarizationError, match="not anchored"):
        reader.verify_model("plaid@9", digest("weights"))


def test_an_unreachable_or_wrong_endpoint_is_a_read_error(served: tuple[Web3Notary, ChainReader]) -> None:
    notary, reader = served
    with pytest.raises(ChainReadError, match="cannot reach"):
        ChainReader(f"http://127.0.0.1:{free_port()}", notary.address, timeout_s=2).get_round(1)
    # An address without the contract answers with empty data, which does not decode.
    empty = ChainReader(reader.url, "0x" + "11" * 20, timeout_s=5)
    with pytest.raises(ChainReadError, match="expected 5 ABI words"):
        empty.get_round(1)
    with pytest.raises(ValueError, match="JSON-RPC endpoint"):
        ChainReader("ws://127.0.0.1:1", notary.address)


def test_the_read_server_sends_no_transactions_and_answers_bad_requests(
    served: tuple[Web3Notary, ChainReader],
) -> None:
    _notary, reader = served
    with pytest.raises(ChainReadError, match="not served"):
        reader.request("eth_sendTransaction", [{"from": "0x" + "00" * 20}])
    with pytest.raises(ChainReadError, match="not an address"):
        reader.request("eth_call", [{"to": "nowhere", "data": "0x"}, "latest"])
    assert reader.request("eth_accounts", []) == []
    assert int(reader.request("eth_blockNumber", []), 16) >= 1
    request = urllib.request.Request(reader.url, data=b"{not json", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=5)
    assert raised.value.code == 400
    assert json.loads(raised.value.read())["error"]["code"] == -32700


def test_the_device_reader_imports_no_chain_client() -> None:
    code = (
        "import sys, edge_agent.chain;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('web3', 'eth_account', 'eth_abi', 'eth_tester', "
        "'eth_utils', 'vyper', 'cloud_hub', 'requests')];"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"imported: {result.stdout.strip()} {result.stderr[-500:]}"
