"""The agent's logic without I/O: bytes from a topic in, messages to publish out.

validate → window → (micro-batch) infer → decide → escalate. The asyncio shell in
:mod:`edge_agent.agent` feeds it and publishes what it returns.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edge_agent.errors import InferenceError
from edge_agent.model import LoadedModel
from edge_agent.outbox import Envelope
from edge_agent.policy import EscalationPolicy
from edge_agent.settings import AgentSettings
from edge_agent.validation import Validator
from edge_agent.windowing import ReadyWindow, StreamKey, Windower
from protocol.codec import decode, encode
from protocol.errors import ProtocolError, TopicError
from protocol.escalations import EscalationLedger
from protocol.messages import (
    Command,
    ErrorCode,
    ErrorEvent,
    Escalation,
    InferenceResult,
    Message,
    TelemetryBatch,
    TelemetryReading,
    Verdict,
    Window,
    derived_message_id,
    excerpt,
    new_message_id,
)
from protocol.topics import Kind, Topic

log = logging.getLogger("edgefleet.agent")


# Priorities in the outbox (0 is the most urgent); escalations carry the policy's own (0-5).
ERROR_PRIORITY = 6
RESULT_PRIORITY = 9


LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class Histogram:
    """Counts per upper bound (the last slot counts what exceeds every bound), and their sum."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class AgentStats:
    """What the agent has done, for metrics, the demo's table and tests."""

    messages: int = 0
    telemetry_messages: int = 0
    readings: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    unmodelled: int = 0
    windows: int = 0
    batches: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    escalations: int = 0
    verdicts: int = 0
    agreements: int = 0
    inference_failures: int = 0
    inferences: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """Windows inferred, by (model, version, backend)."""
    inference_seconds: Histogram = field(default_factory=Histogram)
    """Time to run one batch."""
    decision_seconds: Histogram = field(default_factory=Histogram)
    """From the reading that completed a window to the decision on it."""
    windows_by_model: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures_by_model: Counter[tuple[str, str]] = field(default_factory=Counter)
    verdicts_by_model: Counter[tuple[str, str]] = field(default_factory=Counter)
    agreements_by_model: Counter[tuple[str, str]] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    feeds: dict[str, Counter[str]] = field(default_factory=dict)
    """Per local source (camera, microphone): what it read, gated and inferred, by outcome."""

    def agreement_rate(self, model: tuple[str, str]) -> float | None:
        """How often the hub agreed with this model's escalated windows (``None`` before any verdict)."""
        verdicts = self.verdicts_by_model[model]
        return self.agreements_by_model[model] / verdicts if verdicts else None

    @property
    def rejections(self) -> int:
        return sum(self.rejected.values())


