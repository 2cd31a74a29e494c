"""The simulated firmware of one device, sans I/O.

:class:`DeviceFirmware` turns simulated time into the messages a device would publish (telemetry,
health, birth, death, command replies) and commands into replies. It never touches a socket or the
event loop: the fleet's scheduler calls it at the right simulated moments and a connection moves its
outbox to the broker. That keeps it deterministic: timestamps come from a :class:`Clock` (the
scenario's start plus simulated seconds) and message ids from :class:`MessageIds` (a keyed hash of a
counter, seeded by the scenario), so the same scenario and seed give the same payloads, byte for byte.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from firmware_sim.errors import CommandError
from firmware_sim.faults import NO_MESSAGE_FAULTS, StreamFaults, garble
from firmware_sim.signals import Signal
from protocol.codec import decode_as, encode
from protocol.errors import ProtocolError
from protocol.messages import (
    Command,
    CommandArgument,
    CommandName,
    CommandReply,
    DeviceBirth,
    DeviceDeath,
    DeviceHealth,
    ErrorCode,
    ErrorEvent,
    ReplyStatus,
    StreamInfo,
    TelemetryBatch,
    TelemetryReading,
    excerpt,
)
from protocol.topics import Kind, Topic

log = logging.getLogger("edgefleet.sim")

MAX_RATE_HZ = 100_000.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready for the broker."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    telemetry: bool = False


@dataclass(slots=True)
class Clock:
    """Simulated seconds since the run started → wire timestamps (``origin`` + seconds).

    Reproducible runs take ``origin`` from the scenario; live runs set it from the wall clock when
    the run starts, so timestamps track real time while sends are paced by it.
    """

    origin: float

    def timestamp(self, seconds: float) -> float:
        return self.origin + seconds


class MessageIds:
    """Message ids: in reproducible runs a keyed BLAKE2b of ``device/purpose/counter`` (a counter-based
    generator seeded by the scenario: no state beyond the counters, identical across runs); in live
    runs random UUIDs, so that two runs never collide in a hub that keeps every id."""

    def __init__(self, device_id: str, seed: int | None) -> None:
        self._prefix = device_id.encode() + b"/"
        self._key = seed.to_bytes(16, "big", signed=True) if seed is not None else None
        self._counters: dict[str, int] = {}

    def next(self, purpose: str) -> str:
        if self._key is None:
            return uuid.uuid4().hex
        count = self._counters.get(purpose, 0)
        self._counters[purpose] = count + 1
        message = self._prefix + purpose.encode() + b"/" + str(count).encode()
        return hashlib.blake2b(message, key=self._key, digest_size=16).hexdigest()


@dataclass
class StreamConfig:
    """What the firmware samples on one stream; commands may change rate and enablement."""

    name: str
    rate_hz: float
    batch: int = 1
    decimals: int = 3
    enabled: bool = True


class Stream:
    """One sensor stream: its signal, fault schedule, sampling state and sequence numbers."""

    def __init__(
        self,
        config: StreamConfig,
        signal: Signal,
        faults: StreamFaults,
        *,
        topic: str,
        garbage_rng: np.random.Generator,
    ) -> None:
        self.config = config
        self.signal = signal
        self.faults = faults
        self.topic = topic
        self.seq = 0
        self.sample_time = 0.0  # simulated time of sample ``seq``
        self.generation = 0  # bumped when the schedule changes, so stale scheduler entries are skipped
        self.garbage_rng = garbage_rng
        self._values: list[float] = []
        self._times: list[float] = []
        self._block_seq = 0
        self.held: Outgoing | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def due(self) -> float:
        """Simulated time at which the next message is complete (its last sample taken)."""
        return self.sample_time + (self.config.batch - 1) / self.config.rate_hz

    def info(self) -> StreamInfo:
        return StreamInfo(
            name=self.name, sensor=self.signal.sensor, unit=self.signal.unit, sample_rate_hz=self.config.rate_hz
        )

    def retime(self, now: float) -> None:
        """Start sampling afresh at ``now`` (after a rate change or a restart)."""
        self.sample_time = now + 1.0 / self.config.rate_hz
        self._values, self._times = [], []
        self.generation += 1

    def _fill(self) -> None:
        batch = self.config.batch
        count = batch * max(1, 64 // batch)
        period = 1.0 / self.config.rate_hz
        times = self.sample_time + period * np.arange(count, dtype=np.float64)
        self.faults.prepare(self.seq, count, self.config.rate_hz)
        severity = self.faults.severity(self.seq, count)
        values = np.asarray(self.signal.generate(self.seq, times, severity), dtype=np.float64)
        if not self.faults.quiet(self.seq, count):
            values = self.faults.apply(self.seq, values)
        self._values = np.round(values, self.config.decimals).tolist()
        self._times = times.tolist()
        self._block_seq = self.seq

    def take(self) -> tuple[int, list[float], float, float]:
        """The next message's first seq, values, and the times of its first and last samples."""
        offset = self.seq - self._block_seq
        if not self._values or offset >= len(self._values):
            self._fill()
            offset = 0
        batch = self.config.batch
        values = self._values[offset : offset + batch]
        first, last = self._times[offset], self._times[offset + batch - 1]
        seq = self.seq
        self.seq += batch
        if offset + batch < len(self._times):
            self.sample_time = self._times[offset + batch]
        else:
            self.sample_time = last + 1.0 / self.config.rate_hz
        return seq, values, first, last


