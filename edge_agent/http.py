"""A small HTTP endpoint for the agent: ``GET /metrics`` (Prometheus) and ``GET /health`` (JSON).

Plain asyncio streams: the agent needs two read-only routes, not a web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from edge_agent.metrics import exposition, health, registry_for

if TYPE_CHECKING:
    from edge_agent.agent import EdgeAgent

log = logging.getLogger("edgefleet.agent.http")

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable", 400: "Bad Request"}


def _response(status: int, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


@contextlib.asynccontextmanager
async def serve(agent: EdgeAgent, host: str, port: int) -> AsyncIterator[int]:
    """Serve the endpoint while the context lasts; yields the bound port (``port=0`` picks one)."""
    registry = registry_for(agent)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].split("?")[0]
            if method != "GET":
                response = _response(405, b"only GET\n", "text/plain")
            elif path == "/metrics":
                response = _response(200, exposition(registry), "text/plain; version=0.0.4")
            elif path == "/health":
                healthy, document = health(agent)
                response = _response(200 if healthy else 503, json.dumps(document).encode(), "application/json")
            else:
                response = _response(404, b"try /metrics or /health\n", "text/plain")
            writer.write(response)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            # A scraper that hangs up or sends garbage gets no answer; the agent carries on.
            log.debug("http request dropped reason=%s", type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port)
    bound = int(server.sockets[0].getsockname()[1])
    log.info("http listening host=%s port=%d", host, bound)
    try:
        yield bound
    finally:
        server.close()
        await server.wait_closed()
