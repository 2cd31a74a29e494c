"""The hub's MQTT side: device lifecycle, health and errors in; escalations judged; verdicts out.

Two layers. :class:`MessageHandler` decides what each message means (decode, judge, store, answer) and
knows nothing of MQTT: it is handed a ``publish`` function. :class:`Ingestor` is the thin asyncio shell
around an aiomqtt client: connect, subscribe, read with ``async for``, reconnect with jittered
exponential backoff when the broker goes away.

Bad input never stops the ingest: a message with a bad topic, a malformed payload, a schema error, a
topic it does not belong on, or a window the model cannot take is logged as one line and counted by
reason. Delivery is at least once: an escalation that arrives again is not judged or stored again;
the verdict stored the first time is sent again, so that every copy gets the same answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from cloud_hub.adjudication import Adjudication
from cloud_hub.errors import HubStartupError, JudgeError, PublishError, StoreError, WindowError
from cloud_hub.log import log_event
from cloud_hub.store import Store
from protocol.broker import BrokerSettings
from protocol.codec import decode, encode
from protocol.errors import ProtocolError
from protocol.messages import (
    DeviceBirth,
    DeviceDeath,
    DeviceHealth,
    ErrorCode,
    ErrorEvent,
    Escalation,
    Message,
    Verdict,
    excerpt,
)
from protocol.topics import DEFAULT_ROOT, Kind, Topic, shared, topic_filter

logger = logging.getLogger("edgefleet.hub.ingest")

Publish = Callable[[str, bytes], Awaitable[None]]
"""Hand ``payload`` to the broker for ``topic`` at QoS 1; raises :class:`PublishError`."""

SUBSCRIBED_KINDS = (Kind.BIRTH, Kind.DEATH, Kind.HEALTH, Kind.ERROR)
"""Kinds the hub reads from every site and device (escalations come through the share group)."""


class EscalationAdjudicator(Protocol):
    """What the handler needs to answer escalations (:class:`cloud_hub.adjudication.Adjudicator`)."""

    async def adjudicate(self, escalation: Escalation) -> Adjudication: ...


@dataclass
class IngestCounters:
    """What the ingest has done since it started; read by the demo, the API and tests."""

    received: Counter[str] = field(default_factory=Counter)
    """Messages whose topic parsed, by kind."""
    rejected: Counter[str] = field(default_factory=Counter)
    """Messages dropped as bad input, by reason (a protocol error code, or ``window_mismatch``)."""
    failures: Counter[str] = field(default_factory=Counter)
    """Good messages the hub failed to handle, by stage: ``judge``, ``store``, ``publish``, ``internal``."""
    judged: int = 0
    verdicts_sent: int = 0
    duplicates: int = 0
    """Escalations that had been stored before (their stored verdict was sent again)."""
    connections: int = 0
    """Successful connections to the broker (more than one means it reconnected)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "received": dict(self.received),
            "rejected": dict(self.rejected),
            "failures": dict(self.failures),
            "judged": self.judged,
            "verdicts_sent": self.verdicts_sent,
            "duplicates": self.duplicates,
            "connections": self.connections,
        }


