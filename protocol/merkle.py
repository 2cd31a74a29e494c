"""The notary's Merkle tree: leaves for signed client updates, roots, inclusion proofs. Pure computation.

A federated round commits one root on chain. Its leaves are the round's client updates, each named by
the device that made it, the sha256 of the update's canonical bytes and the device's Ed25519 signature
over that digest. Anyone holding a leaf and its proof can recompute the root with nothing but sha256,
so a device verifies its inclusion without web3, and the contract can verify it too (Vyper's
``sha256`` builtin).

Hashing rules (domain-separated, so a leaf can never pose as an inner node):

- ``leaf = sha256(0x00 || round_id as 8 bytes big-endian || sha256(device_id utf-8) || update_digest || signature)``
- ``node = sha256(0x01 || left || right)``
- leaves are sorted by their hash before the tree is built, so the root does not depend on the order
  in which updates arrived; an odd node at the end of a level is carried up unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
DIGEST_BYTES = 32


class MerkleError(ValueError):
    """A leaf, a proof or a tree is malformed."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_hash(round_id: int, device_id: str, update_digest: bytes, signature: bytes) -> bytes:
    """The leaf of one device's signed update in one round."""
    if round_id < 0 or round_id >= 2**64:
        raise MerkleError(f"round id {round_id} does not fit in 8 bytes")
    if len(update_digest) != DIGEST_BYTES:
        raise MerkleError(f"an update digest is {DIGEST_BYTES} bytes, not {len(update_digest)}")
    if not device_id:
        raise MerkleError("a leaf needs a device id")
    return sha256(
        LEAF_PREFIX + round_id.to_bytes(8, "big") + sha256(device_id.encode()) + update_digest + bytes(signature)
    )


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(NODE_PREFIX + left + right)


@dataclass(frozen=True, slots=True)
class ProofStep:
    """One sibling on the way from a leaf to the root, and the side it sits on."""

    sibling: bytes
    side: Literal["left", "right"]

    def to_json(self) -> dict[str, str]:
        return {"sibling": self.sibling.hex(), "side": self.side}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> ProofStep:
        raw_side = data.get("side")
        if raw_side == "left":
            side: Literal["left", "right"] = "left"
        elif raw_side == "right":
            side = "right"
        else:
            raise MerkleError(f"a proof step's side is 'left' or 'right', not {raw_side!r}")
        try:
            sibling = bytes.fromhex(data["sibling"])
        except (KeyError, ValueError) as exc:
            raise MerkleError(f"a proof step needs a hex sibling: {exc}") from exc
        if len(sibling) != DIGEST_BYTES:
            raise MerkleError(f"a proof sibling is {DIGEST_BYTES} bytes, not {len(sibling)}")
        return cls(sibling=sibling, side=side)


class MerkleTree:
    """A tree over a round's leaf hashes (sorted on construction)."""

    def __init__(self, leaves: list[bytes]) -> None:
        if not leaves:
            raise MerkleError("a Merkle tree needs at least one leaf")
        for leaf in leaves:
            if len(leaf) != DIGEST_BYTES:
                raise MerkleError(f"a leaf hash is {DIGEST_BYTES} bytes, not {len(leaf)}")
        if len(set(leaves)) != len(leaves):
            raise MerkleError("a round's leaves must be distinct")
        self.leaves: list[bytes] = sorted(leaves)
        self._levels: list[list[bytes]] = [self.leaves]
        level = self.leaves
        while len(level) > 1:
            upper = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                upper.append(level[-1])
            self._levels.append(upper)
            level = upper

    @property
    def root(self) -> bytes:
        return self._levels[-1][0]

    def __len__(self) -> int:
        return len(self.leaves)

    def proof(self, leaf: bytes) -> list[ProofStep]:
        """The siblings from ``leaf`` up to the root."""
        try:
            index = self.leaves.index(leaf)
        except ValueError:
            raise MerkleError(f"leaf {leaf.hex()} is not in this tree") from None
        steps: list[ProofStep] = []
        for level in self._levels[:-1]:
            sibling_index = index ^ 1
            if sibling_index < len(level):
                side: Literal["left", "right"] = "left" if sibling_index < index else "right"
                steps.append(ProofStep(sibling=level[sibling_index], side=side))
            index //= 2
        return steps


def root_from_proof(leaf: bytes, proof: list[ProofStep]) -> bytes:
    node = leaf
    for step in proof:
        node = node_hash(step.sibling, node) if step.side == "left" else node_hash(node, step.sibling)
    return node


def verify_proof(leaf: bytes, proof: list[ProofStep], root: bytes) -> bool:
    """True when ``proof`` leads from ``leaf`` to ``root``."""
    return root_from_proof(leaf, proof) == root