@dataclass
class DeviceCounters:
    """What one device did; ``published`` counts messages the broker acknowledged (QoS 1) or that
    were written (QoS 0)."""

    produced: int = 0
    published: int = 0
    telemetry_published: int = 0
    dropped: int = 0
    malformed: int = 0
    buffered_peak: int = 0
    reconnects: int = 0
    simulated_reconnects: int = 0
    held_in_outage: int = 0
    connected: bool = False
    commands: int = 0


@dataclass
class FirmwareIdentity:
    device_id: str
    site: str
    profile: str
    firmware_version: str = "sim-1.0.0"
    root: str = "edgefleet"


@dataclass
class FirmwareOptions:
    health_interval_s: float = 60.0
    buffer_limit: int = 10_000
    reproducible: bool = True
    telemetry_qos: int = 1
    model: dict[str, CommandArgument] = field(default_factory=dict)


class DeviceFirmware:
    """One device's firmware: streams, health, birth and death, commands, and a bounded outbox that
    holds what the link cannot carry yet (oldest telemetry dropped first when it is full)."""

    def __init__(
        self,
        identity: FirmwareIdentity,
        streams: Sequence[Stream],
        *,
        clock: Clock,
        ids: MessageIds,
        options: FirmwareOptions,
    ) -> None:
        self.identity = identity
        self.device_id = identity.device_id
        self.streams = list(streams)
        self.by_name = {stream.name: index for index, stream in enumerate(self.streams)}
        self.clock = clock
        self.ids = ids
        self.options = options
        self.counters = DeviceCounters()
        self.outbox: deque[Outgoing] = deque()
        self.link_up = True  # the simulated link (scenario outages); the real one is the connection's
        self.on_reschedule: Callable[[DeviceFirmware, int], None] | None = None
        self.on_queued: Callable[[DeviceFirmware], None] | None = None
        self.health_generation = 0
        base = Topic(site=identity.site, device=identity.device_id, kind=Kind.BIRTH, root=identity.root)
        self.topic_birth = str(base)
        self.topic_death = str(base.sibling(Kind.DEATH))
        self.topic_health = str(base.sibling(Kind.HEALTH))
        self.topic_reply = str(base.sibling(Kind.REPLY))
        self.topic_error = str(base.sibling(Kind.ERROR))
        self.topic_command = str(base.sibling(Kind.COMMAND))
        self._topic = base

    # --- what the scheduler drives -------------------------------------------------------------

    def sample(self, index: int) -> None:
        """Take the next message's samples on stream ``index`` and queue what the firmware sends."""
        stream = self.streams[index]
        seq, values, first, last = stream.take()
        faults = stream.faults
        clock = self.clock
        effects = (
            faults.message(seq, len(values), clock.timestamp(first), clock.timestamp(last))
            if faults.windows
            else NO_MESSAGE_FAULTS
        )
        if effects.drop:
            return
        stamp = clock.timestamp(last) + effects.skew_s
        config = stream.config
        message: TelemetryReading | TelemetryBatch
        message_id = self.ids.next(stream.name)
        if config.batch == 1:
            message = TelemetryReading(
                message_id=message_id,
                device_id=self.device_id,
                timestamp=stamp,
                stream=stream.name,
                sensor=stream.signal.sensor,
                unit=stream.signal.unit,
                seq=seq,
                value=values[0],
            )
        else:
            message = TelemetryBatch(
                message_id=message_id,
                device_id=self.device_id,
                timestamp=stamp,
                stream=stream.name,
                sensor=stream.signal.sensor,
                unit=stream.signal.unit,
                seq=seq,
                sample_rate_hz=config.rate_hz,
                values=values,
            )
        payload = encode(message)
        qos = self.options.telemetry_qos
        if effects.malformed:
            garbage = garble(payload, stream.garbage_rng)
            self.counters.malformed += 1
            if effects.keep_original:
                self._queue(Outgoing(stream.topic, garbage, qos, telemetry=True))
            else:
                payload = garbage
        outgoing = Outgoing(stream.topic, payload, qos, telemetry=True)
        if effects.out_of_order and stream.held is None:
            stream.held = outgoing
            return
        self._queue(outgoing)
        if effects.duplicate:
            self._queue(outgoing)
        if stream.held is not None:
            self._queue(stream.held)
            stream.held = None

    def health(self, now: float) -> None:
        """Queue a health report (reproducible runs report the simulated state, so it replays)."""
        counters = self.counters
        if self.options.reproducible:
            sent, buffered, reconnects = counters.produced, counters.held_in_outage, counters.simulated_reconnects
        else:
            sent = counters.published
            buffered = len(self.outbox)
            reconnects = counters.reconnects + counters.simulated_reconnects
        report = DeviceHealth(
            message_id=self.ids.next("health"),
            device_id=self.device_id,
            timestamp=self.clock.timestamp(now),
            uptime_s=max(now, 0.0),
            messages_sent=sent,
            buffered=buffered,
            reconnects=reconnects,
        )
        self._queue(Outgoing(self.topic_health, encode(report), 0))

    def cut_link(self) -> None:
        """A simulated outage begins: what the device makes waits in its outbox."""
        self.link_up = False

    def restore_link(self, now: float) -> None:
        """A simulated outage ends: the device reconnects, announces itself, then sends its backlog."""
        self.link_up = True
        self.counters.simulated_reconnects += 1
        self.counters.held_in_outage = 0
        self.outbox.appendleft(self.birth(now))
        if self.on_queued is not None:
            self.on_queued(self)

    def flush_held(self) -> None:
        """Send messages an out-of-order fault still holds back (at the end of a run)."""
        for stream in self.streams:
            if stream.held is not None:
                self._queue(stream.held)
                stream.held = None

    def close_faults(self) -> None:
        for stream in self.streams:
            stream.faults.close()

    # --- session messages ------------------------------------------------------------------------

    def birth(self, now: float) -> Outgoing:
        """The retained birth message sent first after every connect."""
        birth = DeviceBirth(
            message_id=self.ids.next("session"),
            device_id=self.device_id,
            timestamp=self.clock.timestamp(now),
            site=self.identity.site,
            firmware_version=self.identity.firmware_version,
            streams=[stream.info() for stream in self.streams if stream.config.enabled],
        )
        return Outgoing(self.topic_birth, encode(birth), 1, retain=True)

    def death(self, now: float, reason: str) -> Outgoing:
        """A death message: sent on a clean shutdown, or registered as the Last Will."""
        death = DeviceDeath(
            message_id=self.ids.next("session"),
            device_id=self.device_id,
            timestamp=self.clock.timestamp(now),
            reason=reason,
        )
        return Outgoing(self.topic_death, encode(death), 1)

    # --- commands --------------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, now: float) -> None:
        """Carry out a command that arrived on the device's command topic; queue the reply (or an
        error event when the command cannot be read)."""
        self.counters.commands += 1
        try:
            command = decode_as(Command, payload, topic=Topic.parse(topic, root=self.identity.root))
        except ProtocolError as exc:
            log.warning("command_refused device_id=%s code=%s reason=%s", self.device_id, exc.code, exc.reason)
            error = ErrorEvent(
                message_id=self.ids.next("session"),
                device_id=self.device_id,
                timestamp=self.clock.timestamp(now),
                code=ErrorCode(exc.code),
                reason=exc.reason[:1024],
                topic=topic[:512],
                payload_excerpt=excerpt(payload),
            )
            self._queue(Outgoing(self.topic_error, encode(error), 1), front=True)
            return
        status = ReplyStatus.OK
        result: dict[str, CommandArgument] = {}
        try:
            status, detail, result = self._execute(command, now)
        except CommandError as exc:
            status, detail = ReplyStatus.REJECTED, str(exc)
        log.info(
            "command device_id=%s message_id=%s name=%s status=%s",
            self.device_id,
            command.message_id,
            command.name,
            status,
        )
        reply = CommandReply(
            message_id=self.ids.next("session"),
            device_id=self.device_id,
            timestamp=self.clock.timestamp(now),
            command_id=command.message_id,
            name=command.name,
            status=status,
            detail=detail[:1024],
            result=result,
        )
        self._queue(Outgoing(self.topic_reply, encode(reply), 1), front=True)

    def _stream(self, command: Command) -> int:
        name = command.args.get("stream")
        if not isinstance(name, str) or name not in self.by_name:
            raise CommandError(f"no stream {name!r}; streams: {', '.join(self.by_name)}")
        return self.by_name[name]

    def _execute(self, command: Command, now: float) -> tuple[ReplyStatus, str, dict[str, CommandArgument]]:
        if command.name is CommandName.REPORT_CONFIG:
            return ReplyStatus.OK, "configuration", self.config()
        if command.name is CommandName.SET_SAMPLING_RATE:
            index = self._stream(command)
            rate = command.args.get("rate_hz")
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 < rate <= MAX_RATE_HZ:
                raise CommandError(f"rate_hz must be a number in (0, {MAX_RATE_HZ:g}], not {rate!r}")
            stream = self.streams[index]
            stream.config.rate_hz = float(rate)
            stream.retime(now)
            self._reschedule(index)
            return (
                ReplyStatus.OK,
                f"{stream.name} sampled at {float(rate):g} Hz",
                {f"{stream.name}.rate_hz": float(rate)},
            )
        if command.name in (CommandName.START_STREAM, CommandName.STOP_STREAM):
            index = self._stream(command)
            stream = self.streams[index]
            start = command.name is CommandName.START_STREAM
            if stream.config.enabled != start:
                stream.config.enabled = start
                if start:
                    stream.retime(now)
                    self._reschedule(index)
                else:
                    stream.generation += 1
            verb = "started" if start else "stopped"
            return ReplyStatus.OK, f"{stream.name} {verb}", {f"{stream.name}.enabled": start}
        if command.name is CommandName.UPDATE_MODEL:
            # The firmware stages what it is told to fetch; the agent beside it loads models. A new
            # firmware version takes effect at once, as after a reboot: a fresh birth announces it.
            self.options.model = dict(command.args)
            firmware = command.args.get("firmware")
            if isinstance(firmware, str) and firmware:
                self.identity.firmware_version = firmware[:64]
                self._queue(self.birth(now), front=True)
                return ReplyStatus.OK, f"firmware {firmware} installed", {"firmware": firmware[:64]}
            model = command.args.get("model", "?")
            version = command.args.get("version", "?")
            return ReplyStatus.ACCEPTED, f"model {model} version {version} staged", dict(command.args)
        raise CommandError(f"unsupported command {command.name}")  # pragma: no cover - enum is exhaustive

    def config(self) -> dict[str, CommandArgument]:
        """The configuration ``report_config`` returns, as flat ``name: value`` pairs."""
        config: dict[str, CommandArgument] = {
            "firmware": self.identity.firmware_version,
            "profile": self.identity.profile,
            "site": self.identity.site,
            "health_interval_s": self.options.health_interval_s,
            "buffer_limit": self.options.buffer_limit,
        }
        for stream in self.streams:
            config[f"{stream.name}.rate_hz"] = stream.config.rate_hz
            config[f"{stream.name}.batch"] = stream.config.batch
            config[f"{stream.name}.enabled"] = stream.config.enabled
        for key, value in self.options.model.items():
            config[f"model.{key}"[:64]] = value
        return config

    def _reschedule(self, index: int) -> None:
        if self.on_reschedule is not None:
            self.on_reschedule(self, index)

    # --- the outbox ------------------------------------------------------------------------------

    def _queue(self, outgoing: Outgoing, *, front: bool = False) -> None:
        counters = self.counters
        counters.produced += 1
        if not self.link_up:
            counters.held_in_outage += 1
        if front:
            self.outbox.appendleft(outgoing)
        else:
            self.outbox.append(outgoing)
        if len(self.outbox) > self.options.buffer_limit:
            self._drop_oldest()
        if len(self.outbox) > counters.buffered_peak:
            counters.buffered_peak = len(self.outbox)
        if self.on_queued is not None:
            self.on_queued(self)

    def _drop_oldest(self) -> None:
        for position, queued in enumerate(self.outbox):
            if queued.telemetry:
                del self.outbox[position]
                self.counters.dropped += 1
                return
        self.outbox.popleft()
        self.counters.dropped += 1
