"""Where a round's leaves are kept, so that anyone can later recompute the root the chain holds.

The chain stores only the root; the leaves (device id, update digest, signature) stay with the hub.
:class:`JsonLinesRoundLedger` keeps one JSON Lines file per round under the hub's data directory: a
header line (round id, model hash, leaf count) and one line per leaf. A round is written once
(to a temporary file, fsynced, then renamed into place); recording the same round again with the
same content is a no-op, so a hub that retries after a crash loses and duplicates nothing.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from cloud_hub.notary.errors import LedgerError, RoundConflictError, RoundNotRecordedError
from cloud_hub.notary.interface import check_digest, check_round_id
from protocol.merkle import MerkleTree
from protocol.notary import LeafRecord

_FILE = re.compile(r"^round-(\d{20})\.jsonl$")


@dataclass(frozen=True, slots=True)
class StoredRound:
    """A round as the hub recorded it: its leaves (sorted by device id) and the global model's hash."""

    round_id: int
    leaves: list[LeafRecord]
    model_hash: bytes

    def tree(self) -> MerkleTree:
        return MerkleTree([leaf.leaf(self.round_id) for leaf in self.leaves])


class RoundLedger(Protocol):
    """The store of each round's leaves."""

    def record_round(self, round_id: int, leaves: list[LeafRecord], model_hash: bytes) -> None:
        """Keep a round's leaves; raises RoundConflictError if the round is recorded with other content."""
        ...

    def stored(self, round_id: int) -> StoredRound | None:
        """The recorded round, or None."""
        ...

    def leaves(self, round_id: int) -> list[LeafRecord]:
        """The round's leaves; raises RoundNotRecordedError."""
        ...

    def round_ids(self) -> list[int]:
        """Every recorded round id, ascending."""
        ...


def _normalized(round_id: int, leaves: list[LeafRecord], model_hash: bytes) -> StoredRound:
    check_round_id(round_id)
    check_digest(model_hash, "a model hash")
    if not leaves:
        raise LedgerError(f"round {round_id} has no leaves")
    devices = [leaf.device_id for leaf in leaves]
    if len(set(devices)) != len(devices):
        repeated = sorted({device for device in devices if devices.count(device) > 1})
        raise LedgerError(f"round {round_id} has more than one update from {', '.join(repeated)}")
    ordered = sorted(leaves, key=lambda leaf: leaf.device_id)
    return StoredRound(round_id=round_id, leaves=ordered, model_hash=bytes(model_hash))


def _same(existing: StoredRound, new: StoredRound) -> None:
    if existing != new:
        raise RoundConflictError(f"round {new.round_id} is already recorded with other leaves or another model hash")


class InMemoryRoundLedger:
    """The ledger in a dict, for tests."""

    def __init__(self) -> None:
        self._rounds: dict[int, StoredRound] = {}
        self._lock = threading.Lock()

    def record_round(self, round_id: int, leaves: list[LeafRecord], model_hash: bytes) -> None:
        new = _normalized(round_id, leaves, model_hash)
        with self._lock:
            existing = self._rounds.get(round_id)
            if existing is not None:
                _same(existing, new)
                return
            self._rounds[round_id] = new

    def stored(self, round_id: int) -> StoredRound | None:
        with self._lock:
            return self._rounds.get(round_id)

    def leaves(self, round_id: int) -> list[LeafRecord]:
        stored = self.stored(round_id)
        if stored is None:
            raise RoundNotRecordedError(f"no leaves are recorded for round {round_id}")
        return list(stored.leaves)

    def round_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._rounds)


class JsonLinesRoundLedger:
    """One JSON Lines file per round under ``directory`` (created on the first write)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    def path(self, round_id: int) -> Path:
        check_round_id(round_id)
        return self.directory / f"round-{round_id:020d}.jsonl"

    def record_round(self, round_id: int, leaves: list[LeafRecord], model_hash: bytes) -> None:
        new = _normalized(round_id, leaves, model_hash)
        header = {"round_id": round_id, "model_hash": new.model_hash.hex(), "leaf_count": len(new.leaves)}
        lines = [json.dumps(header, sort_keys=True)] + [leaf.model_dump_json() for leaf in new.leaves]
        path = self.path(round_id)
        with self._lock:
            existing = self.stored(round_id)
            if existing is not None:
                _same(existing, new)
                return
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                handle, partial = tempfile.mkstemp(dir=self.directory, prefix=path.name, suffix=".partial")
                with os.fdopen(handle, "w") as out:
                    out.write("\n".join(lines) + "\n")
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as exc:
                raise LedgerError(f"cannot record round {round_id} under {self.directory}: {exc}") from exc
            try:
                # A link, unlike a rename, refuses to replace a round another process wrote meanwhile.
                os.link(partial, path)
            except FileExistsError:
                existing = self.stored(round_id)
                if existing is None:
                    raise LedgerError(f"round {round_id} appeared at {path} but cannot be read") from None
                _same(existing, new)
            except OSError as exc:
                raise LedgerError(f"cannot record round {round_id} at {path}: {exc}") from exc
            finally:
                os.unlink(partial)

    def stored(self, round_id: int) -> StoredRound | None:
        path = self.path(round_id)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LedgerError(f"cannot read {path}: {exc}") from exc
        lines = text.splitlines()
        try:
            header = json.loads(lines[0])
            model_hash = bytes.fromhex(header["model_hash"])
            if header["round_id"] != round_id:
                raise LedgerError(f"{path} holds round {header['round_id']}, not {round_id}")
            leaves = [LeafRecord.model_validate_json(line) for line in lines[1:]]
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            # ValidationError is a ValueError: a leaf line that does not parse lands here too.
            detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise LedgerError(f"{path} is not a readable round record: {detail}") from exc
        if len(leaves) != header.get("leaf_count"):
            raise LedgerError(f"{path} says {header.get('leaf_count')} leaves but holds {len(leaves)}")
        return StoredRound(round_id=round_id, leaves=leaves, model_hash=model_hash)

    def leaves(self, round_id: int) -> list[LeafRecord]:
        stored = self.stored(round_id)
        if stored is None:
            raise RoundNotRecordedError(f"no leaves are recorded for round {round_id} under {self.directory}")
        return list(stored.leaves)

    def round_ids(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        found = (_FILE.match(path.name) for path in self.directory.iterdir())
        return sorted(int(match.group(1)) for match in found if match)