class Pipeline:
    def __init__(
        self, settings: AgentSettings, model: LoadedModel, *, monotonic: Callable[[], float] = time.perf_counter
    ) -> None:
        self.settings = settings
        self.model = model
        self.stats = AgentStats()
        self.validator = Validator(settings.validation)
        self.windower = Windower(size=model.window_size, hop=model.hop)
        self.policy = EscalationPolicy(settings.policy)
        self.ledger = EscalationLedger()
        self.commands: deque[Command] = deque()
        self.settled: deque[str] = deque()
        """Escalations whose verdicts came: the outbox can forget them."""
        self._pending: deque[tuple[ReadyWindow, float]] = deque()
        self._monotonic = monotonic

    @property
    def pending(self) -> int:
        """Windows ready and waiting to be inferred."""
        return len(self._pending)

    def handle(self, topic: str, payload: bytes, now: float) -> list[Envelope]:
        """Take one arriving message; return what to publish (error events)."""
        self.stats.messages += 1
        try:
            parsed = Topic.parse(topic, root=self.settings.broker.root)
        except TopicError as exc:
            self.stats.rejected[exc.code] += 1
            log.warning("rejected topic=%s code=%s reason=%s", topic, exc.code, exc.reason)
            return []
        if parsed.kind is Kind.TELEMETRY:
            self.stats.telemetry_messages += 1
            return self._telemetry(parsed, payload, now)
        if parsed.kind is Kind.VERDICT:
            return self._verdict(parsed, payload, now)
        if parsed.kind is Kind.COMMAND:
            self._command(parsed, payload)
        return []

    def _command(self, topic: Topic, payload: bytes) -> None:
        try:
            command = decode(payload, topic=topic)
        except ProtocolError as exc:
            self.stats.rejected[exc.code] += 1
            log.warning("rejected command topic=%s code=%s reason=%s", topic, exc.code, exc.reason)
            return
        assert isinstance(command, Command)
        self.stats.commands[command.name.value] += 1
        self.commands.append(command)

    def set_model(self, model: LoadedModel) -> None:
        """Swap the model between batches. Windows in progress are kept when the input spec allows."""
        old = self.model.manifest.input
        new = model.manifest.input
        if (old.window_size, old.hop, old.sensor, old.unit) != (new.window_size, new.hop, new.sensor, new.unit):
            self.windower = Windower(size=model.window_size, hop=model.hop)
            self._pending.clear()
        self.model = model

    def _telemetry(self, topic: Topic, payload: bytes, now: float) -> list[Envelope]:
        try:
            message = decode(payload, topic=topic)
        except ProtocolError as exc:
            return [self._reject(topic, ErrorCode(exc.code), exc.reason, payload, now)]
        assert isinstance(message, TelemetryReading | TelemetryBatch)  # decode checked the topic's kind
        values = [message.value] if isinstance(message, TelemetryReading) else list(message.values)
        self.stats.readings += len(values)
        rejection = self.validator.check(message, now)
        if rejection is not None:
            return [self._reject(topic, rejection.code, rejection.reason, payload, now, message)]
        spec = self.model.manifest.input
        if message.sensor is not spec.sensor:
            self.stats.unmodelled += len(values)
            return []
        if message.unit != spec.unit:
            reason = f"unit {message.unit!r} is not the model's input unit {spec.unit!r}"
            return [self._reject(topic, ErrorCode.UNIT_MISMATCH, reason, payload, now, message)]
        key = StreamKey(site=topic.site, device=message.device_id, stream=message.stream)
        started = self._monotonic()
        for window in self.windower.add(key, message.sensor, message.unit, message.seq, values, now):
            self._pending.append((window, started))
        return []

    def _verdict(self, topic: Topic, payload: bytes, now: float) -> list[Envelope]:
        try:
            verdict = decode(payload, topic=topic)
        except ProtocolError as exc:
            self.stats.rejected[exc.code] += 1
            log.warning("rejected verdict topic=%s code=%s reason=%s", topic, exc.code, exc.reason)
            return []
        assert isinstance(verdict, Verdict)
        # The escalation has arrived, whether or not this run of the agent sent it.
        self.settled.append(verdict.escalation_id)
        resolution = self.ledger.resolve(verdict, now)
        if resolution is None:
            return []
        self.stats.verdicts += 1
        self.stats.agreements += resolution.agrees
        edge = resolution.escalation.edge
        self.stats.verdicts_by_model[(edge.model, edge.model_version)] += 1
        self.stats.agreements_by_model[(edge.model, edge.model_version)] += resolution.agrees
        log.info(
            "verdict device_id=%s message_id=%s escalation=%s label=%s agrees=%s",
            verdict.device_id,
            verdict.message_id,
            verdict.escalation_id,
            verdict.cloud.label,
            resolution.agrees,
        )
        return []

    def infer_pending(self, now: float) -> list[Envelope]:
        """Infer up to ``max_batch`` waiting windows in one batch; return results and escalations."""
        batch = [self._pending.popleft() for _ in range(min(self.settings.max_batch, len(self._pending)))]
        return self._infer(batch, self.model, now)

    def infer_local(self, windows: Sequence[ReadyWindow], model: LoadedModel, now: float) -> list[Envelope]:
        """Infer windows of a local source (camera, microphone) with that source's model, in one batch.

        They are decided, escalated, published and counted exactly as windows from the sensor feed.
        """
        started = self._monotonic()
        return self._infer([(window, started) for window in windows], model, now)

    def _infer(self, batch: list[tuple[ReadyWindow, float]], model: LoadedModel, now: float) -> list[Envelope]:
        if not batch:
            return []
        began = self._monotonic()
        try:
            outcomes = model.infer([window.values for window, _ in batch])
        except InferenceError as exc:
            self.stats.inference_failures += len(batch)
            self.stats.failures_by_model[(model.manifest.name, model.manifest.version)] += len(batch)
            window = batch[0][0]
            log.error("inference failed device_id=%s reason=%s", window.key.device, exc)
            topic = Topic(site=window.key.site, device=window.key.device, kind=Kind.TELEMETRY, stream=window.key.stream)
            return [self._reject(topic, ErrorCode.INFERENCE_FAILED, str(exc), b"", now)]
        finished = self._monotonic()
        self.stats.batches += 1
        self.stats.inference_seconds.observe(finished - began)
        self.stats.inferences[(model.manifest.name, model.manifest.version, model.backend.name)] += len(batch)
        self.stats.windows_by_model[(model.manifest.name, model.manifest.version)] += len(batch)
        out: list[Envelope] = []
        for (window, started), outcome in zip(batch, outcomes, strict=True):
            self.stats.windows += 1
            latency_s = finished - started
            self.stats.decision_seconds.observe(latency_s)
            self.stats.decisions[outcome.label] += 1
            key = window.key
            decision = self.policy.decide(key.device, key.stream, outcome, now)
            self.stats.rules[decision.rule] += 1
            # Ids derive from the window, so a window decided again after a restart keeps its ids.
            window_ref = (key.device, key.stream, window.start_seq, outcome.model, outcome.model_version)
            if self.settings.publish_results:
                result = InferenceResult(
                    message_id=derived_message_id("inference", *window_ref),
                    device_id=key.device,
                    timestamp=now,
                    stream=key.stream,
                    window_start_seq=window.start_seq,
                    window_size=len(window.values),
                    outcome=outcome,
                    escalated=decision.escalate,
                    latency_ms=latency_s * 1000.0,
                )
                out.append(
                    self._envelope(key, Kind.INFERENCE, result, qos=0, priority=RESULT_PRIORITY, stream=key.stream)
                )
            if decision.escalate:
                escalation = Escalation(
                    message_id=derived_message_id("escalation", *window_ref),
                    device_id=key.device,
                    timestamp=now,
                    site=key.site,
                    window=Window(
                        stream=key.stream,
                        sensor=window.sensor,
                        unit=window.unit,
                        start_seq=window.start_seq,
                        sample_rate_hz=model.manifest.input.sample_rate_hz,
                        values=list(window.values),
                    ),
                    edge=outcome,
                    reasons=list(decision.reasons),
                    priority=decision.priority,
                )
                self.ledger.sent(escalation, now)
                self.stats.escalations += 1
                log.info(
                    "escalated device_id=%s message_id=%s rule=%s label=%s confidence=%.3f anomaly=%.2f",
                    key.device,
                    escalation.message_id,
                    decision.rule,
                    outcome.label,
                    outcome.confidence,
                    outcome.anomaly_score,
                )
                out.append(
                    self._envelope(
                        key, Kind.ESCALATION, escalation, qos=1, priority=decision.priority, awaits_reply=True
                    )
                )
        return out

    def flush(self, now: float) -> list[Envelope]:
        """Infer every waiting window (at shutdown)."""
        out: list[Envelope] = []
        while self._pending:
            out.extend(self.infer_pending(now))
        return out

    def _envelope(
        self,
        key: StreamKey,
        kind: Kind,
        message: Message,
        *,
        qos: int,
        priority: int,
        stream: str | None = None,
        awaits_reply: bool = False,
    ) -> Envelope:
        topic = Topic(site=key.site, device=key.device, kind=kind, stream=stream, root=self.settings.broker.root)
        return Envelope(
            topic=str(topic),
            payload=encode(message),
            qos=qos,
            priority=priority,
            kind=kind.value,
            message_id=message.message_id,
            awaits_reply=awaits_reply,
        )

    def _reject(
        self,
        topic: Topic,
        code: ErrorCode,
        reason: str,
        payload: bytes,
        now: float,
        message: TelemetryReading | TelemetryBatch | None = None,
    ) -> Envelope:
        self.stats.rejected[code.value] += 1
        log.warning(
            "rejected device_id=%s message_id=%s code=%s reason=%s",
            topic.device,
            message.message_id if message else "-",
            code.value,
            reason,
        )
        event = ErrorEvent(
            message_id=derived_message_id("error", topic.device, message.message_id, code.value)
            if message
            else new_message_id(),
            device_id=topic.device,
            timestamp=now,
            code=code,
            reason=reason[:1024],
            topic=str(topic)[:512],
            stream=topic.stream,
            offending_id=message.message_id if message else None,
            payload_excerpt=excerpt(payload),
        )
        error_topic = topic.sibling(Kind.ERROR)
        return Envelope(
            topic=str(error_topic), payload=encode(event), qos=1, priority=ERROR_PRIORITY, kind=Kind.ERROR.value
        )
