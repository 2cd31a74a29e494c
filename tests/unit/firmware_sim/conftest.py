from __future__ import annotations

import asyncio
from typing import Any

from firmware_sim.fleet import Fleet, MemorySession
from firmware_sim.scenario import parse_scenario
from firmware_sim.settings import SimSettings
from protocol import Message, ProtocolError, decode


def scenario(**changes: Any) -> dict[str, Any]:
    """A small unpaced reproducible scenario, changed as a test needs."""
    document: dict[str, Any] = {
        "name": "test",
        "seed": 11,
        "duration_s": 60.0,
        "speed": 0.0,
        "sites": [{"name": "lab", "devices": [{"profile": "thermometer", "count": 2, "prefix": "probe"}]}],
    }
    document.update(changes)
    return document


async def simulate(document: dict[str, Any], **settings: Any) -> tuple[Fleet, list[tuple[str, bytes]]]:
    """Run a scenario to its end with no broker; return the fleet and every message sent, in order."""
    fleet = Fleet(SimSettings(mode="memory", **settings), parse_scenario(document))
    await fleet.run(asyncio.Event())
    session = fleet.sessions[0]
    assert isinstance(session, MemorySession)
    return fleet, session.sent


def telemetry(sent: list[tuple[str, bytes]], device: str, stream: str) -> list[Message]:
    """The decoded telemetry of one stream, in sending order (malformed payloads skipped)."""
    suffix = f"/{device}/telemetry/{stream}"
    messages = []
    for topic, payload in sent:
        if topic.endswith(suffix):
            try:
                messages.append(decode(payload))
            except ProtocolError:  # malformed payloads are the point of some tests
                continue
    return messages
