"""The whole hub (REST API, store, judge, MQTT ingest) served by uvicorn inside the current event loop.

::

    async with HubServer(settings) as hub:
        print(hub.base_url, hub.counters)

Used by ``edgefleet hub serve`` and ``edgefleet demo``. Signals stay with the host program: the server
installs no handlers of its own; cancel the enclosing task (or leave the ``async with``) to stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from types import TracebackType

import uvicorn

from cloud_hub.adjudication import Judge
from cloud_hub.api import create_app
from cloud_hub.dependencies import HubServices
from cloud_hub.errors import HubError, HubStartupError
from cloud_hub.ingest import IngestCounters, Ingestor
from cloud_hub.log import log_event
from cloud_hub.settings import HubSettings
from cloud_hub.store import Store

logger = logging.getLogger("edgefleet.hub.server")


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that tells when start-up is over and leaves signal handling to its host."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_done = asyncio.Event()
        self.bind_error: str | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit:
            # uvicorn exits the process when it cannot bind; inside a host program that is an error.
            self.bind_error = f"cannot listen on {self.config.host}:{self.config.port}"
            self.should_exit = True
        finally:
            self.startup_done.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HubServer:
    """Runs the hub in the current event loop; an async context manager.

    Entering returns once the HTTP server listens and, with ingest on, the ingest has subscribed at the
    broker (within ``ready_timeout_s``; ``None`` does not wait for the broker). It raises
    :class:`HubStartupError` if the hub cannot start. Leaving shuts uvicorn down cleanly.
    """

    def __init__(
        self, settings: HubSettings, *, start_ingest: bool = True, ready_timeout_s: float | None = 10.0
    ) -> None:
        self.settings = settings
        self.app = create_app(settings, start_ingest=start_ingest)
        self._start_ingest = start_ingest
        self._ready_timeout_s = ready_timeout_s
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise HubError("the hub server is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server (the bound port when ``port=0``)."""
        host = self.settings.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def services(self) -> HubServices:
        services: HubServices | None = getattr(self.app.state, "services", None)
        if services is None:
            raise HubError("the hub server is not running")
        return services

    @property
    def store(self) -> Store:
        return self.services.store

    @property
    def judge(self) -> Judge | None:
        return self.services.judge

    @property
    def ingestor(self) -> Ingestor | None:
        return self.services.ingestor

    @property
    def counters(self) -> IngestCounters | None:
        """The ingest's counters (``None`` when ingest is off)."""
        ingestor = self.ingestor
        return ingestor.counters if ingestor is not None else None

    async def __aenter__(self) -> HubServer:
        config = uvicorn.Config(
            self.app,
            host=self.settings.host,
            port=self.settings.port,
            log_level="warning",
            lifespan="on",
            log_config=None,  # the host program configures logging
            access_log=False,
            ws="none",
        )
        server = self._server = _EmbeddedServer(config)
        task = self._task = asyncio.create_task(server.serve(), name="hub-http")
        try:
            started = asyncio.create_task(server.startup_done.wait())
            try:
                await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                started.cancel()
            if not server.started:
                raise HubStartupError(self._startup_failure(server)) from self.app.state.startup_error
            self._port = _bound_port(server)
            if self._start_ingest and self._ready_timeout_s is not None and self.ingestor is not None:
                await self.ingestor.wait_subscribed(self._ready_timeout_s)
        except BaseException:
            await self._stop()
            raise
        log_event(logger, logging.INFO, "hub_listening", url=self.base_url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        self._port = None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
        except (Exception, SystemExit) as exc:  # the server failing as it stops must not hide why we stop
            log_event(logger, logging.ERROR, "hub_stop_failed", reason=repr(exc))

    def _startup_failure(self, server: _EmbeddedServer) -> str:
        error: BaseException | None = self.app.state.startup_error
        if error is not None:
            return f"the hub did not start: {error}"
        if server.bind_error is not None:
            return f"the hub did not start: {server.bind_error}"
        return "the hub did not start (see the log for the application's start-up error)"


def _bound_port(server: uvicorn.Server) -> int:
    for listener in server.servers:
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    raise HubStartupError("the hub server listens on no socket")
