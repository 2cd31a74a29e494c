"""The demo's embedded MQTT broker: Mosquitto when it is installed, else amqtt in this process."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

BrokerChoice = Literal["auto", "mosquitto", "embedded"]


class BrokerUnavailableError(Exception):
    """No broker of the requested kind can be started here."""


@dataclass(frozen=True, slots=True)
class RunningBroker:
    kind: str
    host: str
    port: int
    shared_subscriptions: bool


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_for_port(port: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return


@asynccontextmanager
async def embedded_broker(choice: BrokerChoice = "auto") -> AsyncIterator[RunningBroker]:
    """Start a broker on a free loopback port for as long as the context lasts."""
    mosquitto = shutil.which("mosquitto")
    if choice == "mosquitto" and mosquitto is None:
        raise BrokerUnavailableError("mosquitto is not on PATH (apt-get install mosquitto)")
    port = free_port()
    if mosquitto is not None and choice != "embedded":
        async with _mosquitto(mosquitto, port) as broker:
            yield broker
    else:
        async with _amqtt(port) as broker:
            yield broker


@asynccontextmanager
async def _mosquitto(executable: str, port: int) -> AsyncIterator[RunningBroker]:
    with tempfile.TemporaryDirectory(prefix="edgefleet-mosquitto-") as directory:
        config = Path(directory) / "mosquitto.conf"
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
        )
        process = await asyncio.create_subprocess_exec(
            executable, "-c", str(config), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            await _wait_for_port(port, 10.0)
            yield RunningBroker(kind="mosquitto", host="127.0.0.1", port=port, shared_subscriptions=True)
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    async with asyncio.timeout(5):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()


@asynccontextmanager
async def _amqtt(port: int) -> AsyncIterator[RunningBroker]:
    try:
        from amqtt.broker import Broker
    except ImportError as exc:
        raise BrokerUnavailableError(
            "neither mosquitto nor the in-process broker is installed: apt-get install mosquitto, "
            "or install amqtt (make demo does: pip install --no-deps amqtt==0.12.1)"
        ) from exc
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    try:
        # amqtt has no shared subscriptions: hub workers then subscribe plainly.
        yield RunningBroker(kind="amqtt (in-process)", host="127.0.0.1", port=port, shared_subscriptions=False)
    finally:
        await broker.shutdown()
