"""The edge agent daemon: an async context manager around :class:`edge_agent.pipeline.Pipeline`.

It owns its tasks in a TaskGroup: a session loop per broker connection that reconnects with
jittered exponential backoff (the sensor feed, and the uplink towards the hub when that is another
broker), a batcher that gathers ready windows into micro-batches, and a publisher that drains the
durable outbox over the uplink. Whatever must be sent goes to the outbox first, so a broker outage
or a crash of the agent loses nothing that was decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_agent.errors import AgentError, ModelLoadError
from edge_agent.feeds import LocalFeed
from edge_agent.lifecycle import ModelKeeper
from edge_agent.model import LoadedModel, load_model, read_trusted_keys
from edge_agent.outbox import Envelope, Outbox
from edge_agent.pipeline import AgentStats, Pipeline
from edge_agent.settings import AgentSettings
from edge_agent.transport import Connect, Session, TransportError
from edge_agent.updates import ModelFetcher, ModelUpdater
from protocol.codec import encode
from protocol.messages import Command, CommandArgument, CommandName, CommandReply, ReplyStatus
from protocol.topics import Kind, Topic, topic_filter

log = logging.getLogger("edgefleet.agent")


def default_client_id(settings: AgentSettings) -> str:
    """A stable MQTT client id, so the broker keeps the agent's session (and queues) across restarts."""
    if settings.client_id:
        return settings.client_id
    devices = "-".join(d for d in settings.devices if d != "+") or "all"
    return f"agent-{settings.site}-{devices}"[:64]


