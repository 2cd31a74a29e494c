"""An MQTT session carrying simulated firmware: one device (client id = device id, Last Will = its
death) or many multiplexed over one connection for load generation.

The session owns reconnection (jittered exponential backoff) and moves each device's outbox to the
broker: a birth first after every connect, then the backlog in order. QoS 1 messages stay in flight
until the broker's PUBACK; when the connection breaks they return to the head of their device's
outbox, so nothing the firmware queued is lost (the broker may see one twice, as QoS 1 allows).
Writes are coalesced: all that is ready in one turn of the event loop goes out in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence

from firmware_sim import packets
from firmware_sim.firmware import DeviceFirmware, Outgoing
from protocol.broker import BrokerSettings
from protocol.errors import ProtocolError
from protocol.topics import Topic

log = logging.getLogger("edgefleet.sim")

# Past this many bytes waiting in the socket's buffer, the session stops writing until it drains.
HIGH_WATER_BYTES = 4 * 1024 * 1024


class ConnectionRefusedByBrokerError(ConnectionError):
    """The broker answered CONNECT with a refusal."""


class _Wire(asyncio.Protocol):
    def __init__(self, session: MqttSession) -> None:
        self.session = session
        self.reader = packets.PacketReader()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER_BYTES)

    def data_received(self, data: bytes) -> None:
        try:
            for packet in self.reader.feed(data):
                self.session._received(packet)
        except packets.PacketError as exc:
            log.warning("broker_protocol_error client_id=%s reason=%s", self.session.client_id, exc)
            assert self.transport is not None
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.session._lost()

    def pause_writing(self) -> None:
        self.session.paused = True

    def resume_writing(self) -> None:
        self.session.paused = False
        self.session._schedule_drain()


class MqttSession:
    """``await session.run()`` keeps the session up until cancelled; :meth:`close` ends it cleanly."""

    def __init__(
        self,
        *,
        client_id: str,
        broker: BrokerSettings,
        devices: Sequence[DeviceFirmware],
        now: Callable[[], float],
        with_will: bool,
        subscriptions: Sequence[str] = (),
        on_command: Callable[[str, bytes], None] | None = None,
        max_inflight: int = 10_000,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        seed: int = 0,
        connect_gate: asyncio.Semaphore | None = None,
    ) -> None:
        self.client_id = client_id
        self.broker = broker
        self.devices = list(devices)
        self.by_id = {device.device_id: device for device in self.devices}
        self.now = now
        self.with_will = with_will
        self.subscriptions = list(subscriptions)
        self.on_command = on_command
        self.max_inflight = min(max_inflight, 65_535)
        self.backoff_s = backoff_s
        # Thousands of sessions connecting in the same instant overflow the broker's listen backlog
        # (SYNs dropped, retried seconds later); a gate shared by the fleet spreads them out.
        self.connect_gate = connect_gate
        self.connected = asyncio.Event()
        self.paused = False
        self.connects = 0
        self._rng = random.Random(seed)
        self._wire: _Wire | None = None
        self._ready: deque[DeviceFirmware] = deque()
        self._ready_ids: set[int] = set()
        self._inflight: dict[int, tuple[DeviceFirmware, Outgoing]] = {}
        self._next_id = 0
        self._drain_scheduled = False
        self._connack: asyncio.Future[int] | None = None
        self._closing = False
        self._acked = asyncio.Event()
        self._topics: dict[str, bytes] = {}
        self._last_sent = 0.0
        self._last_received = 0.0
        for device in self.devices:
            device.on_queued = self.wake

    # --- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = self.backoff_s[0]
        while not self._closing:
            try:
                await self._serve()
                backoff = self.backoff_s[0]
            except (OSError, TimeoutError, ConnectionError) as exc:
                log.debug("connect_failed client_id=%s reason=%s", self.client_id, exc)
            if self._closing:
                return
            delay = backoff * self._rng.uniform(0.5, 1.5)
            backoff = min(backoff * 2.0, self.backoff_s[1])
            await asyncio.sleep(delay)

    async def _serve(self) -> None:
        wire = _Wire(self)
        if self.connect_gate is None:
            await self._connect(wire)
        else:
            async with self.connect_gate:
                await self._connect(wire)
        try:
            keepalive = asyncio.create_task(self._keepalive())
            try:
                await wire.lost
            finally:
                keepalive.cancel()
        finally:
            if not wire.lost.done():
                assert wire.transport is not None
                wire.transport.abort()
                with contextlib.suppress(asyncio.CancelledError):
                    await wire.lost

    async def _connect(self, wire: _Wire) -> None:
        """Open the connection, send CONNECT and wait for the broker's CONNACK; then queue births."""
        loop = asyncio.get_running_loop()
        broker = self.broker
        async with asyncio.timeout(10.0):
            await loop.create_connection(lambda: wire, broker.host, broker.port)
        self._wire = wire
        assert wire.transport is not None
        self._connack = loop.create_future()
        will = None
        if self.with_will:
            death = self.devices[0].death(self.now(), "connection lost")
            will = packets.WillMessage(death.topic, death.payload, qos=1)
        wire.transport.write(
            packets.connect(
                self.client_id,
                keepalive_s=broker.keepalive_s,
                will=will,
                username=broker.username,
                password=broker.password.get_secret_value() if broker.password else None,
            )
        )
        try:
            async with asyncio.timeout(10.0):
                code = await self._connack
            if code != 0:
                reason = packets.CONNACK_REASONS.get(code, f"code {code}")
                raise ConnectionRefusedByBrokerError(f"broker refused {self.client_id}: {reason}")
            self.connects += 1
            for device in self.devices:
                device.counters.connected = True
                if self.connects > 1:
                    device.counters.reconnects += 1
                # The birth goes ahead of any backlog; it is queued, so it is resent like the rest.
                device.outbox.appendleft(device.birth(self.now()))
                self.wake(device)
            if self.subscriptions:
                self._write(packets.subscribe(self._packet_id(), [(f, 1) for f in self.subscriptions]))
            self.connected.set()
            log.debug("connected client_id=%s devices=%d", self.client_id, len(self.devices))
        except BaseException:
            if not wire.lost.done():
                wire.transport.abort()
                with contextlib.suppress(asyncio.CancelledError):
                    await wire.lost
            raise

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.broker.keepalive_s
        self._last_received = loop.time()
        while True:
            await asyncio.sleep(interval / 2.0)
            now = loop.time()
            if now - self._last_received > interval * 1.5 and self._wire and self._wire.transport:
                log.warning("broker_silent client_id=%s", self.client_id)
                self._wire.transport.abort()
                return
            if now - self._last_sent >= interval / 2.0:
                self._write(packets.PINGREQ)

    def _lost(self) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.paused = False
        self._wire = None
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectionError("connection closed before CONNACK"))
            self._connack.exception()  # consumed here; _serve sees the closed connection
        # Unacknowledged messages go back to the head of their outbox, in their original order.
        by_device: dict[int, list[Outgoing]] = {}
        devices: dict[int, DeviceFirmware] = {}
        for device, outgoing in self._inflight.values():
            if outgoing.topic == device.topic_birth:
                continue  # the next connect sends a fresh birth; a stale one must not be retained after it
            by_device.setdefault(id(device), []).append(outgoing)
            devices[id(device)] = device
        self._inflight.clear()
        for key, messages in by_device.items():
            devices[key].outbox.extendleft(reversed(messages))
        self._ready.clear()
        self._ready_ids.clear()
        for device in self.devices:
            device.counters.connected = False
        if was_connected:
            log.info("disconnected client_id=%s devices=%d", self.client_id, len(self.devices))

    async def close(self, *, deaths: bool, timeout_s: float = 5.0) -> None:
        """Stop reconnecting; send what is queued (and each device's death) and disconnect."""
        self._closing = True
        wire = self._wire
        if wire is None or wire.transport is None or not self.connected.is_set():
            return
        if deaths:
            for device in self.devices:
                device.outbox.append(device.death(self.now(), "shutdown"))
                self.wake(device)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.connected.is_set() and (self._inflight or self._pending()):
                    self._acked.clear()
                    await self._acked.wait()
        if self.connected.is_set() and wire.transport is not None:
            wire.transport.write(packets.DISCONNECT)
            wire.transport.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await wire.lost

    def _pending(self) -> bool:
        return any(device.outbox and device.link_up for device in self.devices)

    # --- moving the outboxes -----------------------------------------------------------------------

    def wake(self, device: DeviceFirmware) -> None:
        """A device queued something: send it this turn of the loop, if the session is up."""
        key = id(device)
        if key not in self._ready_ids:
            self._ready_ids.add(key)
            self._ready.append(device)
        self._schedule_drain()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and self.connected.is_set():
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _packet_id(self) -> int:
        while True:
            self._next_id = self._next_id % 65_535 + 1
            if self._next_id not in self._inflight:
                return self._next_id

    def _topic(self, topic: str) -> bytes:
        encoded = self._topics.get(topic)
        if encoded is None:
            encoded = self._topics[topic] = topic.encode()
        return encoded

    def _drain(self) -> None:
        self._drain_scheduled = False
        wire = self._wire
        if wire is None or wire.transport is None or not self.connected.is_set():
            return
        chunks: list[bytes] = []
        ready = self._ready
        inflight = self._inflight
        while ready and not self.paused and len(inflight) < self.max_inflight:
            device = ready[0]
            outbox = device.outbox
            if not device.link_up:
                ready.popleft()
                self._ready_ids.discard(id(device))
                continue
            counters = device.counters
            while outbox and len(inflight) < self.max_inflight:
                outgoing = outbox.popleft()
                if outgoing.qos:
                    packet_id = self._packet_id()
                    inflight[packet_id] = (device, outgoing)
                    chunks.append(
                        packets.publish(
                            self._topic(outgoing.topic),
                            outgoing.payload,
                            qos=outgoing.qos,
                            retain=outgoing.retain,
                            packet_id=packet_id,
                        )
                    )
                else:
                    chunks.append(
                        packets.publish(self._topic(outgoing.topic), outgoing.payload, retain=outgoing.retain)
                    )
                    counters.published += 1
                    if outgoing.telemetry:
                        counters.telemetry_published += 1
                if len(chunks) >= 512:
                    break
            if not outbox:
                ready.popleft()
                self._ready_ids.discard(id(device))
            if len(chunks) >= 512:
                # Keep the loop responsive: write what we have and continue next turn.
                self._write(b"".join(chunks))
                chunks = []
                self._schedule_drain()
                return
        if chunks:
            self._write(b"".join(chunks))
        if not ready:
            self._acked.set()

    def _write(self, data: bytes) -> None:
        wire = self._wire
        if wire is not None and wire.transport is not None and not wire.transport.is_closing():
            wire.transport.write(data)
            self._last_sent = asyncio.get_running_loop().time()

    # --- what the broker sends -------------------------------------------------------------------

    def _received(self, packet: packets.Packet) -> None:
        self._last_received = asyncio.get_running_loop().time()
        kind = packet.type
        if kind is packets.PacketType.PUBACK:
            entry = self._inflight.pop(packet.packet_id, None)
            if entry is not None:
                counters = entry[0].counters
                counters.published += 1
                if entry[1].telemetry:
                    counters.telemetry_published += 1
            if len(self._inflight) < self.max_inflight and self._ready:
                self._schedule_drain()
            self._acked.set()
        elif kind is packets.PacketType.PUBLISH:
            topic, payload, qos, packet_id = packet.incoming_publish()
            if qos:
                self._write(packets.puback(packet_id))
            self._command(topic, payload)
        elif kind is packets.PacketType.CONNACK and self._connack is not None and not self._connack.done():
            self._connack.set_result(packet.connack_code())

    def _command(self, topic: str, payload: bytes) -> None:
        if self.on_command is not None:
            self.on_command(topic, payload)
            return
        try:
            device_id = Topic.parse(topic, root=self.broker.root).device
        except ProtocolError:
            return
        device = self.by_id.get(device_id)
        if device is not None:
            device.handle(topic, payload, self.now())
