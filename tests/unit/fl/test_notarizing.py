from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord

from cloud_hub.fl.coordinator import load_head, run_federated
from cloud_hub.fl.devices import DeviceKeyDirectory
from cloud_hub.fl.grid import InProcessGrid
from cloud_hub.fl.notarizing import NotarizingStrategy, arrays_digest
from cloud_hub.fl.settings import RunSettings
from cloud_hub.fl.strategies import STRATEGIES, build_strategy
from cloud_hub.notary import InMemoryNotary, InMemoryRoundLedger
from edge_agent.fl.dataset import LocalDataset
from edge_agent.fl.embedding import OnnxEmbedder
from edgefleet.federation import Fleet, in_process_nodes
from protocol.merkle import MerkleTree, leaf_hash
from protocol.updates import RecordNames as R
from tests.unit.fl.conftest import BACKBONE_INT8, CLASSES, INITIAL_HEAD

Handler = Callable[[Message], Message]


def one_round(
    fleet: Fleet, nodes: dict[int, Handler], strategy: str = "fedavg", *, rounds: int = 1
) -> tuple[NotarizingStrategy, InMemoryNotary, InMemoryRoundLedger]:
    notary, ledger = InMemoryNotary(), InMemoryRoundLedger()
    wrapper = NotarizingStrategy(
        build_strategy(strategy, min_nodes=len(nodes)),  # type: ignore[arg-type]
        notary=notary,
        ledger=ledger,
        device_keys=DeviceKeyDirectory(fleet.device_keys),
        first_round_id=10,
    )
    wrapper.start(
        InProcessGrid(nodes), load_head(INITIAL_HEAD), num_rounds=rounds, train_config=ConfigRecord({"epochs": 2})
    )
    return wrapper, notary, ledger


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_commits_one_root_over_the_devices_signed_updates(fleet: Fleet, strategy: str) -> None:
    wrapper, notary, ledger = one_round(fleet, in_process_nodes(fleet, BACKBONE_INT8), strategy)
    (notarized,) = wrapper.history
    assert notarized.round_id == 10 and not notarized.rejected
    commitment = notary.get_round(10)
    assert commitment is not None and commitment.leaf_count == 3
    # Each device's own record of what it signed gives back the committed root.
    leaves = []
    for device in fleet.devices:
        with LocalDataset(device.dataset) as dataset:
            record = dataset.round(10)
        assert record is not None
        leaves.append(leaf_hash(10, device.device_id, record.digest, record.signature))
    assert MerkleTree(leaves).root == commitment.root
    stored = ledger.stored(10)
    assert stored is not None and sorted(record.leaf(10) for record in stored.leaves) == sorted(leaves)
    # The model hash names the arrays the strategy returned (robust strategies empty the replies on the way).
    assert commitment.model_hash == stored.model_hash == notarized.model_hash


def test_devices_receive_and_verify_their_proofs(fleet: Fleet) -> None:
    one_round(fleet, in_process_nodes(fleet, BACKBONE_INT8))
    for device in fleet.devices:
        with LocalDataset(device.dataset) as dataset:
            record = dataset.round(10)
        assert record is not None and record.verified and record.proof is not None


def _tamper(handler: Handler, change: Callable[[Message], None]) -> Handler:
    def tampered(message: Message) -> Message:
        reply = handler(message)
        if message.metadata.message_type == "train":
            change(reply)
        return reply

    return tampered


def _swap_arrays(reply: Message) -> None:
    arrays = reply.content[R.ARRAYS]
    assert isinstance(arrays, ArrayRecord)
    reply.content[R.ARRAYS] = ArrayRecord({name: Array(array.numpy() * 2) for name, array in arrays.items()})


def _claim_other_device(reply: Message) -> None:
    claim = reply.content[R.UPDATE]
    assert isinstance(claim, ConfigRecord)
    claim[R.DEVICE_ID] = "dev-2"


def _unknown_device(reply: Message) -> None:
    claim = reply.content[R.UPDATE]
    assert isinstance(claim, ConfigRecord)
    claim[R.DEVICE_ID] = "intruder"


