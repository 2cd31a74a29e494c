"""Escalation and verdict bookkeeping, as a pure state machine (no clock, no I/O).

The edge records every escalation it sends; a verdict resolves it. Escalations still open after a
deadline are reported so the sender can count them or send them again (delivery is at least once;
the hub stores each escalation once, keyed by its message id).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.messages import Escalation, Verdict


@dataclass(frozen=True, slots=True)
class Resolution:
    escalation: Escalation
    verdict: Verdict
    round_trip_s: float

    @property
    def agrees(self) -> bool:
        return self.verdict.agrees_with_edge


@dataclass(slots=True)
class EscalationLedger:
    """Open escalations by message id, with the time each was sent."""

    capacity: int = 10_000
    _open: dict[str, tuple[Escalation, float]] = field(default_factory=dict)
    _recent: dict[str, None] = field(default_factory=dict)
    resolved: int = 0
    duplicates: int = 0
    unknown: int = 0
    evicted: int = 0

    def sent(self, escalation: Escalation, now: float) -> None:
        if len(self._open) >= self.capacity:
            oldest = next(iter(self._open))
            del self._open[oldest]
            self.evicted += 1
        self._open[escalation.message_id] = (escalation, now)

    def resolve(self, verdict: Verdict, now: float) -> Resolution | None:
        """Match a verdict to its escalation; ``None`` for a repeated or unknown verdict (counted)."""
        entry = self._open.pop(verdict.escalation_id, None)
        if entry is None:
            if verdict.escalation_id in self._recent:
                self.duplicates += 1
            else:
                self.unknown += 1
            return None
        escalation, sent_at = entry
        self.resolved += 1
        self._remember(verdict.escalation_id)
        return Resolution(escalation=escalation, verdict=verdict, round_trip_s=max(0.0, now - sent_at))

    def overdue(self, now: float, timeout_s: float) -> list[Escalation]:
        """Escalations sent more than ``timeout_s`` ago and still without a verdict."""
        return [esc for esc, sent_at in self._open.values() if now - sent_at > timeout_s]

    @property
    def open(self) -> int:
        return len(self._open)

    def _remember(self, escalation_id: str) -> None:
        self._recent[escalation_id] = None
        if len(self._recent) > self.capacity:
            del self._recent[next(iter(self._recent))]
