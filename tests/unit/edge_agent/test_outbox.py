from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from edge_agent.outbox import Envelope, Outbox, OutboxError


def envelope(n: int, priority: int = 5, kind: str = "escalation") -> Envelope:
    return Envelope(topic=f"t/{n}", payload=f"m{n}".encode(), qos=1, priority=priority, kind=kind)


def test_fifo_within_a_priority_most_urgent_first(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    outbox.put([envelope(1, 5), envelope(2, 9), envelope(3, 0), envelope(4, 5)])
    assert [s.topic for s in outbox.peek(10)] == ["t/3", "t/1", "t/4", "t/2"]
    assert outbox.depth == 4
    outbox.ack([s.id for s in outbox.peek(2)])
    assert [s.topic for s in outbox.peek(10)] == ["t/4", "t/2"]
    assert outbox.counters() == {"enqueued.escalation": 4, "delivered": 2}


def test_when_full_the_lowest_priority_and_oldest_go_first(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_items=3)
    assert outbox.put([envelope(1, 9, "inference"), envelope(2, 9, "inference"), envelope(3, 2)]) == 0
    assert outbox.put([envelope(4, 5), envelope(5, 6, "error")]) == 2
    assert [s.topic for s in outbox.peek(10)] == ["t/3", "t/4", "t/5"]
    assert outbox.put([envelope(6, 0)]) == 1  # the error (priority 6) makes room for the urgent one
    assert [s.topic for s in outbox.peek(10)] == ["t/6", "t/3", "t/4"]
    assert outbox.counters()["dropped.p9"] == 2
    assert outbox.counters()["dropped.p6"] == 1
    assert outbox.depth == 3


def test_acknowledging_twice_or_unknown_ids_changes_nothing(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    outbox.put([envelope(1)])
    stored = outbox.peek(1)[0]
    outbox.ack([stored.id])
    outbox.ack([stored.id, 12345])
    assert outbox.depth == 0
    assert outbox.counters()["delivered"] == 1


def _fill_and_die(path: str) -> None:
    outbox = Outbox(path)
    outbox.put([envelope(n) for n in range(100)])
    outbox.ack([s.id for s in outbox.peek(10)])
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no clean exit


def test_contents_and_counters_survive_a_killed_process(tmp_path: Path) -> None:
    path = str(tmp_path / "o.db")
    process = multiprocessing.get_context("spawn").Process(target=_fill_and_die, args=(path,))
    process.start()
    process.join(30)
    assert process.exitcode == -signal.SIGKILL
    outbox = Outbox(path)
    assert outbox.depth == 90
    assert outbox.peek(1)[0].topic == "t/10"
    assert outbox.counters() == {"enqueued.escalation": 100, "delivered": 10}


def test_an_unusable_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(OutboxError, match="cannot open the outbox"):
        Outbox(tmp_path / "dir.db")


def test_a_message_awaiting_its_reply_is_sent_again_until_the_reply_settles_it(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    escalation = Envelope(topic="esc", payload=b"e", qos=1, priority=2, kind="escalation", message_id="e1",
                          awaits_reply=True)  # fmt: skip
    outbox.put([escalation, envelope(2, kind="inference")])
    outbox.ack([s.id for s in outbox.peek(10, now=100.0, retry_after_s=30.0)], now=100.0)
    assert outbox.depth == 1  # the escalation stays until its verdict
    assert outbox.unsent() == 0
    assert outbox.next_retry() == 100.0
    assert outbox.peek(10, now=120.0, retry_after_s=30.0) == []
    assert [s.topic for s in outbox.peek(10, now=131.0, retry_after_s=30.0)] == ["esc"]
    assert outbox.settle(["e1", "unknown"]) == 1
    assert outbox.depth == 0
    assert outbox.next_retry() is None
    assert outbox.counters()["delivered"] == 2