class MessageHandler:
    """What the hub does with each message; no MQTT here (the caller passes a ``publish`` function)."""

    def __init__(
        self,
        *,
        store: Store,
        adjudicator: EscalationAdjudicator,
        counters: IngestCounters | None = None,
        root: str = DEFAULT_ROOT,
        on_adjudication: Callable[[bool], None] | None = None,
    ) -> None:
        self._store = store
        self._adjudicator = adjudicator
        self.counters = counters if counters is not None else IngestCounters()
        self._root = root
        self._on_adjudication = on_adjudication

    def parse(self, topic_name: str, payload: object) -> tuple[Topic, Message] | None:
        """The topic and the message, or ``None`` (logged and counted) if either is bad."""
        try:
            topic = Topic.parse(topic_name, root=self._root)
        except ProtocolError as exc:
            self._reject(exc.code, exc.reason, topic=topic_name)
            return None
        self.counters.received[topic.kind.value] += 1
        if not isinstance(payload, bytes | bytearray):
            self._reject(ErrorCode.MALFORMED_PAYLOAD, "payload is not bytes", topic=topic_name, device_id=topic.device)
            return None
        try:
            message = decode(payload, topic=topic)
        except ProtocolError as exc:
            self._reject(
                exc.code, exc.reason, topic=topic_name, device_id=topic.device, excerpt=excerpt(bytes(payload), 120)
            )
            return None
        return topic, message

    async def handle(self, topic: Topic, message: Message, publish: Publish) -> None:
        """Act on one decoded message. Failures are logged and counted, never raised."""
        try:
            if isinstance(message, Escalation):
                await self._escalation(topic, message, publish)
            elif isinstance(message, DeviceBirth):
                if await self._store.record_birth(message):
                    self._info("device_birth", message, site=topic.site, firmware=message.firmware_version)
            elif isinstance(message, DeviceDeath):
                if await self._store.record_death(message, site=topic.site):
                    self._info("device_death", message, site=topic.site, reason=message.reason)
            elif isinstance(message, DeviceHealth):
                await self._store.record_health(message, site=topic.site)
                log_event(
                    logger, logging.DEBUG, "device_health", device_id=message.device_id, message_id=message.message_id
                )
            elif isinstance(message, ErrorEvent):
                if await self._store.record_error(message, site=topic.site):
                    self._info("device_error", message, site=topic.site, code=message.code.value, reason=message.reason)
            else:
                self._reject("unexpected_kind", f"the hub does not read {message.type!r} messages", topic=str(topic))
        except StoreError as exc:
            self.counters.failures["store"] += 1
            self._error("store_failed", message, reason=str(exc))

    async def _escalation(self, topic: Topic, escalation: Escalation, publish: Publish) -> None:
        try:
            adjudication = await self._adjudicator.adjudicate(escalation)
        except WindowError as exc:
            self._reject(
                exc.code, str(exc), topic=str(topic), device_id=escalation.device_id, message_id=escalation.message_id
            )
            return
        except JudgeError as exc:
            self.counters.failures["judge"] += 1
            self._error("judge_failed", escalation, reason=str(exc))
            return
        self._count(adjudication, escalation, site=topic.site)
        if self._on_adjudication is not None:
            self._on_adjudication(adjudication.duplicate)
        await self.send_verdict(topic.sibling(Kind.VERDICT), adjudication.verdict, publish)

    def _count(self, adjudication: Adjudication, escalation: Escalation, *, site: str) -> None:
        if adjudication.duplicate:
            self.counters.duplicates += 1
            self._info("escalation_duplicate", escalation, site=site)
        else:
            self.counters.judged += 1

    async def send_verdict(self, topic: Topic, verdict: Verdict, publish: Publish) -> None:
        """Publish a verdict to its device; a failure is logged and counted, not raised."""
        try:
            await publish(str(topic), encode(verdict))
        except PublishError as exc:
            self.counters.failures["publish"] += 1
            self._error("verdict_not_sent", verdict, escalation_id=verdict.escalation_id, reason=str(exc))
            return
        self.counters.verdicts_sent += 1
        self._info(
            "verdict_sent",
            verdict,
            escalation_id=verdict.escalation_id,
            label=verdict.cloud.label,
            confidence=round(verdict.cloud.confidence, 4),
            agrees=verdict.agrees_with_edge,
        )

    def _reject(self, reason: str, detail: str, **fields: object) -> None:
        self.counters.rejected[str(reason)] += 1
        log_event(logger, logging.WARNING, "message_rejected", reason=str(reason), detail=detail, **fields)

    @staticmethod
    def _info(event: str, message: Message, **fields: object) -> None:
        log_event(logger, logging.INFO, event, device_id=message.device_id, message_id=message.message_id, **fields)

    @staticmethod
    def _error(event: str, message: Message, **fields: object) -> None:
        log_event(logger, logging.ERROR, event, device_id=message.device_id, message_id=message.message_id, **fields)


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": each delay is between half and all of its ceiling."""

    initial_s: float = 0.5
    maximum_s: float = 30.0
    factor: float = 2.0
    jitter: Callable[[], float] = random.random
    _ceiling: float = field(default=0.0, init=False)

    def next_delay(self) -> float:
        self._ceiling = self.initial_s if self._ceiling == 0.0 else min(self.maximum_s, self._ceiling * self.factor)
        return self._ceiling / 2 * (1.0 + self.jitter())

    def reset(self) -> None:
        self._ceiling = 0.0


def subscriptions(*, root: str = DEFAULT_ROOT, share_group: str | None = "hub") -> list[str]:
    """The filters the hub subscribes to: lifecycle, health and errors of all devices; escalations shared."""
    filters = [topic_filter(kind, root=root) for kind in SUBSCRIBED_KINDS]
    filters.append(shared(share_group, topic_filter(Kind.ESCALATION, root=root)))
    return filters