def _drop_claim(reply: Message) -> None:
    del reply.content[R.UPDATE]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_swap_arrays, "digest differs"),
        (_claim_other_device, "does not verify"),
        (_unknown_device, "unknown device"),
        (_drop_claim, "no update record"),
    ],
)
def test_an_update_that_fails_its_checks_is_left_out(
    fleet: Fleet, change: Callable[[Message], None], reason: str
) -> None:
    nodes = in_process_nodes(fleet, BACKBONE_INT8)
    nodes[1] = _tamper(nodes[1], change)  # type: ignore[arg-type]
    wrapper, notary, _ = one_round(fleet, nodes)  # type: ignore[arg-type]
    (notarized,) = wrapper.history
    assert sorted(update.node_id for update in notarized.accepted) == [2, 3]
    (rejected,) = notarized.rejected
    assert rejected.node_id == 1 and reason in rejected.reason
    commitment = notary.get_round(10)
    assert commitment is not None and commitment.leaf_count == 2


def test_a_signature_from_an_earlier_round_is_refused(fleet: Fleet) -> None:
    nodes = in_process_nodes(fleet, BACKBONE_INT8)
    honest = nodes[1]
    first: dict[str, object] = {}

    def replay(message: Message) -> Message:
        reply = honest(message)
        assert isinstance(reply, Message)
        if message.metadata.message_type == "train":
            if not first:
                first["reply"] = reply
            else:  # round 11: the round-10 update, its digest and signature sent again
                old = first["reply"]
                assert isinstance(old, Message)
                claim = old.content[R.UPDATE]
                assert isinstance(claim, ConfigRecord)
                claim[R.ROUND_ID] = 11
                reply.content = old.content
        return reply

    nodes[1] = replay  # type: ignore[assignment]
    wrapper, _, _ = one_round(fleet, nodes, rounds=2)  # type: ignore[arg-type]
    assert not wrapper.history[0].rejected
    (rejected,) = wrapper.history[1].rejected
    assert "does not verify" in rejected.reason


def test_the_coordinator_journals_rounds_and_continues_round_ids(fleet: Fleet, tmp_path: Path) -> None:
    settings = RunSettings.from_run_config(
        {
            "num-rounds": 2,
            "min-nodes": 3,
            "local-epochs": 2,
            "device-keys": str(fleet.device_keys),
            "initial-head": str(INITIAL_HEAD),
            "state-dir": str(tmp_path / "state"),
            "backbone-fp32": "",
        }
    )
    nodes = in_process_nodes(fleet, BACKBONE_INT8)
    notary = InMemoryNotary()

    def run() -> None:
        run_federated(
            InProcessGrid(nodes),  # type: ignore[arg-type]
            settings,
            notary=notary,
            ledger=InMemoryRoundLedger(),
            device_keys=DeviceKeyDirectory(fleet.device_keys),
            evaluate_fn=lambda server_round, arrays: MetricRecord({"hash-bytes": len(arrays_digest(arrays))}),
        )

    run()
    run()
    assert all(notary.get_round(round_id) is not None for round_id in (1, 2, 3, 4))
    journal = [json.loads(line) for line in (tmp_path / "state" / "rounds.jsonl").read_text().splitlines()]
    assert [entry["round_id"] for entry in journal] == [1, 2, 3, 4]
    assert journal[0]["devices"] == ["dev-1", "dev-2", "dev-3"]
    state = json.loads((tmp_path / "state" / "run.json").read_text())
    assert state["status"] == "finished" and state["first_round_id"] == 3 and state["last_round_id"] == 4
    with np.load(state["final_head"]) as head, np.load(INITIAL_HEAD) as initial:
        assert head["weight"].shape == initial["weight"].shape == (CLASSES, OnnxEmbedder(BACKBONE_INT8).features)


def test_run_settings_refuse_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    from cloud_hub.fl.errors import SettingsError

    base = {"device-keys": str(tmp_path), "initial-head": str(INITIAL_HEAD), "state-dir": str(tmp_path)}
    with pytest.raises(SettingsError, match="strategy"):
        RunSettings.from_run_config({**base, "strategy": "fedsomething"})
    with pytest.raises(SettingsError, match="num-roundz"):
        RunSettings.from_run_config({**base, "num-roundz": 3})
    assert RunSettings.from_run_config({**base, "backbone-fp32": ""}).backbone_fp32 is None


