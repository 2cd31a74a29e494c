"""The durable outbox: what the agent must send waits here, on disk, until it has arrived.

SQLite in WAL mode. Delivery is at least once. A message leaves the outbox once the broker
acknowledged it (QoS 1) — or, for a message that expects a reply (an escalation expects its verdict),
once the reply came: the broker's acknowledgement alone does not prove the hub has it (a broker that
restarts without persistence forgets what no subscriber was there to take). Until then it is sent
again every ``retry_after_s``. A crash between sending and forgetting sends a message again, and the
receiver drops the copy by its message id. When the outbox is full, the lowest-priority messages
go first, oldest first (priority 0 is the most urgent); every drop is counted by priority.
Counters live in the same file, so they survive restarts.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_agent.errors import AgentError

Synchronous = Literal["normal", "full"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    kind TEXT NOT NULL,
    message_id TEXT,
    awaits_reply INTEGER NOT NULL DEFAULT 0,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_replies ON outbox (message_id) WHERE awaits_reply = 1;
CREATE INDEX IF NOT EXISTS outbox_drop_order ON outbox (priority DESC, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class OutboxError(AgentError):
    """The outbox's file cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message to publish, with what the outbox needs to order and drop it."""

    topic: str
    payload: bytes
    qos: int
    priority: int = 5
    kind: str = "event"
    message_id: str | None = None
    awaits_reply: bool = False


@dataclass(frozen=True, slots=True)
class Stored:
    id: int
    topic: str
    payload: bytes
    qos: int


class Outbox:
    """A bounded, priority-aware FIFO on disk. Not thread-safe: one agent, one event loop."""

    def __init__(self, path: Path | str, *, max_items: int = 100_000, synchronous: Synchronous = "normal") -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.path = str(path)
        self.max_items = max_items
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL survives a killed process; FULL also survives a power cut, at a cost per commit.
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
            self._recount()
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open the outbox at {self.path}: {exc}") from exc

    def put(self, envelopes: Sequence[Envelope]) -> int:
        """Store ``envelopes`` in one transaction; return how many messages were dropped to make room."""
        if not envelopes:
            return 0
        try:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO outbox (topic, payload, qos, priority, kind, message_id, awaits_reply) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(e.topic, e.payload, e.qos, e.priority, e.kind, e.message_id, e.awaits_reply) for e in envelopes],
                )
                self._bump_many(Counter(f"enqueued.{e.kind}" for e in envelopes).items())
                self._depth += len(envelopes)
                return self._make_room()
        except sqlite3.Error as exc:
            self._recount()
            raise OutboxError(f"cannot write to the outbox: {exc}") from exc

    def peek(self, limit: int, *, now: float = 0.0, retry_after_s: float = 30.0) -> list[Stored]:
        """The next messages to send: never sent, or sent ``retry_after_s`` ago and still without their
        reply; the most urgent first, oldest first within a priority."""
        rows = self._db.execute(
            "SELECT id, topic, payload, qos FROM outbox WHERE sent_at IS NULL OR sent_at <= ? "
            "ORDER BY priority, id LIMIT ?",
            (now - retry_after_s, limit),
        ).fetchall()
        return [Stored(id=row[0], topic=row[1], payload=bytes(row[2]), qos=row[3]) for row in rows]

    def next_retry(self) -> float | None:
        """When the earliest message still waiting for its reply was sent (``None`` if none is)."""
        row = self._db.execute("SELECT MIN(sent_at) FROM outbox WHERE sent_at IS NOT NULL").fetchone()
        return None if row[0] is None else float(row[0])

    def ack(self, ids: Iterable[int], *, now: float = 0.0) -> None:
        """The broker acknowledged these: forget them, or, if they expect a reply, note when they went."""
        keys = [(i,) for i in ids]
        if not keys:
            return
        try:
            with self._transaction():
                self._db.executemany(
                    "UPDATE outbox SET sent_at = ? WHERE id = ? AND awaits_reply = 1", [(now, k) for (k,) in keys]
                )
                removed = self._delete("DELETE FROM outbox WHERE id = ? AND awaits_reply = 0", keys)
                self._bump_many([("delivered", removed)])
        except sqlite3.Error as exc:
            self._recount()
            raise OutboxError(f"cannot update the outbox: {exc}") from exc

    def settle(self, message_ids: Iterable[str]) -> int:
        """The replies to these messages came: forget them. Returns how many were still here."""
        keys = [(m,) for m in message_ids]
        if not keys:
            return 0
        try:
            with self._transaction():
                removed = self._delete("DELETE FROM outbox WHERE message_id = ? AND awaits_reply = 1", keys)
                self._bump_many([("delivered", removed)])
                return removed
        except sqlite3.Error as exc:
            self._recount()
            raise OutboxError(f"cannot update the outbox: {exc}") from exc

    def _delete(self, statement: str, keys: Sequence[tuple[object, ...]]) -> int:
        before = self._db.total_changes
        self._db.executemany(statement, keys)
        removed = self._db.total_changes - before
        self._depth -= removed
        return removed

    @property
    def depth(self) -> int:
        """Messages here: not sent yet, or sent and waiting for their reply."""
        return self._depth

    def unsent(self) -> int:
        """Messages not sent even once."""
        return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0])

    def counters(self) -> dict[str, int]:
        """Persistent counters: ``enqueued.<kind>``, ``delivered``, ``dropped.p<priority>``."""
        return {name: int(value) for name, value in self._db.execute("SELECT name, value FROM counters")}

    def close(self) -> None:
        self._db.close()

    def _recount(self) -> None:
        self._depth = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def _make_room(self) -> int:
        excess = self._depth - self.max_items
        if excess <= 0:
            return 0
        doomed = self._db.execute(
            "SELECT id, priority FROM outbox ORDER BY priority DESC, id LIMIT ?", (excess,)
        ).fetchall()
        self._db.executemany("DELETE FROM outbox WHERE id = ?", [(row[0],) for row in doomed])
        self._bump_many(Counter(f"dropped.p{priority}" for _, priority in doomed).items())
        self._depth -= len(doomed)
        return len(doomed)

    def _bump_many(self, increments: Iterable[tuple[str, int]]) -> None:
        self._db.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            list(increments),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
