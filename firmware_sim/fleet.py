"""A fleet of simulated devices in one process: the scheduler that drives their firmware in
simulated time, the MQTT sessions that carry them, network impairments, and the ground truth.

``async with Fleet(settings) as fleet`` starts everything in a task group the fleet owns; leaving
the block (or :meth:`run` returning) stops sampling, sends what is queued, says goodbye (death
messages) and closes the ground-truth log. One scheduler serves every device: a heap of
``(due, device, event)`` entries, so 10,000 devices cost one task, not 10,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import numpy as np

from firmware_sim.connection import MqttSession
from firmware_sim.faults import GroundTruth
from firmware_sim.firmware import Clock, DeviceFirmware, Outgoing
from firmware_sim.profiles import build_device, check_faults, plan_devices
from firmware_sim.scenario import Scenario
from firmware_sim.settings import SimSettings
from protocol.topics import Kind, topic_filter

log = logging.getLogger("edgefleet.sim")

_SAMPLE, _HEALTH, _OUTAGE_START, _OUTAGE_END = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class FleetTotals:
    """The fleet at a glance; ``published`` counts telemetry messages the broker took."""

    devices: int
    connected: int
    produced: int
    published: int
    messages: int
    malformed: int
    dropped: int
    buffered: int
    reconnects: int
    faults: int
    simulated_s: float


class Session(Protocol):
    """What carries devices' outboxes somewhere: an MQTT session, or memory in tests."""

    connected: asyncio.Event

    async def run(self) -> None: ...

    async def close(self, *, deaths: bool, timeout_s: float = 5.0) -> None: ...

    def wake(self, device: DeviceFirmware) -> None: ...


class MemorySession:
    """Sends nowhere: keeps every message, in order, in :attr:`sent` (for tests and dry runs)."""

    def __init__(self, devices: Sequence[DeviceFirmware], now: MemoryNow) -> None:
        self.devices = list(devices)
        self.now = now
        self.sent: list[tuple[str, bytes]] = []
        self.connected = asyncio.Event()
        for device in self.devices:
            device.on_queued = self.wake

    async def run(self) -> None:
        for device in self.devices:
            device.counters.connected = True
            device.outbox.appendleft(device.birth(self.now()))
            self.wake(device)
        self.connected.set()
        await asyncio.Event().wait()

    def wake(self, device: DeviceFirmware) -> None:
        if not self.connected.is_set() and not device.counters.connected:
            return
        while device.outbox and device.link_up:
            outgoing = device.outbox.popleft()
            self._take(device, outgoing)

    def _take(self, device: DeviceFirmware, outgoing: Outgoing) -> None:
        self.sent.append((outgoing.topic, outgoing.payload))
        device.counters.published += 1
        if outgoing.telemetry:
            device.counters.telemetry_published += 1

    async def close(self, *, deaths: bool, timeout_s: float = 5.0) -> None:
        for device in self.devices:
            self.wake(device)
            if deaths:
                self._take(device, device.death(self.now(), "shutdown"))
            device.counters.connected = False


class MemoryNow(Protocol):
    def __call__(self) -> float: ...