def test_a_round_on_the_notary_contract_of_an_in_process_evm(fleet: Fleet) -> None:
    pytest.importorskip("web3", reason="the chain extra")
    from cloud_hub.notary.chain import Web3Notary

    notary, ledger = Web3Notary.in_process(), InMemoryRoundLedger()
    wrapper = NotarizingStrategy(
        build_strategy("fedmedian", min_nodes=3),
        notary=notary,
        ledger=ledger,
        device_keys=DeviceKeyDirectory(fleet.device_keys),
        first_round_id=1,
    )
    wrapper.start(InProcessGrid(in_process_nodes(fleet, BACKBONE_INT8)), load_head(INITIAL_HEAD), num_rounds=1)
    (notarized,) = wrapper.history
    assert notarized.receipt.gas_used > 21_000
    on_chain = notary.get_round(1)
    assert on_chain is not None and on_chain.root == notarized.root and on_chain.leaf_count == 3
    for device in fleet.devices:  # the contract itself accepts each device's proof
        with LocalDataset(device.dataset) as dataset:
            record = dataset.round(1)
        assert record is not None and record.verified and record.proof is not None
        leaf = leaf_hash(1, device.device_id, record.digest, record.signature)
        assert notary.verify_inclusion(1, leaf, record.proof)
    # A device checks its proof against the chain over JSON-RPC, without web3.
    from cloud_hub.notary.rpc import ChainReadServer
    from edge_agent.chain import ChainReader
    from edge_agent.fl.client import FederatedClient
    from edge_agent.fl.client_app import load_device_key
    from edge_agent.fl.embedding import FixedEmbedder

    device = fleet.devices[0]
    with LocalDataset(device.dataset) as dataset, ChainReadServer(notary) as server:
        client = FederatedClient(
            device_id=device.device_id,
            key=load_device_key(device.key),
            dataset=dataset,
            embedder=FixedEmbedder(512, 16),
        )
        committed = ChainReader(server.url, notary.address).verify_inclusion(client.inclusion_proof(1))
    assert committed.model_hash == notarized.model_hash


def test_a_run_builds_registers_and_anchors_the_next_model(fleet: Fleet, tmp_path: Path) -> None:
    from cloud_hub.fl.evaluation import read_task_description
    from cloud_hub.fl.registry import InMemoryModelRegistry
    from edgefleet.federation import write_key_pair
    from protocol.notary import model_anchor_id
    from tests.unit.fl.conftest import BACKBONE_FP32, CALIBRATION, DESCRIPTION

    write_key_pair(tmp_path / "signing.key", tmp_path / "signing.pub")
    settings = RunSettings.from_run_config(
        {
            "num-rounds": 1,
            "min-nodes": 3,
            "device-keys": str(fleet.device_keys),
            "initial-head": str(INITIAL_HEAD),
            "state-dir": str(tmp_path / "state"),
            "backbone-fp32": str(BACKBONE_FP32),
            "calibration": str(CALIBRATION),
            "model-signing-key": str(tmp_path / "signing.key"),
        }
    )
    notary, registry = InMemoryNotary(), InMemoryModelRegistry()
    outcome = run_federated(
        InProcessGrid(in_process_nodes(fleet, BACKBONE_INT8)),  # type: ignore[arg-type]
        settings,
        notary=notary,
        ledger=InMemoryRoundLedger(),
        device_keys=DeviceKeyDirectory(fleet.device_keys),
        registry=registry,
        description=read_task_description(DESCRIPTION),
    )
    assert outcome.model is not None and outcome.model.manifest.version == "fl-1-1"
    assert ("federated_plaid_edge_int8", "fl-1-1") in registry.models
    anchored = notary.model_anchor(model_anchor_id("federated_plaid_edge_int8", "fl-1-1"))
    assert anchored == bytes.fromhex(outcome.model.manifest.sha256)
