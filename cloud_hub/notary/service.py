"""Notarizing a federated round, and checking a notarized round against its stored leaves.

::

    notarized = notarize_round(notary, ledger, round_id, leaves, model_hash)
    notarized.proofs["dev-007"]          # the InclusionProof to send to that device

    check = check_round(notary, ledger, round_id)
    check.ok, check.problems             # what `edgefleet chain verify ROUND` prints
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloud_hub.notary.errors import LedgerError, RoundAlreadyCommittedError
from cloud_hub.notary.interface import Notary, Receipt
from cloud_hub.notary.ledger import RoundLedger
from protocol.notary import InclusionProof, LeafRecord, RoundRecord


@dataclass(frozen=True, slots=True)
class NotarizedRound:
    round_id: int
    root: bytes
    leaf_count: int
    model_hash: bytes
    proofs: dict[str, InclusionProof]
    receipt: Receipt | None
    """None when the round was already on chain with the same root (a retry after a crash)."""


def notarize_round(
    notary: Notary, ledger: RoundLedger, round_id: int, leaves: list[LeafRecord], model_hash: bytes
) -> NotarizedRound:
    """Record the round's leaves, commit its root (one transaction), and make each device's proof.

    The leaves are recorded before the transaction, so a root on chain always has its leaves at the
    hub. Called again for a round already committed with the same root, it commits nothing and
    returns the proofs; a different root for a committed round raises RoundAlreadyCommittedError.
    """
    ledger.record_round(round_id, leaves, model_hash)
    stored = ledger.stored(round_id)
    if stored is None:
        raise LedgerError(f"round {round_id} was recorded but the ledger does not return it")
    tree = stored.tree()
    receipt: Receipt | None
    try:
        receipt = notary.commit_round(round_id, tree.root, len(tree), stored.model_hash)
    except RoundAlreadyCommittedError:
        committed = notary.get_round(round_id)
        if committed is None or (committed.root, committed.leaf_count, committed.model_hash) != (
            tree.root,
            len(tree),
            stored.model_hash,
        ):
            raise
        receipt = None
    proofs = {
        record.device_id: InclusionProof(
            round_id=round_id,
            record=record,
            proof=tree.proof(record.leaf(round_id)),
            model_hash=stored.model_hash,
        )
        for record in stored.leaves
    }
    return NotarizedRound(
        round_id=round_id,
        root=tree.root,
        leaf_count=len(tree),
        model_hash=stored.model_hash,
        proofs=proofs,
        receipt=receipt,
    )


@dataclass(frozen=True, slots=True)
class RoundCheck:
    """A stored round set against the chain's record of it."""

    round_id: int
    stored_root: bytes | None
    stored_leaf_count: int
    chain: RoundRecord | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_round(notary: Notary, ledger: RoundLedger, round_id: int) -> RoundCheck:
    """Recompute the round's root from its stored leaves and compare root, leaf count and model hash."""
    stored = ledger.stored(round_id)
    chain = notary.get_round(round_id)
    problems: list[str] = []
    if stored is None:
        problems.append(f"no leaves are recorded for round {round_id}")
    if chain is None:
        problems.append(f"round {round_id} is not committed on chain {notary.address}")
    if stored is None:
        return RoundCheck(round_id, None, 0, chain, problems)
    tree = stored.tree()
    if chain is not None:
        if chain.root != tree.root:
            problems.append(
                f"the root of the stored leaves {tree.root.hex()} differs from the chain's {chain.root.hex()}"
            )
        if chain.leaf_count != len(tree):
            problems.append(f"{len(tree)} leaves are stored, the chain says {chain.leaf_count}")
        if chain.model_hash != stored.model_hash:
            problems.append(
                f"the stored model hash {stored.model_hash.hex()} differs from the chain's {chain.model_hash.hex()}"
            )
    return RoundCheck(round_id, tree.root, len(tree), chain, problems)
