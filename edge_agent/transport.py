"""What the agent needs of a message broker, the real one over MQTT, and an in-memory fake.

A :class:`Session` is one connection: subscribe, publish, and an async iterator of arriving
messages. :func:`mqtt_session` opens one on a real broker through aiomqtt; :class:`InMemoryBroker`
serves the same interface inside the process for fast tests.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from protocol.broker import BrokerSettings
from protocol.topics import matches


class TransportError(Exception):
    """The connection to the broker failed or was lost."""


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class Session(Protocol):
    async def subscribe(self, filters: list[str], qos: int = 1) -> None: ...

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None: ...

    def messages(self) -> AsyncIterator[Incoming]: ...


Connect = Callable[[], AbstractAsyncContextManager[Session]]


class _MqttSession:
    def __init__(self, client: object) -> None:
        import aiomqtt

        assert isinstance(client, aiomqtt.Client)
        self._client = client

    async def subscribe(self, filters: list[str], qos: int = 1) -> None:
        import aiomqtt

        try:
            await self._client.subscribe([(topic, qos) for topic in filters])
        except aiomqtt.MqttError as exc:
            raise TransportError(str(exc)) from exc

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        import aiomqtt

        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            raise TransportError(str(exc)) from exc

    async def messages(self) -> AsyncIterator[Incoming]:
        import aiomqtt

        try:
            async for message in self._client.messages:
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload).encode()
                yield Incoming(topic=message.topic.value, payload=data)
        except aiomqtt.MqttError as exc:
            raise TransportError(str(exc)) from exc


def mqtt_connector(
    broker: BrokerSettings, *, client_id: str, will: Will | None = None, clean_session: bool = True
) -> Connect:
    """A function that opens an aiomqtt session on ``broker`` each time it is called."""

    @asynccontextmanager
    async def connect() -> AsyncIterator[Session]:
        import aiomqtt

        context = None
        if broker.tls:
            context = ssl.create_default_context(cafile=broker.ca_file)
            if broker.cert_file:
                context.load_cert_chain(broker.cert_file, broker.key_file)
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=client_id,
            username=broker.username,
            password=broker.password.get_secret_value() if broker.password else None,
            keepalive=broker.keepalive_s,
            clean_session=clean_session,
            will=aiomqtt.Will(will.topic, will.payload, qos=will.qos, retain=will.retain) if will else None,
            tls_context=context,
            # Unbounded: paho acknowledges a QoS 1 message when it arrives, so a bounded queue would drop
            # acknowledged readings when a backlog arrives at once. The broker's per-client queue
            # (max_queued_messages) bounds what can pile up here.
            max_queued_incoming_messages=0,
        )
        try:
            async with client:
                yield _MqttSession(client)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"MQTT connection to {broker.url} failed: {exc}") from exc

    return connect


@dataclass
class _FakeSession:
    broker: InMemoryBroker
    client_id: str
    queue: asyncio.Queue[Incoming] = field(default_factory=asyncio.Queue)
    filters: list[str] = field(default_factory=list)
    connected: bool = True

    async def subscribe(self, filters: list[str], qos: int = 1) -> None:
        self.filters.extend(filters)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        if not self.connected or not self.broker.online:
            raise TransportError("in-memory broker is offline")
        self.broker.deliver(Incoming(topic, payload))

    async def messages(self) -> AsyncIterator[Incoming]:
        while True:
            message = await self.queue.get()
            if not self.connected:
                raise TransportError("in-memory broker went offline")
            yield message


class InMemoryBroker:
    """A fake broker for unit tests: topic filters, QoS ignored, and an on/off switch."""

    def __init__(self) -> None:
        self.online = True
        self.sessions: list[_FakeSession] = []
        self.published: list[Incoming] = []

    def deliver(self, message: Incoming) -> None:
        self.published.append(message)
        for session in self.sessions:
            if session.connected and any(matches(f, message.topic) for f in session.filters):
                session.queue.put_nowait(message)

    def connector(self, client_id: str) -> Connect:
        @asynccontextmanager
        async def connect() -> AsyncIterator[Session]:
            if not self.online:
                raise TransportError("in-memory broker is offline")
            session = _FakeSession(self, client_id)
            self.sessions.append(session)
            try:
                yield session
            finally:
                session.connected = False
                self.sessions.remove(session)

        return connect

    def take_offline(self) -> None:
        self.online = False
        for session in self.sessions:
            session.connected = False
            session.queue.put_nowait(Incoming("", b""))
