"""An in-memory notary with the contract's behaviour, for fast tests of what uses a notary."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

from cloud_hub.notary.errors import ModelAlreadyAnchoredError, NotAuthorizedError, RoundAlreadyCommittedError
from cloud_hub.notary.interface import Receipt, check_commit, check_digest, check_proof
from protocol.merkle import ProofStep, verify_proof
from protocol.notary import RoundRecord, model_id_hash


@dataclass
class _Ledger:
    owner: str
    notaries: set[str] = field(default_factory=set)
    rounds: dict[int, RoundRecord] = field(default_factory=dict)
    anchors: dict[bytes, bytes] = field(default_factory=dict)
    block_number: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class InMemoryNotary:
    """Refuses what the contract refuses (a second commit of a round, a second anchor of a model, callers
    that are neither the owner nor allowed). Each transaction is a block of its own; gas is zero.
    """

    def __init__(self, *, owner: str = "hub", caller: str | None = None, clock: float = 1_700_000_000.0) -> None:
        self._state = _Ledger(owner=owner)
        self._caller = caller if caller is not None else owner
        self._clock = clock

    @property
    def address(self) -> str:
        return "0x" + hashlib.sha256(f"in-memory notary of {self._state.owner}".encode()).hexdigest()[:40]

    @property
    def owner(self) -> str:
        return self._state.owner

    def as_caller(self, caller: str) -> InMemoryNotary:
        """The same notary, sending as ``caller``."""
        other = InMemoryNotary.__new__(InMemoryNotary)
        other._state, other._caller, other._clock = self._state, caller, self._clock
        return other

    def allow_notary(self, account: str, allowed: bool = True) -> Receipt:
        with self._state.lock:
            if self._caller != self._state.owner:
                raise NotAuthorizedError("notary: caller is not the owner")
            (self._state.notaries.add if allowed else self._state.notaries.discard)(account)
            return self._mined(f"allow {account} {allowed}")

    def _mined(self, what: str) -> Receipt:
        self._state.block_number += 1
        tx_hash = hashlib.sha256(f"{self._state.block_number}/{what}".encode()).digest()
        return Receipt(tx_hash=tx_hash, block_number=self._state.block_number, gas_used=0)

    def _check_caller(self) -> None:
        if self._caller != self._state.owner and self._caller not in self._state.notaries:
            raise NotAuthorizedError("notary: caller is not a notary")

    def commit_round(self, round_id: int, root: bytes, leaf_count: int, model_hash: bytes) -> Receipt:
        check_commit(round_id, root, leaf_count, model_hash)
        with self._state.lock:
            self._check_caller()
            if round_id in self._state.rounds:
                raise RoundAlreadyCommittedError("notary: round already committed")
            receipt = self._mined(f"round {round_id}")
            self._state.rounds[round_id] = RoundRecord(
                round_id=round_id,
                root=bytes(root),
                leaf_count=leaf_count,
                model_hash=bytes(model_hash),
                block_number=receipt.block_number,
                timestamp=int(self._clock) + receipt.block_number,
            )
            return receipt

    def get_round(self, round_id: int) -> RoundRecord | None:
        with self._state.lock:
            return self._state.rounds.get(round_id)

    def anchor_model(self, model_id: str, sha256: bytes) -> Receipt:
        key = model_id_hash(model_id)
        check_digest(sha256, "a model hash")
        with self._state.lock:
            self._check_caller()
            if key in self._state.anchors:
                raise ModelAlreadyAnchoredError("notary: model already anchored")
            self._state.anchors[key] = bytes(sha256)
            return self._mined(f"model {model_id}")

    def model_anchor(self, model_id: str) -> bytes | None:
        with self._state.lock:
            return self._state.anchors.get(model_id_hash(model_id))

    def verify_inclusion(self, round_id: int, leaf: bytes, proof: list[ProofStep]) -> bool:
        check_proof(round_id, leaf, proof)
        committed = self.get_round(round_id)
        return committed is not None and verify_proof(leaf, proof, committed.root)
