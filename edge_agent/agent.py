"""The edge agent daemon: an async context manager around :class:`edge_agent.pipeline.Pipeline`.

It owns its tasks in a TaskGroup: one session loop that reconnects to the broker with jittered
exponential backoff, one batcher that gathers ready windows into micro-batches, and a publisher
that drains the outgoing queue (messages wait there while the broker is away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

from edge_agent.model import LoadedModel
from edge_agent.pipeline import AgentStats, Outgoing, Pipeline
from edge_agent.settings import AgentSettings
from edge_agent.transport import Connect, Session, TransportError
from protocol.topics import Kind, topic_filter

log = logging.getLogger("edgefleet.agent")


class EdgeAgent:
    """Run with ``async with EdgeAgent(...) as agent: await agent.wait_closed()``."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        model: LoadedModel,
        connect: Connect,
        clock: Callable[[], float] = time.time,
        max_queued: int = 100_000,
    ) -> None:
        self.settings = settings
        self.pipeline = Pipeline(settings, model)
        self._connect = connect
        self._clock = clock
        self._queue: deque[Outgoing] = deque()
        self._max_queued = max_queued
        self.dropped = 0
        self.reconnects = 0
        self.connected = asyncio.Event()
        self._queued = asyncio.Event()
        self._windows_ready = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._stopped = asyncio.Event()

    @property
    def stats(self) -> AgentStats:
        return self.pipeline.stats

    @property
    def queued(self) -> int:
        return len(self._queue)

    def subscriptions(self) -> list[str]:
        root = self.settings.broker.root
        site = self.settings.site
        filters = []
        for device in self.settings.devices:
            filters.append(topic_filter(Kind.TELEMETRY, site=site, device=device, root=root))
            filters.append(topic_filter(Kind.VERDICT, site=site, device=device, root=root))
        return filters

    async def __aenter__(self) -> EdgeAgent:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._session_task = self._tasks.create_task(self._sessions(), name="agent-sessions")
        self._batcher_task = self._tasks.create_task(self._batcher(), name="agent-batcher")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Finish the windows already complete, then give the publisher a moment to drain.
        self._enqueue(self.pipeline.flush(self._clock()))
        if self.connected.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    # Two tasks change these conditions; a short poll is simpler than three events.
                    while self._queue and self.connected.is_set():  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
        self._batcher_task.cancel()
        self._session_task.cancel()
        self._stopped.set()
        assert self._tasks is not None
        await self._tasks.__aexit__(None, None, None)

    async def wait_closed(self) -> None:
        await self._stopped.wait()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no window or message is waiting; ``False`` if that took longer than ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._queue or self.pipeline.pending:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                return True
        return False

    def _enqueue(self, items: list[Outgoing]) -> None:
        if not items:
            return
        self._queue.extend(items)
        while len(self._queue) > self._max_queued:
            self._queue.popleft()
            self.dropped += 1
        self._queued.set()

    async def _sessions(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with self._connect() as session:
                    await session.subscribe(self.subscriptions(), qos=1)
                    self.connected.set()
                    backoff = 0.2
                    log.info("connected site=%s devices=%s", self.settings.site, ",".join(self.settings.devices))
                    async with asyncio.TaskGroup() as tasks:
                        publisher = tasks.create_task(self._publisher(session))
                        await self._reader(session)
                        publisher.cancel()
            except* TransportError as group:
                log.warning("broker connection lost reason=%s", group.exceptions[0])
            finally:
                self.connected.clear()
            self.reconnects += 1
            delay = backoff * random.uniform(0.5, 1.5)
            backoff = min(backoff * 2, 30.0)
            await asyncio.sleep(delay)

    async def _reader(self, session: Session) -> None:
        max_batch = self.settings.max_batch
        async for incoming in session.messages():
            self._enqueue(self.pipeline.handle(incoming.topic, incoming.payload, self._clock()))
            pending = self.pipeline.pending
            if pending:
                self._windows_ready.set()
                if pending >= max_batch:
                    self._batch_full.set()
        raise TransportError("the broker closed the message stream")

    async def _publisher(self, session: Session) -> None:
        while True:
            await self._queued.wait()
            while self._queue:
                item = self._queue[0]
                await session.publish(item.topic, item.payload, qos=item.qos)
                # The publish returned, so the item is with the broker (QoS 1: acknowledged).
                if self._queue and self._queue[0] is item:
                    self._queue.popleft()
            self._queued.clear()

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        max_wait = self.settings.max_wait_ms / 1000.0
        while True:
            await self._windows_ready.wait()
            deadline = loop.time() + max_wait
            while self.pipeline.pending < self.settings.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._batch_full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._batch_full.wait()
            self._windows_ready.clear()
            self._batch_full.clear()
            while self.pipeline.pending:
                self._enqueue(self.pipeline.infer_pending(self._clock()))
            # Let the reader and publisher run between batches.
            await asyncio.sleep(0)
