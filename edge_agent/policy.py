"""The escalation policy: which windows go to the hub, and which rule said so."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_agent.settings import PolicySettings
from protocol.messages import EscalationReason, Outcome


@dataclass(frozen=True, slots=True)
class Decision:
    escalate: bool
    reasons: tuple[EscalationReason, ...]
    priority: int
    over_budget: bool = False
    same_episode: bool = False

    @property
    def rule(self) -> str:
        """The rule that decided, for logs and counters."""
        if self.over_budget:
            return "over_budget"
        if self.same_episode:
            return "same_episode"
        return self.reasons[0].value if self.reasons else "confident"


@dataclass(slots=True)
class _Episode:
    """Consecutive windows of a stream that fire the same rule."""

    reason: EscalationReason
    last_escalated: float


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(slots=True)
class EscalationPolicy:
    """Fires rules on an outcome; a token bucket per device bounds the escalation rate."""

    settings: PolicySettings
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _episodes: dict[tuple[str, str], _Episode] = field(default_factory=dict)

    def decide(self, device: str, stream: str, outcome: Outcome, now: float) -> Decision:
        settings = self.settings
        reasons: list[EscalationReason] = []
        if outcome.label in settings.critical_labels:
            reasons.append(EscalationReason.CRITICAL_RULE)
        if outcome.anomaly_score > settings.max_anomaly_score:
            reasons.append(EscalationReason.ANOMALY)
        if outcome.confidence < settings.min_confidence:
            reasons.append(EscalationReason.LOW_CONFIDENCE)
        key = (device, stream)
        if not reasons:
            self._episodes.pop(key, None)  # a window without a rule firing ends the episode
            return Decision(escalate=False, reasons=(), priority=9)
        priority = {EscalationReason.CRITICAL_RULE: 0, EscalationReason.ANOMALY: 2}.get(reasons[0], 5)
        episode = self._episodes.get(key)
        reminder = settings.episode_reminder_s
        if (
            episode is not None
            and reminder > 0
            and episode.reason is reasons[0]
            and now - episode.last_escalated < reminder
        ):
            return Decision(escalate=False, reasons=tuple(reasons), priority=priority, same_episode=True)
        # Critical events are never held back by the budget.
        if reasons[0] is not EscalationReason.CRITICAL_RULE and not self._take(device, now):
            return Decision(escalate=False, reasons=tuple(reasons), priority=priority, over_budget=True)
        self._episodes[key] = _Episode(reason=reasons[0], last_escalated=now)
        return Decision(escalate=True, reasons=tuple(reasons), priority=priority)

    def _take(self, device: str, now: float) -> bool:
        rate = self.settings.max_escalations_per_minute / 60.0
        capacity = float(max(1, self.settings.max_escalations_per_minute))
        if rate == 0:
            return False
        bucket = self._buckets.get(device)
        if bucket is None:
            bucket = self._buckets[device] = _Bucket(tokens=capacity, updated=now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False
