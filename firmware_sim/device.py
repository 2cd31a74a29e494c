"""Simulated firmware: one MQTT session per device, as real firmware would hold it.

The client id is the device id; the Last Will is a death message; a retained birth message follows
every connect; health goes out periodically; readings wait in a bounded buffer while the broker is
unreachable and go out in order after the reconnect (jittered exponential backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from dataclasses import dataclass

import aiomqtt

from firmware_sim.meter import PowerMeter, Sample
from firmware_sim.settings import SimSettings
from protocol.codec import encode
from protocol.messages import DeviceBirth, DeviceDeath, DeviceHealth, SensorKind, StreamInfo, TelemetryReading
from protocol.topics import Kind, Topic

log = logging.getLogger("edgefleet.sim")

GARBAGE = (
    b'{"type":"telemetry.reading","v":1,"value":',  # truncated JSON
    b"\xff\xfe\x00garbage",  # not UTF-8
    b'{"type":"telemetry.reading","v":1,"dev":"%s","ts":1,"stream":"power","sensor":"power","unit":"kW",'
    b'"seq":-1,"value":"high"}',  # schema violations
)


@dataclass
class DeviceCounters:
    published: int = 0
    buffered_peak: int = 0
    dropped: int = 0
    malformed: int = 0
    reconnects: int = 0
    connected: bool = False


class SimulatedDevice:
    def __init__(self, device_id: str, meter: PowerMeter, settings: SimSettings, *, seed: int) -> None:
        self.device_id = device_id
        self.meter = meter
        self.settings = settings
        self.counters = DeviceCounters()
        self._rng = random.Random(seed)
        self._buffer: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._started = time.monotonic()
        root = settings.broker.root
        self._topic = Topic(site=settings.site, device=device_id, kind=Kind.TELEMETRY, stream=meter.stream, root=root)

    def _reading(self, sample: Sample) -> bytes:
        if self._rng.random() < self.settings.malformed_probability:
            self.counters.malformed += 1
            garbage = self._rng.choice(GARBAGE)
            return garbage.replace(b"%s", self.device_id.encode()) if b"%s" in garbage else garbage
        reading = TelemetryReading(
            device_id=self.device_id,
            timestamp=time.time(),
            stream=self.meter.stream,
            sensor=SensorKind.POWER,
            unit="kW",
            seq=sample.seq,
            value=sample.value_kw,
        )
        return encode(reading)

    def _birth(self) -> bytes:
        stream = StreamInfo(
            name=self.meter.stream, sensor=SensorKind.POWER, unit="kW", sample_rate_hz=self.settings.rate_hz
        )
        return encode(
            DeviceBirth(
                device_id=self.device_id,
                timestamp=time.time(),
                site=self.settings.site,
                firmware_version=self.settings.firmware_version,
                streams=[stream],
            )
        )

    def _health(self) -> bytes:
        return encode(
            DeviceHealth(
                device_id=self.device_id,
                timestamp=time.time(),
                uptime_s=time.monotonic() - self._started,
                messages_sent=self.counters.published,
                buffered=len(self._buffer),
                reconnects=self.counters.reconnects,
            )
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Sample at the configured rate until ``stop`` is set; connect and reconnect meanwhile."""
        async with asyncio.TaskGroup() as tasks:
            sampler = tasks.create_task(self._sample(stop))
            session = tasks.create_task(self._sessions())
            await stop.wait()
            sampler.cancel()
            # Give the session a moment to send what is buffered, then say goodbye.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    while self._buffer and self.counters.connected:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
            session.cancel()

    async def _sample(self, stop: asyncio.Event) -> None:
        period = 1.0 / self.settings.rate_hz
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self._rng.uniform(0, period)  # devices do not start in lockstep
        for sample in self.meter.samples():
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += period
            self._buffer.append(self._reading(sample))
            if len(self._buffer) > self.settings.buffer_limit:
                self._buffer.popleft()
                self.counters.dropped += 1
            self.counters.buffered_peak = max(self.counters.buffered_peak, len(self._buffer))
            self._wake.set()
            if stop.is_set():
                return

    async def _sessions(self) -> None:
        broker = self.settings.broker
        death_topic = str(self._topic.sibling(Kind.DEATH))
        backoff = 0.5
        while True:
            # The will is registered at connect time, so it carries that connection's timestamp.
            lost = DeviceDeath(device_id=self.device_id, timestamp=time.time(), reason="connection lost")
            will = aiomqtt.Will(death_topic, encode(lost), qos=1)
            try:
                async with aiomqtt.Client(
                    broker.host,
                    broker.port,
                    identifier=self.device_id,
                    username=broker.username,
                    password=broker.password.get_secret_value() if broker.password else None,
                    keepalive=broker.keepalive_s,
                    will=will,
                ) as client:
                    self.counters.connected = True
                    backoff = 0.5
                    await client.publish(str(self._topic.sibling(Kind.BIRTH)), self._birth(), qos=1, retain=True)
                    try:
                        await self._send(client)
                    except asyncio.CancelledError:
                        with contextlib.suppress(aiomqtt.MqttError):
                            death = DeviceDeath(device_id=self.device_id, timestamp=time.time(), reason="shutdown")
                            await client.publish(death_topic, encode(death), qos=1)
                        raise
            except aiomqtt.MqttError as exc:
                log.debug("disconnected device_id=%s reason=%s", self.device_id, exc)
            finally:
                self.counters.connected = False
            self.counters.reconnects += 1
            await asyncio.sleep(backoff * self._rng.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 30.0)

    async def _send(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        next_health = loop.time()
        while True:
            if loop.time() >= next_health:
                await client.publish(str(self._topic.sibling(Kind.HEALTH)), self._health(), qos=0)
                next_health = loop.time() + self.settings.health_interval_s
            while self._buffer:
                # Send, then forget: a failed publish leaves the reading at the head of the buffer.
                await client.publish(str(self._topic), self._buffer[0], qos=1)
                self._buffer.popleft()
                self.counters.published += 1
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_health - loop.time())):
                    await self._wake.wait()
