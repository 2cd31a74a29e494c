"""The agent as a service, run as a device runs it (``edgefleet-agent``, only the device lock file importable).

SIGTERM finishes the complete windows and keeps what is unsent; a signed model loads, a tampered one is
refused with exit code 3. Signatures are checked with the standard library alone (no `cryptography`).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import time
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import TelemetryReading, encode
from tests.services import Mosquitto, free_port
from tests.signed_models import copy_model, write_public_key

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEVICE_AGENT = (sys.executable, "-m", "tests.device_runtime", "edgefleet.agent_service")


async def test_sigterm_keeps_unsent_escalations_in_the_outbox(mosquitto: Mosquitto, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    config = tmp_path / "edgefleet.toml"
    config.write_text(
        f"""
[agent]
site = "plant-1"
client_id = "agent-service-test"
model_manifest = "{copy_model(tmp_path / "model", version="1.0.0", key=key)}"
trusted_model_keys = ["{write_public_key(key, tmp_path / "model-key.pem")}"]
fastest_variant = true  # the int8 copy is alone in its directory: timed, and chosen
outbox_path = "{tmp_path / "outbox.db"}"
max_wait_ms = 2000.0    # the last window is still waiting for its batch when SIGTERM comes
[agent.broker]
port = {mosquitto.port}
[agent.uplink]          # nothing listens here: the hub is unreachable
port = {free_port()}
[agent.policy]
min_confidence = 1.0
"""
    )
    log = tmp_path / "agent.log"
    with log.open("wb") as handle:
        agent = await asyncio.create_subprocess_exec(
            *DEVICE_AGENT, "--config", str(config), stdout=handle, stderr=handle, cwd=REPO,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "connected link=feed" not in log.read_text():
            assert agent.returncode is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="service-test-meter") as client:
            for seq in range(24):
                reading = TelemetryReading(
                    device_id="meter-042", timestamp=time.time(), stream="power", sensor="power", unit="kW",
                    seq=seq, value=40.0 + seq,
                )  # fmt: skip
                await client.publish("edgefleet/plant-1/meter-042/telemetry/power", encode(reading), qos=1)
        await asyncio.sleep(1.0)  # the readings are in; the window waits for its batch
        agent.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await agent.wait() == 0, log.read_text()
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()
    rows = sqlite3.connect(tmp_path / "outbox.db").execute("SELECT topic FROM outbox").fetchall()
    assert ("edgefleet/plant-1/meter-042/escalation",) in rows, log.read_text()
    assert "stopped outbox_depth=" in log.read_text()


async def test_a_model_signed_by_another_key_stops_the_device_agent_with_exit_3(tmp_path: Path) -> None:
    trusted, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    config = tmp_path / "edgefleet.toml"
    config.write_text(
        f"""
[agent]
model_manifest = "{copy_model(tmp_path / "model", version="1.0.0", key=stranger)}"
trusted_model_keys = ["{write_public_key(trusted, tmp_path / "model-key.pem")}"]
[agent.broker]
port = {free_port()}
"""
    )
    agent = await asyncio.create_subprocess_exec(
        *DEVICE_AGENT, "--config", str(config), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO
    )
    async with asyncio.timeout(30):
        _, stderr = await agent.communicate()
    assert agent.returncode == 3, stderr.decode()
    assert "not signed by a trusted key" in stderr.decode()
