"""The device's own labelled data, and the receipts of the rounds it took part in. SQLite, beside the outbox.

Labelled windows come from two sources: the hub's verdicts on escalated windows (the label the full model
gave) and local decisions an operator or a rule confirmed. Each is stored once, keyed by the message id it
came with, so a verdict delivered twice (at least once delivery) does not count twice. Windows are stored
as the model takes them (preprocessed float32), so training needs no preprocessing step of its own.

The second table keeps, for each round, the device's signed update digest and, once the hub sent it, the
round's Merkle root and this device's inclusion proof: what the device needs to check later that its
update is in the root committed on chain.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge_agent.fl.errors import DatasetError
from protocol.merkle import ProofStep

Source = Literal["verdict", "confirmed"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT UNIQUE,
    source TEXT NOT NULL,
    label INTEGER NOT NULL,
    window BLOB NOT NULL,
    length INTEGER NOT NULL,
    stored_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    round_id INTEGER PRIMARY KEY,
    digest BLOB NOT NULL,
    signature BLOB NOT NULL,
    examples INTEGER NOT NULL,
    root BLOB,
    proof TEXT,
    model_hash BLOB,
    verified INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """What the device keeps of one round: its signed update and, once received, its inclusion proof."""

    round_id: int
    digest: bytes
    signature: bytes
    examples: int
    root: bytes | None
    proof: list[ProofStep] | None
    model_hash: bytes | None
    verified: bool


class LocalDataset:
    """Labelled windows and round receipts in one SQLite file (WAL mode)."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise DatasetError(f"cannot open the local dataset {path}: {exc}") from exc
        self.path = path

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> LocalDataset:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, window: npt.ArrayLike, label: int, *, source: Source, message_id: str | None = None) -> bool:
        """Store one labelled window; False when ``message_id`` was stored before (a repeated delivery)."""
        array = np.asarray(window, dtype=np.float32)
        if array.ndim != 1 or array.size == 0:
            raise DatasetError(f"a window is a non-empty 1-D array, not shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise DatasetError("a window holds NaN or infinite values")
        if label < 0:
            raise DatasetError(f"a label is a class index >= 0, not {label}")
        if source not in ("verdict", "confirmed"):
            raise DatasetError(f"a sample comes from a 'verdict' or a 'confirmed' decision, not {source!r}")
        try:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO samples (message_id, source, label, window, length, stored_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (message_id, source, int(label), array.astype("<f4").tobytes(), int(array.size), time.time()),
            )
        except sqlite3.Error as exc:
            raise DatasetError(f"cannot store a sample: {exc}") from exc
        return cursor.rowcount == 1

    def add_many(
        self, windows: npt.ArrayLike, labels: npt.ArrayLike, *, source: Source, id_prefix: str | None = None
    ) -> int:
        """Store a batch in one transaction; returns how many were new."""
        rows = np.asarray(windows, dtype=np.float32)
        codes = np.asarray(labels, dtype=np.int64)
        if rows.ndim != 2 or len(rows) != len(codes):
            raise DatasetError(f"windows [n, samples] and n labels expected, not {rows.shape} and {codes.shape}")
        added = 0
        self._db.execute("BEGIN")
        try:
            for index, (row, label) in enumerate(zip(rows, codes, strict=True)):
                message_id = None if id_prefix is None else f"{id_prefix}{index}"
                added += self.add(row, int(label), source=source, message_id=message_id)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return added

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def load(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """All labelled windows (``[n, samples]``) and their labels, oldest first."""
        rows = self._db.execute("SELECT window, length, label FROM samples ORDER BY id").fetchall()
        if not rows:
            return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
        lengths = {length for _, length, _ in rows}
        if len(lengths) != 1:
            raise DatasetError(f"stored windows differ in length ({sorted(lengths)}); one model input size expected")
        windows = np.stack([np.frombuffer(blob, dtype="<f4") for blob, _, _ in rows]).astype(np.float32)
        labels = np.asarray([label for _, _, label in rows], dtype=np.int64)
        return windows, labels

    def record_update(self, round_id: int, digest: bytes, signature: bytes, examples: int) -> None:
        """Remember the signed update sent in ``round_id`` (a retried round replaces it)."""
        self._db.execute(
            "INSERT OR REPLACE INTO rounds (round_id, digest, signature, examples) VALUES (?, ?, ?, ?)",
            (round_id, digest, signature, examples),
        )

    def record_proof(
        self, round_id: int, root: bytes, proof: list[ProofStep], *, model_hash: bytes | None, verified: bool
    ) -> None:
        self._db.execute(
            "UPDATE rounds SET root = ?, proof = ?, model_hash = ?, verified = ? WHERE round_id = ?",
            (root, json.dumps([step.to_json() for step in proof]), model_hash, int(verified), round_id),
        )

    def round(self, round_id: int) -> RoundRecord | None:
        row = self._db.execute(
            "SELECT round_id, digest, signature, examples, root, proof, model_hash, verified FROM rounds"
            " WHERE round_id = ?",
            (round_id,),
        ).fetchone()
        if row is None:
            return None
        proof = None if row[5] is None else [ProofStep.from_json(step) for step in json.loads(row[5])]
        return RoundRecord(row[0], row[1], row[2], row[3], row[4], proof, row[6], bool(row[7]))

    def rounds(self) -> list[RoundRecord]:
        ids = [row[0] for row in self._db.execute("SELECT round_id FROM rounds ORDER BY round_id")]
        return [record for round_id in ids if (record := self.round(round_id)) is not None]
