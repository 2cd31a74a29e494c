"""The notary's Merkle tree: every leaf proves its way to the root, and nothing else does."""

from __future__ import annotations

import pytest

from protocol.merkle import MerkleError, MerkleTree, ProofStep, leaf_hash, root_from_proof, sha256, verify_proof


def _leaves(n: int, round_id: int = 1) -> list[bytes]:
    return [
        leaf_hash(round_id, f"dev-{i:03d}", sha256(f"update {i}".encode()), bytes([i % 256]) * 64) for i in range(n)
    ]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 100])
def test_every_leaf_proves_inclusion(n: int) -> None:
    leaves = _leaves(n)
    tree = MerkleTree(leaves)
    for leaf in leaves:
        proof = tree.proof(leaf)
        assert verify_proof(leaf, proof, tree.root)
        assert len(proof) <= max(1, (n - 1).bit_length())


def test_root_does_not_depend_on_arrival_order() -> None:
    leaves = _leaves(9)
    assert MerkleTree(leaves).root == MerkleTree(list(reversed(leaves))).root


def test_a_changed_update_or_round_changes_the_leaf_and_fails_the_proof() -> None:
    leaves = _leaves(5)
    tree = MerkleTree(leaves)
    proof = tree.proof(leaves[2])
    forged = leaf_hash(1, "dev-002", sha256(b"another update"), bytes([2]) * 64)
    other_round = leaf_hash(2, "dev-002", sha256(b"update 2"), bytes([2]) * 64)
    assert not verify_proof(forged, proof, tree.root)
    assert not verify_proof(other_round, proof, tree.root)


def test_a_leaf_cannot_pose_as_an_inner_node() -> None:
    leaves = _leaves(4)
    tree = MerkleTree(leaves)
    # The inner node over the first two leaves, offered as if it were a leaf, has no valid proof.
    inner = root_from_proof(tree.leaves[0], tree.proof(tree.leaves[0])[:1])
    assert inner not in tree.leaves
    with pytest.raises(MerkleError):
        tree.proof(inner)


def test_proof_steps_round_trip_through_json() -> None:
    leaves = _leaves(6)
    tree = MerkleTree(leaves)
    proof = tree.proof(leaves[4])
    again = [ProofStep.from_json(step.to_json()) for step in proof]
    assert verify_proof(leaves[4], again, tree.root)


@pytest.mark.parametrize(
    "bad",
    [
        {"sibling": "00" * 32, "side": "up"},
        {"sibling": "zz", "side": "left"},
        {"side": "left"},
        {"sibling": "00", "side": "left"},
    ],
)
def test_malformed_proof_steps_are_refused(bad: dict[str, str]) -> None:
    with pytest.raises(MerkleError):
        ProofStep.from_json(bad)


def test_malformed_leaves_and_trees_are_refused() -> None:
    with pytest.raises(MerkleError):
        MerkleTree([])
    with pytest.raises(MerkleError):
        MerkleTree([b"short"])
    leaf = _leaves(1)[0]
    with pytest.raises(MerkleError):
        MerkleTree([leaf, leaf])
    with pytest.raises(MerkleError):
        leaf_hash(-1, "dev", sha256(b"x"), b"")
    with pytest.raises(MerkleError):
        leaf_hash(1, "dev", b"not a digest", b"")
    with pytest.raises(MerkleError):
        leaf_hash(1, "", sha256(b"x"), b"")
