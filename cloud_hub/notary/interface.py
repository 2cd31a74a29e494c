"""What the hub asks of a notary, whichever chain (or fake) stands behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from protocol.merkle import DIGEST_BYTES, ProofStep
from protocol.notary import MAX_PROOF_STEPS, NotaryAbiError, RoundRecord

UINT64 = 2**64


@dataclass(frozen=True, slots=True)
class Receipt:
    """A mined notary transaction."""

    tx_hash: bytes
    block_number: int
    gas_used: int


RoundReceipt = Receipt


class Notary(Protocol):
    """The on-chain notary: one transaction per federated round, and the model registry's anchors.

    Calls block until the transaction is mined (and confirmed, where settings ask for it); call them
    from a thread in async code.
    """

    @property
    def address(self) -> str:
        """The contract's address."""
        ...

    def commit_round(self, round_id: int, root: bytes, leaf_count: int, model_hash: bytes) -> Receipt:
        """Commit a round's Merkle root; raises RoundAlreadyCommittedError for a round id seen before."""
        ...

    def get_round(self, round_id: int) -> RoundRecord | None:
        """The committed round, or None."""
        ...

    def anchor_model(self, model_id: str, sha256: bytes) -> Receipt:
        """Anchor a model's sha256 under its id; raises ModelAlreadyAnchoredError for an id seen before."""
        ...

    def model_anchor(self, model_id: str) -> bytes | None:
        """The anchored sha256 of a model, or None."""
        ...

    def verify_inclusion(self, round_id: int, leaf: bytes, proof: list[ProofStep]) -> bool:
        """True when ``proof`` leads from ``leaf`` to the committed root of ``round_id``."""
        ...


def check_round_id(round_id: int) -> None:
    if not 0 <= round_id < UINT64:
        raise NotaryAbiError(f"a round id is a 64-bit unsigned integer, not {round_id}")


def check_digest(value: bytes, what: str) -> None:
    if len(value) != DIGEST_BYTES:
        raise NotaryAbiError(f"{what} is {DIGEST_BYTES} bytes, not {len(value)}")
    if value == bytes(DIGEST_BYTES):
        raise NotaryAbiError(f"{what} must not be all zero")


def check_commit(round_id: int, root: bytes, leaf_count: int, model_hash: bytes) -> None:
    """Refuse, before anything is sent, what the contract would refuse for its shape."""
    check_round_id(round_id)
    check_digest(root, "a Merkle root")
    check_digest(model_hash, "a model hash")
    if not 0 < leaf_count < UINT64:
        raise NotaryAbiError(f"a round's leaf count is between 1 and 2**64 - 1, not {leaf_count}")


def check_proof(round_id: int, leaf: bytes, proof: list[ProofStep]) -> None:
    check_round_id(round_id)
    if len(leaf) != DIGEST_BYTES:
        raise NotaryAbiError(f"a leaf is {DIGEST_BYTES} bytes, not {len(leaf)}")
    if len(proof) > MAX_PROOF_STEPS:
        raise NotaryAbiError(f"a proof has at most {MAX_PROOF_STEPS} steps, not {len(proof)}")