class Ingestor:
    """The MQTT shell around a :class:`MessageHandler`; an async context manager owning its tasks.

    Escalations are handled concurrently (so that the judge can batch them), at most ``max_in_flight``
    at a time: beyond that the ingestor stops reading until one finishes (the backpressure knob).
    Lifecycle, health and error messages are handled in arrival order.
    """

    def __init__(
        self,
        *,
        broker: BrokerSettings,
        store: Store,
        adjudicator: EscalationAdjudicator,
        share_group: str | None = "hub",
        client_id: str | None = None,
        max_in_flight: int = 64,
        backoff: Backoff | None = None,
        on_adjudication: Callable[[bool], None] | None = None,
    ) -> None:
        self._broker = broker
        self._share_group = share_group
        self.client_id = client_id or f"hub-{secrets.token_hex(4)}"
        self.handler = MessageHandler(
            store=store, adjudicator=adjudicator, root=broker.root, on_adjudication=on_adjudication
        )
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._backoff = backoff or Backoff()
        self._subscribed = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._children: set[asyncio.Task[None]] = set()
        self._publish: Publish | None = None

    async def publish(self, topic_name: str, payload: bytes) -> None:
        """Publish at QoS 1 on the ingest's connection; :class:`PublishError` while it is down."""
        if self._publish is None:
            raise PublishError(f"not connected to the MQTT broker {self._broker.url}; {topic_name} not sent")
        await self._publish(topic_name, payload)

    @property
    def counters(self) -> IngestCounters:
        return self.handler.counters

    @property
    def root(self) -> str:
        """The topic root the ingest reads and writes under."""
        return self._broker.root

    @property
    def subscribed(self) -> bool:
        """Connected to the broker and subscribed."""
        return self._subscribed.is_set()

    async def wait_subscribed(self, timeout_s: float) -> None:
        """Return once subscribed; raise :class:`HubStartupError` after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._subscribed.wait()
        except TimeoutError:
            raise HubStartupError(
                f"the hub could not subscribe at the MQTT broker {self._broker.url} within {timeout_s} s"
            ) from None

    async def __aenter__(self) -> Ingestor:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._spawn(self._run(), name="hub-ingest")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tasks is not None, "not entered"
        for task in list(self._children):
            task.cancel()
        try:
            await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            self._tasks = None
            self._subscribed.clear()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], *, name: str) -> None:
        assert self._tasks is not None
        task = self._tasks.create_task(coroutine, name=name)
        self._children.add(task)
        task.add_done_callback(self._children.discard)

    async def _run(self) -> None:
        while True:
            try:
                async with self._client() as client:
                    await self._subscribe(client)
                    self._backoff.reset()
                    self.counters.connections += 1
                    self._subscribed.set()
                    log_event(
                        logger,
                        logging.INFO,
                        "broker_connected",
                        broker=self._broker.url,
                        client_id=self.client_id,
                        share_group=self._share_group,
                    )
                    publish = self._publish = self._publisher(client)
                    try:
                        async for message in client.messages:
                            await self._dispatch(message, publish)
                    finally:
                        self._publish = None
            except aiomqtt.MqttError as exc:
                reason = str(exc)
            except Exception as exc:  # a bug must not end the ingest for good; log it loudly, then retry
                logger.exception("ingest_crashed broker=%s", self._broker.url)
                reason = repr(exc)
            self._subscribed.clear()
            self._publish = None
            delay = self._backoff.next_delay()
            log_event(
                logger,
                logging.WARNING,
                "broker_unavailable",
                broker=self._broker.url,
                reason=reason,
                retry_in_s=round(delay, 2),
            )
            await asyncio.sleep(delay)

    def _client(self) -> aiomqtt.Client:
        broker = self._broker
        tls = (
            aiomqtt.TLSParameters(ca_certs=broker.ca_file, certfile=broker.cert_file, keyfile=broker.key_file)
            if broker.tls
            else None
        )
        return aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=self.client_id,
            username=broker.username,
            password=broker.password.get_secret_value() if broker.password is not None else None,
            keepalive=broker.keepalive_s,
            tls_params=tls,
        )

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        filters = subscriptions(root=self._broker.root, share_group=self._share_group)
        granted: Sequence[int | ReasonCode] = await client.subscribe([(name, 1) for name in filters])
        for name, code in zip(filters, granted, strict=False):
            # MQTT 3.1.1 grants a QoS (0x80 is a refusal); MQTT 5 answers with reason codes.
            refused = code >= 0x80 if isinstance(code, int) else code.is_failure
            if refused:
                log_event(logger, logging.ERROR, "subscription_refused", topic=name, code=str(code))

    @staticmethod
    def _publisher(client: aiomqtt.Client) -> Publish:
        async def publish(topic_name: str, payload: bytes) -> None:
            try:
                await client.publish(topic_name, payload, qos=1)
            except aiomqtt.MqttError as exc:
                raise PublishError(f"could not publish to {topic_name}: {exc}") from exc

        return publish

    async def _dispatch(self, message: aiomqtt.Message, publish: Publish) -> None:
        parsed = self.handler.parse(message.topic.value, message.payload)
        if parsed is None:
            return
        topic, decoded = parsed
        if isinstance(decoded, Escalation):
            await self._in_flight.acquire()
            task_name = f"hub-escalation-{decoded.message_id}"
            self._spawn(self._guarded(topic, decoded, publish, release=True), name=task_name)
        else:
            await self._guarded(topic, decoded, publish, release=False)

    async def _guarded(self, topic: Topic, message: Message, publish: Publish, *, release: bool) -> None:
        try:
            await self.handler.handle(topic, message, publish)
        except Exception:  # one message must never end the ingest
            self.counters.failures["internal"] += 1
            logger.exception("handling_failed device_id=%s message_id=%s", message.device_id, message.message_id)
        finally:
            if release:
                self._in_flight.release()
