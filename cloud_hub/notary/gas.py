"""Gas per notarized round at growing client counts: flat, since only the root goes on chain.

``gas_per_round()`` commits rounds of 2, 10 and 100 leaves to a fresh in-process chain (or to a
given notary) and returns each transaction's gas. A transaction's gas is 21,000, plus its calldata
(EIP-2028: 4 gas a zero byte, 16 a non-zero byte), plus execution. The calldata of a commit has the
same length whatever the leaf count, but a root that happens to contain a zero byte costs 12 gas
less: so the figures give the execution part too, which is identical for every leaf count.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cloud_hub.notary.interface import Notary
from protocol.merkle import MerkleTree, leaf_hash
from protocol.notary import encode_verify_inclusion

INTRINSIC_GAS = 21_000
DEFAULT_LEAF_COUNTS = (2, 10, 100)


@dataclass(frozen=True, slots=True)
class GasFigure:
    leaves: int
    gas_used: int
    calldata_gas: int

    @property
    def execution_gas(self) -> int:
        return self.gas_used - INTRINSIC_GAS - self.calldata_gas


def calldata_gas(data: bytes) -> int:
    zeros = data.count(0)
    return 4 * zeros + 16 * (len(data) - zeros)


def synthetic_round(round_id: int, leaves: int) -> MerkleTree:
    """A round of ``leaves`` distinct signed updates (deterministic: the same round id gives the same tree)."""
    return MerkleTree(
        [
            leaf_hash(
                round_id,
                f"dev-{i:05d}",
                hashlib.sha256(f"update {round_id}/{i}".encode()).digest(),
                hashlib.sha512(f"signature {round_id}/{i}".encode()).digest(),
            )
            for i in range(leaves)
        ]
    )


def gas_per_round(
    leaf_counts: tuple[int, ...] = DEFAULT_LEAF_COUNTS, *, notary: Notary | None = None, first_round: int = 1
) -> list[GasFigure]:
    """Commit one synthetic round per leaf count and return the gas each took.

    On a fresh in-process chain a one-leaf round goes first, unmeasured: the contract's round counter
    costs 17,100 gas more on its first write (a zero storage slot made non-zero), whatever the leaves.
    """
    from cloud_hub.notary.chain import Web3Notary
    from protocol.notary import SELECTOR_COMMIT_ROUND

    target: Notary
    if notary is None:
        target = Web3Notary.in_process()
        warm_up = synthetic_round(first_round, 1)
        target.commit_round(first_round, warm_up.root, 1, hashlib.sha256(b"warm-up").digest())
        first_round += 1
    else:
        target = notary
    figures = []
    for offset, count in enumerate(leaf_counts):
        round_id = first_round + offset
        tree = synthetic_round(round_id, count)
        model_hash = hashlib.sha256(f"global model {round_id}".encode()).digest()
        receipt = target.commit_round(round_id, tree.root, len(tree), model_hash)
        data = (
            SELECTOR_COMMIT_ROUND
            + round_id.to_bytes(32, "big")
            + tree.root
            + len(tree).to_bytes(32, "big")
            + model_hash
        )
        figures.append(GasFigure(leaves=count, gas_used=receipt.gas_used, calldata_gas=calldata_gas(data)))
    return figures


def proof_check_calldata(leaves: int) -> int:
    """Bytes of calldata of an on-chain proof check in a round of ``leaves`` (grows with log2 of it)."""
    tree = synthetic_round(1, leaves)
    return len(encode_verify_inclusion(1, tree.leaves[0], tree.proof(tree.leaves[0])))


def format_gas(figures: list[GasFigure]) -> str:
    """The figures as a small table, for benchmarks and docs."""
    lines = [f"{'leaves':>7} {'gas/round':>10} {'calldata':>9} {'execution':>10}"]
    lines += [f"{f.leaves:>7} {f.gas_used:>10,} {f.calldata_gas:>9,} {f.execution_gas:>10,}" for f in figures]
    return "\n".join(lines)


def print_gas_per_round(leaf_counts: tuple[int, ...] = DEFAULT_LEAF_COUNTS) -> list[GasFigure]:
    """Measure on a fresh in-process chain and print (what bench/federated.py calls)."""
    figures = gas_per_round(leaf_counts)
    print("notary gas per round (one transaction; only the Merkle root goes on chain)")
    print(format_gas(figures))
    return figures