class EdgeAgent:
    """Run with ``async with EdgeAgent(...) as agent: await agent.wait_closed()``.

    ``connect`` opens the sensor-feed session; ``uplink`` opens the session towards the hub, where
    escalations, results and errors go and verdicts come from. Without ``uplink`` one session does both.
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        model: LoadedModel,
        connect: Connect,
        uplink: Connect | None = None,
        outbox: Outbox | None = None,
        clock: Callable[[], float] = time.time,
        feeds: Sequence[LocalFeed] = (),
        updater: ModelUpdater | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = Pipeline(settings, model)
        self.feeds = list(feeds)
        """Local sources (camera, microphone), each with its own model; see :mod:`edge_agent.feeds`."""
        for feed in self.feeds:
            self.pipeline.stats.feeds[feed.name] = feed.counts
        self.keeper = ModelKeeper(settings)
        """Probation and rollback of the sensor model."""
        self.feed_keepers = {feed.name: ModelKeeper(settings) for feed in self.feeds}
        """The same, per local source: each source's model is swapped and rolled back on its own."""
        self.updater = updater if updater is not None else self._updater_from_settings()
        """Fetches rolled-out models from the hub (``[agent.updates]``); None: update_model names a local path."""
        self._connect = connect
        self._uplink = uplink
        self.outbox = outbox or Outbox(
            settings.outbox_path, max_items=settings.outbox_max_items, synchronous=settings.outbox_synchronous
        )
        self._clock = clock
        self.reconnects = 0
        self.connected = asyncio.Event()
        self.uplink_connected = asyncio.Event() if uplink is not None else self.connected
        self._queued = asyncio.Event()
        self._windows_ready = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._background: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._http: contextlib.AbstractAsyncContextManager[int] | None = None
        self.http_port: int | None = None
        if self.outbox.depth:
            self._queued.set()

    @property
    def stats(self) -> AgentStats:
        return self.pipeline.stats

    @property
    def queued(self) -> int:
        """Messages in the outbox not sent yet (escalations sent and awaiting their verdicts not counted)."""
        return self.outbox.unsent()

    def feed_filters(self) -> list[str]:
        root, site = self.settings.broker.root, self.settings.site
        return [topic_filter(Kind.TELEMETRY, site=site, device=device, root=root) for device in self.settings.devices]

    def uplink_filters(self) -> list[str]:
        root = (self.settings.uplink or self.settings.broker).root
        site = self.settings.site
        devices = list(self.settings.devices)
        if "+" not in devices:  # verdicts on the escalations of local sources come to their device ids
            devices += sorted({feed.key.device for feed in self.feeds} - set(devices))
        return [
            topic_filter(kind, site=site, device=device, root=root)
            for device in devices
            for kind in (Kind.VERDICT, Kind.COMMAND)
        ]

    def _feed_for(self, candidate: LoadedModel) -> LocalFeed | None:
        """The local source whose model does ``candidate``'s task; ``None``: the sensor model's place."""
        task = candidate.manifest.task
        if task == self.pipeline.model.manifest.task:
            return None
        feed = next((feed for feed in self.feeds if feed.model.manifest.task == task), None)
        if feed is not None and candidate.manifest.input != feed.model.manifest.input:
            # A source opened its device for its model's input (frame size, sample rate, window): a model that
            # reads another input needs the source reopened, which is a restart with new settings.
            raise ModelLoadError(
                f"model {candidate.manifest.name} {candidate.manifest.version} reads another input than "
                f"{feed.name}'s model; put it in the settings and restart the agent"
            )
        return feed

    async def swap_model(self, manifest_path: Path) -> LoadedModel:
        """Load, check and put live a new model, on probation; the current one is kept for a rollback.

        The new model takes the place of the model that does its task: the sensor model's, or a local
        source's (camera, microphone), which must then read the same input. Raises
        :class:`ModelLoadError` (and changes nothing) when the new model's hash or signature is wrong, it
        does not run, or no place fits it."""
        settings = self.settings
        keys = read_trusted_keys(settings.trusted_model_keys)
        # Loading builds an inference session: keep it off the event loop so readings keep flowing.
        candidate = await asyncio.to_thread(
            load_model, manifest_path, backend=settings.backend, threads=settings.threads, trusted_keys=keys
        )
        try:
            outcomes = candidate.infer([candidate.probe_window()])
        except AgentError as exc:
            raise ModelLoadError(f"model {candidate.manifest.name} fails its self-test: {exc}") from exc
        if len(outcomes) != 1:
            raise ModelLoadError(f"model {candidate.manifest.name} fails its self-test: no outcome")
        feed = self._feed_for(candidate)
        if feed is None:
            previous = self.pipeline.model
            self.pipeline.set_model(candidate)
            self.keeper.start(candidate, previous, self.stats)
        else:
            previous = feed.model
            feed.model = candidate  # the next window the source hands over is inferred by it
            self.feed_keepers[feed.name].start(candidate, previous, self.stats)
        log.info(
            "model_swapped name=%s version=%s previous=%s source=%s",
            candidate.manifest.name,
            candidate.manifest.version,
            previous.manifest.version,
            "sensors" if feed is None else feed.name,
        )
        return candidate

    def _review_model(self, feed: LocalFeed | None = None) -> None:
        """After a batch: keep the model on probation, or roll it back (the sensor model's, or ``feed``'s)."""
        keeper = self.keeper if feed is None else self.feed_keepers[feed.name]
        review = keeper.review(self.stats)
        if review is None:
            return
        current = self.pipeline.model if feed is None else feed.model
        if review.action == "rollback" and keeper.previous is not None:
            if feed is None:
                self.pipeline.set_model(keeper.previous)
            else:
                feed.model = keeper.previous
            log.warning(
                "model_rolled_back name=%s version=%s back_to=%s reason=%s",
                current.manifest.name,
                current.manifest.version,
                keeper.previous.manifest.version,
                review.reason,
            )
        else:
            log.info(
                "model_kept name=%s version=%s reason=%s",
                current.manifest.name,
                current.manifest.version,
                review.reason,
            )

    def _updater_from_settings(self) -> ModelUpdater | None:
        updates = self.settings.updates
        if updates is None:
            return None
        fetcher = ModelFetcher.from_settings(
            updates, trusted_keys=read_trusted_keys(self.settings.trusted_model_keys), backend=self.settings.backend
        )
        return ModelUpdater(fetcher, current=lambda: (self.model.manifest.name, self.model.manifest.version))

    @property
    def model(self) -> LoadedModel:
        """The model live in the pipeline."""
        return self.pipeline.model

    def _reply(self, command: Command, status: ReplyStatus, detail: str, result: dict[str, CommandArgument]) -> None:
        """Answer a command on the device's reply topic, through the outbox like everything sent."""
        reply = CommandReply(
            device_id=command.device_id,
            timestamp=self._clock(),
            command_id=command.message_id,
            name=command.name,
            status=status,
            detail=detail[:1024],
            result=result,
        )
        topic = Topic(
            site=self.settings.site, device=command.device_id, kind=Kind.REPLY, root=self.settings.broker.root
        )
        envelope = Envelope(
            topic=str(topic),
            payload=encode(reply),
            qos=1,
            priority=5,
            kind=Kind.REPLY.value,
            message_id=reply.message_id,
        )
        self._enqueue([envelope])

    async def _run_command(self, command: Command) -> None:
        if command.name is not CommandName.UPDATE_MODEL:
            log.info("command_ignored name=%s message_id=%s", command.name.value, command.message_id)
            return
        if self.updater is not None:
            await self.updater.run(command, swap=self.swap_model, reply=self._reply)
            return
        manifest = command.args.get("manifest")
        if not isinstance(manifest, str):
            log.warning("command_refused message_id=%s reason=update_model needs a 'manifest' path", command.message_id)
            return
        try:
            await self.swap_model(Path(manifest))
        except (ModelLoadError, OSError) as exc:
            log.warning("model_refused message_id=%s reason=%s", command.message_id, exc)

    async def __aenter__(self) -> EdgeAgent:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        if self._uplink is None:
            filters = self.feed_filters() + self.uplink_filters()
            self._spawn(self._sessions("broker", self._connect, filters, self.connected, publish=True))
        else:
            self._spawn(self._sessions("feed", self._connect, self.feed_filters(), self.connected, publish=False))
            self._spawn(
                self._sessions("uplink", self._uplink, self.uplink_filters(), self.uplink_connected, publish=True)
            )
        self._spawn(self._batcher())
        for feed in self.feeds:
            self._spawn(self._local_feed(feed))
        if self.settings.http_port is not None:
            from edge_agent.http import serve

            self._http = serve(self, self.settings.http_host, self.settings.http_port)
            self.http_port = await self._http.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._http is not None:
            await self._http.__aexit__(None, None, None)
        # Finish the windows already complete; what is not sent by then waits in the outbox.
        self._enqueue(self.pipeline.flush(self._clock()))
        if self.uplink_connected.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    while self.outbox.unsent() and self.uplink_connected.is_set():  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
        for task in self._background:
            task.cancel()
        self._stopped.set()
        assert self._tasks is not None
        await self._tasks.__aexit__(None, None, None)
        log.info("stopped outbox_depth=%d", self.outbox.depth)
        self.outbox.close()

    async def wait_closed(self) -> None:
        await self._stopped.wait()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no window or message is waiting; ``False`` if that took longer than ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                # Three tasks change these conditions; a short poll is simpler than more events.
                while self.pipeline.pending or self.outbox.unsent():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                return True
        return False

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self._tasks is not None
        task = self._tasks.create_task(coroutine)
        self._background.append(task)
        task.add_done_callback(self._background.remove)

    def _enqueue(self, envelopes: list[Envelope]) -> None:
        if not envelopes:
            return
        dropped = self.outbox.put(envelopes)
        if dropped:
            log.warning("outbox full dropped=%d depth=%d", dropped, self.outbox.depth)
        self._queued.set()

    async def _sessions(
        self, name: str, connect: Connect, filters: list[str], connected: asyncio.Event, *, publish: bool
    ) -> None:
        backoff = 0.2
        while True:
            try:
                async with connect() as session:
                    await session.subscribe(filters, qos=1)
                    connected.set()
                    backoff = 0.2
                    log.info("connected link=%s site=%s", name, self.settings.site)
                    async with asyncio.TaskGroup() as tasks:
                        publisher = tasks.create_task(self._publisher(session)) if publish else None
                        await self._reader(session)
                        if publisher is not None:
                            publisher.cancel()
            except* TransportError as group:
                log.warning("connection lost link=%s reason=%s", name, group.exceptions[0])
            finally:
                connected.clear()
            self.reconnects += 1
            delay = backoff * random.uniform(0.5, 1.5)
            backoff = min(backoff * 2, 30.0)
            await asyncio.sleep(delay)

    async def _reader(self, session: Session) -> None:
        max_batch = self.settings.max_batch
        async for incoming in session.messages():
            self._enqueue(self.pipeline.handle(incoming.topic, incoming.payload, self._clock()))
            if self.pipeline.settled:
                self.outbox.settle(self.pipeline.settled)
                self.pipeline.settled.clear()
            while self.pipeline.commands:
                self._spawn(self._run_command(self.pipeline.commands.popleft()))
            pending = self.pipeline.pending
            if pending:
                self._windows_ready.set()
                if pending >= max_batch:
                    self._batch_full.set()
        raise TransportError("the broker closed the message stream")

    async def _publisher(self, session: Session) -> None:
        retry = self.settings.escalation_retry_s
        while True:
            # Wake for new messages, or when the oldest escalation still without a verdict is due again.
            sent_at = self.outbox.next_retry()
            timeout = None if sent_at is None else max(0.0, sent_at + retry - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._queued.wait()
            self._queued.clear()
            while batch := self.outbox.peek(self.settings.max_in_flight, now=self._clock(), retry_after_s=retry):
                # Publish a batch concurrently; each returns once the broker acknowledged it (QoS 1).
                results = await asyncio.gather(
                    *(session.publish(item.topic, item.payload, qos=item.qos) for item in batch),
                    return_exceptions=True,
                )
                delivered = [item.id for item, result in zip(batch, results, strict=True) if result is None]
                self.outbox.ack(delivered, now=self._clock())
                failure = next((r for r in results if isinstance(r, BaseException)), None)
                if failure is not None:
                    raise failure

    async def _local_feed(self, feed: LocalFeed) -> None:
        """Read a local source in a thread of its own; infer what it hands over, on the loop, with its model."""
        loop = asyncio.get_running_loop()
        # One thread per source: a read blocks for a frame or a block of audio, and the source is closed by
        # the same thread once its last read has returned.
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"feed-{feed.kind}")
        log.info("feed_started source=%s kind=%s model=%s", feed.name, feed.kind, feed.model.manifest.name)
        try:
            while (windows := await loop.run_in_executor(reader, feed.read)) is not None:
                if windows:
                    self._enqueue(self.pipeline.infer_local(windows, feed.model, self._clock()))
                    self._review_model(feed)
            log.info("feed_ended source=%s counts=%s", feed.name, dict(feed.counts))
        except Exception as exc:  # a failing source stops itself, never the agent and its other feeds
            log.error("feed_failed source=%s reason=%r", feed.name, exc)
        finally:
            reader.submit(feed.close)
            reader.shutdown(wait=False)

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
                self._review_model()
            # Let the readers and the publisher run between batches.
            await asyncio.sleep(0)
