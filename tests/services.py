"""Real services for integration tests: a Mosquitto of the tests' own on a free port, PostgreSQL.

Where a service is missing the test is skipped with a message naming it, unless
``EDGEFLEET_REQUIRE_SERVICES=1`` (set by CI), which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing(what: str) -> None:
    """Skip (or, under CI, fail) because ``what`` is not available."""
    if os.environ.get("EDGEFLEET_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing: {what}")
    pytest.skip(f"needs {what}")


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


@dataclass
class Mosquitto:
    """A mosquitto process owned by a test: can be stopped and started again on the same port."""

    port: int
    directory: Path
    extra_config: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def start(self) -> None:
        config = self.directory / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"max_queued_messages 100000\n{self.extra_config}\n"
        )
        with (self.directory / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=log, stderr=log)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@contextmanager
def running_mosquitto(directory: Path, extra_config: str = "") -> Iterator[Mosquitto]:
    if shutil.which("mosquitto") is None:
        missing("the mosquitto broker on PATH (apt-get install mosquitto)")
    broker = Mosquitto(port=free_port(), directory=directory, extra_config=extra_config)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


POSTGRES_URL = os.environ.get("EDGEFLEET_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


REPO = Path(__file__).resolve().parents[1]
EVM_NODE_DIR = REPO / "tools" / "evm-node"
# Hardhat Network's first two development accounts: publicly known keys, funded on its own chain only.
EVM_OWNER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
EVM_OTHER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


def install_evm_node() -> Path:
    """Hardhat from tools/evm-node (``npm ci`` there when its node_modules are missing)."""
    hardhat = EVM_NODE_DIR / "node_modules" / "hardhat" / "internal" / "cli" / "bootstrap.js"
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing("node and npm on PATH (Node.js 20) for the Hardhat EVM node")
    if not hardhat.is_file():
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=EVM_NODE_DIR,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0 or not hardhat.is_file():
            missing(f"the Hardhat EVM node ('npm ci' in {EVM_NODE_DIR} failed: {result.stderr.strip()[-500:]})")
    return hardhat


@contextmanager
def running_evm_node(directory: Path) -> Iterator[str]:
    """A real EVM node process (Hardhat Network) on a free loopback port; yields its JSON-RPC URL."""
    hardhat = install_evm_node()
    port = free_port()
    env = {**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "NO_COLOR": "1"}
    with (directory / "hardhat.log").open("wb") as log:
        process = subprocess.Popen(
            ["node", str(hardhat), "node", "--hostname", "127.0.0.1", "--port", str(port)],
            cwd=EVM_NODE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for_port(port, timeout_s=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def until(condition: Callable[[], bool], timeout_s: float, what: str, *, poll_s: float = 0.05) -> None:
    """Wait until ``condition()`` holds; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(poll_s)
