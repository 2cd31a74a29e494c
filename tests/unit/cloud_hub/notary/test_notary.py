"""The notary's behaviour, on the contract (in-process EVM) and on the in-memory fake alike."""

from __future__ import annotations

import pytest

from cloud_hub.notary.chain import Web3Notary
from cloud_hub.notary.errors import ModelAlreadyAnchoredError, NotAuthorizedError, RoundAlreadyCommittedError
from cloud_hub.notary.memory import InMemoryNotary
from protocol.merkle import MerkleTree, ProofStep, verify_proof
from protocol.notary import NotaryAbiError
from tests.unit.cloud_hub.notary.support import digest, records, stranger_address, stranger_of

AnyNotary = Web3Notary | InMemoryNotary


def test_a_committed_round_reads_back(notary: AnyNotary) -> None:
    tree = MerkleTree([record.leaf(4) for record in records(5)])
    receipt = notary.commit_round(4, tree.root, len(tree), digest("model 4"))
    committed = notary.get_round(4)
    assert committed is not None
    assert (committed.round_id, committed.root, committed.leaf_count) == (4, tree.root, 5)
    assert committed.model_hash == digest("model 4")
    assert committed.block_number == receipt.block_number
    assert committed.timestamp > 0
    assert len(receipt.tx_hash) == 32
    assert notary.get_round(5) is None


def test_a_round_is_committed_once(notary: AnyNotary) -> None:
    notary.commit_round(1, digest("root"), 2, digest("model"))
    with pytest.raises(RoundAlreadyCommittedError):
        notary.commit_round(1, digest("another root"), 3, digest("another model"))
    committed = notary.get_round(1)
    assert committed is not None and committed.root == digest("root")


def test_only_the_owner_or_an_allowed_account_commits(notary: AnyNotary) -> None:
    stranger = stranger_of(notary)
    with pytest.raises(NotAuthorizedError):
        stranger.commit_round(1, digest("root"), 2, digest("model"))
    with pytest.raises(NotAuthorizedError):
        stranger.anchor_model("plaid@1", digest("weights"))
    with pytest.raises(NotAuthorizedError):
        stranger.allow_notary(stranger_address(notary))
    assert notary.get_round(1) is None

    notary.allow_notary(stranger_address(notary))
    stranger.commit_round(1, digest("root"), 2, digest("model"))
    assert notary.get_round(1) is not None

    notary.allow_notary(stranger_address(notary), allowed=False)
    with pytest.raises(NotAuthorizedError):
        stranger.commit_round(2, digest("root"), 2, digest("model"))


def test_models_are_anchored_once_and_read_back(notary: AnyNotary) -> None:
    assert notary.model_anchor("plaid-edge-int8@3") is None
    notary.anchor_model("plaid-edge-int8@3", digest("weights v3"))
    assert notary.model_anchor("plaid-edge-int8@3") == digest("weights v3")
    assert notary.model_anchor("plaid-edge-int8@4") is None
    with pytest.raises(ModelAlreadyAnchoredError):
        notary.anchor_model("plaid-edge-int8@3", digest("other weights"))
    assert notary.model_anchor("plaid-edge-int8@3") == digest("weights v3")


@pytest.mark.parametrize(
    ("round_id", "root", "leaf_count", "model_hash"),
    [
        (-1, digest("r"), 1, digest("m")),
        (2**64, digest("r"), 1, digest("m")),
        (1, b"short", 1, digest("m")),
        (1, bytes(32), 1, digest("m")),
        (1, digest("r"), 0, digest("m")),
        (1, digest("r"), 1, b"\x01" * 31),
    ],
)
def test_malformed_commits_are_refused_before_sending(
    notary: AnyNotary, round_id: int, root: bytes, leaf_count: int, model_hash: bytes
) -> None:
    with pytest.raises(NotaryAbiError):
        notary.commit_round(round_id, root, leaf_count, model_hash)
    with pytest.raises(NotaryAbiError):
        notary.anchor_model("", digest("m"))
    with pytest.raises(NotaryAbiError):
        notary.anchor_model("plaid@1", bytes(32))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 100])
def test_the_contract_agrees_with_protocol_merkle_on_every_proof(notary: AnyNotary, n: int) -> None:
    round_id = 9
    leaves = [record.leaf(round_id) for record in records(n)]
    tree = MerkleTree(leaves)
    notary.commit_round(round_id, tree.root, len(tree), digest("model"))
    for leaf in leaves:
        proof = tree.proof(leaf)
        assert verify_proof(leaf, proof, tree.root)
        assert notary.verify_inclusion(round_id, leaf, proof)

    leaf, proof = leaves[0], tree.proof(leaves[0])
    forged = records(1, salt="forged")[0].leaf(round_id)
    assert not verify_proof(forged, proof, tree.root)
    assert not notary.verify_inclusion(round_id, forged, proof)
    assert not notary.verify_inclusion(round_id + 1, leaf, proof)  # a round not committed
    if proof:
        flipped = [ProofStep(step.sibling, "right" if step.side == "left" else "left") for step in proof]
        assert verify_proof(leaf, flipped, tree.root) is notary.verify_inclusion(round_id, leaf, flipped) is False
        assert not notary.verify_inclusion(round_id, leaf, proof[:-1])


def test_an_over_long_proof_is_refused(notary: AnyNotary) -> None:
    proof = [ProofStep(digest(str(i)), "left") for i in range(65)]
    with pytest.raises(NotaryAbiError):
        notary.verify_inclusion(1, digest("leaf"), proof)
