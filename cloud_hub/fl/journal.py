"""The coordinator's journal: one JSON line per notarized round, and the state of the latest run.

``edgefleet fl status`` reads it; the next run continues the round ids after the last one in it. It is
not the notary: the chain (or the round ledger) is the record others trust; the journal is the hub's
own account of what it did, with the timings and the rejected updates the chain does not hold.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the hub reads journals without the ``fl`` extra (Flower) installed
    from cloud_hub.fl.notarizing import NotarizedRound

ROUNDS = "rounds.jsonl"
RUN = "run.json"


def round_entry(notarized: NotarizedRound, *, strategy: str) -> dict[str, Any]:
    receipt = notarized.receipt
    return {
        "round_id": notarized.round_id,
        "server_round": notarized.server_round,
        "strategy": strategy,
        "root": notarized.root.hex() if notarized.root else None,
        "leaves": [leaf.hex() for leaf in notarized.leaves],
        "model_hash": notarized.model_hash.hex() if notarized.model_hash else None,
        "devices": sorted(update.device_id for update in notarized.accepted),
        "rejected": [{"device_id": r.device_id, "node_id": r.node_id, "reason": r.reason} for r in notarized.rejected],
        "gas_used": getattr(receipt, "gas_used", None),
        "tx_hash": _hex(getattr(receipt, "tx_hash", None)),
        "block_number": getattr(receipt, "block_number", None),
        "seconds": {
            "verify": notarized.verify_seconds,
            "aggregate": notarized.aggregate_seconds,
            "notarize": notarized.notarize_seconds,
        },
        "at": time.time(),
    }


def _hex(value: object) -> str | None:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return None if value is None else str(value)


class RoundJournal:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory

    def append(self, entry: dict[str, Any]) -> None:
        with (self.directory / ROUNDS).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")

    def rounds(self) -> list[dict[str, Any]]:
        path = self.directory / ROUNDS
        if not path.is_file():
            return []
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        entries = []
        for number, line in enumerate(lines, start=1):
            try:
                entries.append(json.loads(line))
            except ValueError:
                if number == len(lines):  # the ServerApp is appending it right now
                    break
                raise
        return entries

    def next_round_id(self) -> int:
        rounds = self.rounds()
        return 1 + max((int(entry["round_id"]) for entry in rounds), default=0)

    def write_run(self, state: dict[str, Any]) -> None:
        path = self.directory / RUN
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(state, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
        scratch.replace(path)

    def run(self) -> dict[str, Any] | None:
        path = self.directory / RUN
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