class Fleet:
    """Every device of a scenario, simulated in this process."""

    def __init__(self, settings: SimSettings, scenario: Scenario | None = None) -> None:
        self.settings = settings
        self.scenario = scenario if scenario is not None else settings.load()
        check_faults(self.scenario)
        self.truth = GroundTruth(settings.ground_truth)
        reproducible = self.scenario.clock == "reproducible"
        self.clock = Clock(self.scenario.start_epoch if reproducible else time.time())
        root = settings.broker.root
        self.plans = list(plan_devices(self.scenario))
        self.devices: list[DeviceFirmware] = [
            build_device(plan, self.scenario, clock=self.clock, truth=self.truth, root=root) for plan in self.plans
        ]
        self._index = {device.device_id: index for index, device in enumerate(self.devices)}
        self.sessions: list[Session] = []
        self.sim_now = 0.0
        self.finished = asyncio.Event()
        self._heap: list[tuple[float, int, int, int, int]] = []
        self._rng = random.Random(self.scenario.seed)
        self._latency = self.scenario.network.latency_ms / 1000.0
        self._jitter = self.scenario.network.jitter_ms / 1000.0
        self._outages: list[tuple[float, float, list[int]]] = []
        self._stopping = False
        self._wall0 = 0.0
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._session_tasks: list[asyncio.Task[None]] = []
        self._scheduler: asyncio.Task[None] | None = None
        self.started_at = 0.0

    # --- who is who --------------------------------------------------------------------------------

    def device_ids(self) -> list[str]:
        return [device.device_id for device in self.devices]

    def device(self, device_id: str) -> DeviceFirmware | None:
        index = self._index.get(device_id)
        return self.devices[index] if index is not None else None

    def label(self, device_id: str, stream: str, seq: int) -> str | None:
        """The true class of the recording or day a stream was replaying at sample ``seq``."""
        device = self.device(device_id)
        if device is None or stream not in device.by_name:
            return None
        labels = device.streams[device.by_name[stream]].signal.labels
        return labels.at(seq) if labels is not None else None

    def day_label(self, device: str, start_seq: int) -> str | None:
        """The true label of the day (or recording) that starts at ``start_seq`` on ``device``'s
        first labelled stream; None if no segment starts there."""
        firmware = self.device(device)
        if firmware is None:
            return None
        for stream in firmware.streams:
            if stream.signal.labels is not None:
                return stream.signal.labels.starting_at(start_seq)
        return None

    def totals(self) -> FleetTotals:
        produced = published = messages = malformed = dropped = buffered = reconnects = connected = 0
        for device in self.devices:
            counters = device.counters
            produced += counters.produced
            published += counters.telemetry_published
            messages += counters.published
            malformed += counters.malformed
            dropped += counters.dropped
            buffered += len(device.outbox)
            reconnects += counters.reconnects + counters.simulated_reconnects
            connected += counters.connected and device.link_up
        return FleetTotals(
            devices=len(self.devices),
            connected=connected,
            produced=produced,
            published=published,
            messages=messages,
            malformed=malformed,
            dropped=dropped,
            buffered=buffered,
            reconnects=reconnects,
            faults=len(self.truth.records) + self.active_faults(),
            simulated_s=self.now(),
        )

    def active_faults(self) -> int:
        """Fault windows that have touched samples and have not ended yet."""
        return sum(
            1 for device in self.devices for stream in device.streams for w in stream.faults.windows if w.first_seq >= 0
        )

    def now(self) -> float:
        """Simulated seconds since the start."""
        speed = self.scenario.speed
        if self._scheduler is not None and speed > 0 and not self.finished.is_set():
            loop = asyncio.get_running_loop()
            return max(self.sim_now, (loop.time() - self._wall0) * speed)
        return self.sim_now

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Fleet:
        self._stack = contextlib.AsyncExitStack()
        await self._stack.__aenter__()
        self._tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self.truth.open()
        if self.scenario.clock == "live":
            self.clock.origin = time.time()
        self.started_at = time.monotonic()
        self._wall0 = asyncio.get_running_loop().time()
        self.sessions = self._make_sessions()
        self._session_tasks = [self._tasks.create_task(session.run()) for session in self.sessions]
        self._plan_events()
        self._scheduler = self._tasks.create_task(self._schedule())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        assert self._stack is not None
        try:
            await self._shutdown(clean=kind is None)
        finally:
            await self._stack.__aexit__(kind, exc, traceback)

    async def run(self, stop: asyncio.Event) -> None:
        """Simulate until ``stop`` is set or the scenario's duration has passed, then shut down cleanly."""
        async with self:
            stopped = asyncio.create_task(stop.wait())
            finished = asyncio.create_task(self.finished.wait())
            try:
                await asyncio.wait((stopped, finished), return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                finished.cancel()

    async def wait_connected(self, timeout_s: float = 30.0) -> None:
        """Wait until every session has connected once."""
        async with asyncio.timeout(timeout_s):
            for session in self.sessions:
                await session.connected.wait()

    def _make_sessions(self) -> list[Session]:
        mode = self.settings.mode
        broker = self.settings.broker
        if mode == "memory":
            return [MemorySession(self.devices, self.now)]
        gate = asyncio.Semaphore(self.settings.connect_concurrency)
        if mode == "per_device":
            return [
                MqttSession(
                    client_id=device.device_id,
                    broker=broker,
                    devices=[device],
                    now=self.now,
                    with_will=True,
                    subscriptions=[device.topic_command],
                    max_inflight=self.settings.max_inflight,
                    seed=self.scenario.seed * 1_000_003 + index,
                    connect_gate=gate,
                )
                for index, device in enumerate(self.devices)
            ]
        count = min(self.settings.connections, len(self.devices))
        groups: list[list[DeviceFirmware]] = [[] for _ in range(count)]
        for index, device in enumerate(self.devices):
            groups[index % count].append(device)
        name = "".join(c if c.isalnum() or c in "-_." else "-" for c in self.scenario.name)[:40] or "sim"
        sites = sorted({plan.site for plan in self.plans})
        return [
            MqttSession(
                client_id=f"sim-{name}-mux-{number}",
                broker=broker,
                devices=group,
                now=self.now,
                with_will=False,
                subscriptions=[topic_filter(Kind.COMMAND, site=site, root=broker.root) for site in sites]
                if number == 0
                else [],
                on_command=self._route_command if number == 0 else None,
                max_inflight=self.settings.max_inflight,
                seed=self.scenario.seed * 1_000_003 + number,
                connect_gate=gate,
            )
            for number, group in enumerate(groups)
        ]

    def _route_command(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        device = self.device(parts[2]) if len(parts) > 2 else None
        if device is not None:
            device.handle(topic, payload, self.now())

    async def _shutdown(self, *, clean: bool) -> None:
        self._stopping = True
        if self._scheduler is not None and not self._scheduler.done():
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        self.sim_now = self.now()
        for device in self.devices:
            if not device.link_up:
                device.restore_link(self.sim_now)
            device.flush_held()
        if clean:
            await asyncio.gather(*(session.close(deaths=True) for session in self.sessions))
        for task in self._session_tasks:
            task.cancel()
        for device in self.devices:
            device.close_faults()
        for start, end, indices in self._outages:
            if start <= self.sim_now:
                for index in indices:
                    self._log_outage(index, start, min(end, self.sim_now))
        self._outages = []
        self.truth.close()

    # --- the scheduler ---------------------------------------------------------------------------

    def _plan_events(self) -> None:
        heap = self._heap
        phases = np.random.default_rng([self.scenario.seed, 7]).uniform(
            0.0, self.scenario.health_interval_s, len(self.devices)
        )
        for index, device in enumerate(self.devices):
            device.on_reschedule = self._rescheduled
            for number, stream in enumerate(device.streams):
                heap.append((stream.due + self._delay(), index, _SAMPLE, number, stream.generation))
            heap.append((float(phases[index]), index, _HEALTH, 0, device.health_generation))
        for number, outage in enumerate(self.scenario.network.outages):
            indices = [index for index, plan in enumerate(self.plans) if outage.matches(plan.site, plan.device_id)]
            self._outages.append((outage.start_s, outage.start_s + outage.duration_s, indices))
            heap.append((outage.start_s, -1, _OUTAGE_START, number, 0))
            heap.append((outage.start_s + outage.duration_s, -1, _OUTAGE_END, number, 0))
        heapq.heapify(heap)

    def _delay(self) -> float:
        if not self._latency and not self._jitter:
            return 0.0
        return self._latency + (self._rng.expovariate(1.0 / self._jitter) if self._jitter else 0.0)

    def _rescheduled(self, device: DeviceFirmware, stream: int) -> None:
        index = self._index[device.device_id]
        entry = device.streams[stream]
        heapq.heappush(self._heap, (entry.due + self._delay(), index, _SAMPLE, stream, entry.generation))

    def _backlog(self) -> int:
        return sum(len(device.outbox) for device in self.devices)

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        devices = self.devices
        speed = self.scenario.speed
        duration = self.scenario.duration_s if self.scenario.finite else math.inf
        interval = self.scenario.health_interval_s
        # Unpaced runs stop producing while this much waits to be sent, rather than dropping it.
        backlog_limit = max(10_000, 4 * len(devices))
        if speed == 0.0:
            # Unpaced, the whole run could be over before the first connect: wait for the sessions.
            with contextlib.suppress(TimeoutError):
                await self.wait_connected(30.0)
        processed = 0
        while heap and not self._stopping:
            due = heap[0][0]
            if due > duration:
                break
            if speed > 0.0:
                wait = self._wall0 + due / speed - loop.time()
                if wait > 0.0:
                    await asyncio.sleep(min(wait, 0.25))
                    continue
            if processed % 512 == 511:
                await asyncio.sleep(0)
                if speed == 0.0:
                    while self._backlog() > backlog_limit and not self._stopping:  # noqa: ASYNC110
                        await asyncio.sleep(0.005)
            processed += 1
            due, index, kind, number, generation = heapq.heappop(heap)
            self.sim_now = due
            if kind == _SAMPLE:
                device = devices[index]
                stream = device.streams[number]
                if generation != stream.generation or not stream.config.enabled:
                    continue
                device.sample(number)
                heapq.heappush(heap, (stream.due + self._delay(), index, _SAMPLE, number, generation))
            elif kind == _HEALTH:
                devices[index].health(due)
                heapq.heappush(heap, (due + interval, index, _HEALTH, 0, generation))
            elif kind == _OUTAGE_START:
                for member in self._outages[number][2]:
                    devices[member].cut_link()
                log.info("outage_start number=%d devices=%d", number, len(self._outages[number][2]))
            else:
                start, end, members = self._outages[number]
                for member in members:
                    devices[member].restore_link(due)
                    self._log_outage(member, start, end)
                self._outages[number] = (start, end, [])
                log.info("outage_end number=%d", number)
        if math.isfinite(duration):
            self.sim_now = max(self.sim_now, duration)
        self.finished.set()

    def _log_outage(self, index: int, start: float, end: float) -> None:
        self.truth.write(
            {
                "device": self.devices[index].device_id,
                "stream": None,
                "kind": "outage",
                "start": None,
                "end": None,
                "start_ts": round(self.clock.timestamp(start), 6),
                "end_ts": round(self.clock.timestamp(end), 6),
                "magnitude": 0.0,
            }
        )

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until every connected device's outbox is empty; False on timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while any(device.outbox and device.link_up for device in self.devices):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                return True
        return False
