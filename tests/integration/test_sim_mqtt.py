"""Simulated firmware against a real Mosquitto: birth, health, readings, Last Will, buffering across
a broker restart, commands and replies, the multiplexed mode, and byte-for-byte replay."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from firmware_sim.connection import MqttSession
from firmware_sim.fleet import Fleet
from firmware_sim.scenario import parse_scenario
from firmware_sim.settings import SimSettings
from protocol import (
    BrokerSettings,
    Command,
    CommandName,
    CommandReply,
    DeviceBirth,
    DeviceDeath,
    ReplyStatus,
    TelemetryReading,
    decode,
    encode,
)
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


class Observer:
    """Everything published under the root, as (topic, payload), reconnecting when the broker restarts."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.seen: list[tuple[str, bytes]] = []
        self.ready = asyncio.Event()
        self.client: aiomqtt.Client | None = None

    async def run(self) -> None:
        while True:
            with contextlib.suppress(aiomqtt.MqttError):
                async with aiomqtt.Client(self.broker.host, self.broker.port, identifier="sim-observer") as client:
                    self.client = client
                    await client.subscribe("edgefleet/#", qos=1)
                    self.ready.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        self.seen.append((str(message.topic), message.payload))
            self.client = None
            await asyncio.sleep(0.2)

    def messages(self) -> list[Any]:
        return [decode(payload) for _, payload in self.seen]


@contextlib.asynccontextmanager
async def observing(broker: Mosquitto) -> AsyncIterator[Observer]:
    observer = Observer(broker)
    task = asyncio.create_task(observer.run())
    await asyncio.wait_for(observer.ready.wait(), 10)
    try:
        yield observer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def settings(broker: Mosquitto, **changes: Any) -> SimSettings:
    return SimSettings(broker=BrokerSettings(host=broker.host, port=broker.port, keepalive_s=5), **changes)


def meters(count: int, rate_hz: float, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "it",
        "seed": 5,
        "clock": "live",
        "health_interval_s": 0.5,
        "sites": [
            {
                "name": "plant-1",
                "devices": [{"profile": "smart_meter", "count": count, "prefix": "meter", "rate_hz": rate_hz}],
            }
        ],
    }
    document.update(changes)
    return document


async def until(condition: Any, timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_devices_buffer_while_the_broker_is_down_and_resend_in_order(own_mosquitto: Mosquitto) -> None:
    fleet = Fleet(settings(own_mosquitto), parse_scenario(meters(2, 20.0)))
    async with observing(own_mosquitto) as observer:
        stop = asyncio.Event()
        run = asyncio.create_task(fleet.run(stop))
        await fleet.wait_connected()
        await asyncio.sleep(1.0)
        own_mosquitto.stop()
        await asyncio.sleep(1.5)  # readings keep coming and wait in the devices' outboxes
        assert fleet.totals().connected == 0
        assert fleet.totals().buffered > 2 * 20
        own_mosquitto.start()
        await until(lambda: fleet.totals().connected == 2 and fleet.totals().buffered == 0, 20.0)
        await asyncio.sleep(0.5)
        stop.set()
        await run
        await asyncio.sleep(0.5)

    totals = fleet.totals()
    assert totals.reconnects >= 2
    assert totals.dropped == 0
    seen = observer.messages()
    births = [m for m in seen if isinstance(m, DeviceBirth)]
    assert {b.device_id for b in births} == {"meter-000", "meter-001"}
    assert len(births) >= 4  # one per connect
    deaths = [m for m in seen if isinstance(m, DeviceDeath)]
    # The broker may send Last Wills ("connection lost") as it stops; the last word is the clean one.
    assert {d.reason for d in deaths} <= {"shutdown", "connection lost"}
    for device in ("meter-000", "meter-001"):
        assert [d.reason for d in deaths if d.device_id == device][-1] == "shutdown"
        seqs = [m.seq for m in seen if isinstance(m, TelemetryReading) and m.device_id == device]
        # Every reading arrives once the broker is back, in order; none lost across the outage
        # (QoS 1 may deliver one twice around the moment the connection broke).
        assert sorted(set(seqs)) == list(range(max(seqs) + 1))
        assert seqs == sorted(seqs)


async def test_the_broker_announces_a_lost_device_with_its_last_will(mosquitto: Mosquitto) -> None:
    fleet = Fleet(
        settings(mosquitto),
        parse_scenario(
            meters(
                1,
                5.0,
                sites=[{"name": "plant-9", "devices": [{"profile": "smart_meter", "count": 1, "prefix": "lost"}]}],
            )
        ),
    )
    async with observing(mosquitto) as observer, fleet:
        await fleet.wait_connected()
        session = fleet.sessions[0]
        assert isinstance(session, MqttSession)
        await asyncio.sleep(0.3)
        wire = session._wire  # cut the TCP connection, as a power loss would
        assert wire is not None and wire.transport is not None
        wire.transport.abort()
        await until(lambda: any(isinstance(m, DeviceDeath) and m.device_id == "lost-000" for m in observer.messages()))
        await until(lambda: session.connects >= 2)
    deaths = [m for m in observer.messages() if isinstance(m, DeviceDeath) and m.device_id == "lost-000"]
    assert [d.reason for d in deaths] == ["connection lost", "shutdown"]


async def test_commands_get_replies_over_the_broker(mosquitto: Mosquitto) -> None:
    document = meters(
        1, 2.0, sites=[{"name": "plant-2", "devices": [{"profile": "climate", "count": 1, "prefix": "room"}]}]
    )
    for mode in ("per_device", "multiplexed"):
        fleet = Fleet(settings(mosquitto, mode=mode, connections=2), parse_scenario(document))
        async with observing(mosquitto) as observer, fleet:
            await fleet.wait_connected()
            await asyncio.sleep(0.3)
            assert observer.client is not None
            sent = []
            for name, args in (
                (CommandName.SET_SAMPLING_RATE, {"stream": "temperature", "rate_hz": 5.0}),
                (CommandName.REPORT_CONFIG, {}),
                (CommandName.UPDATE_MODEL, {"model": "climate_edge", "version": "3"}),
                (CommandName.STOP_STREAM, {"stream": "radon"}),
            ):
                command = Command(device_id="room-000", timestamp=1.0, name=name, args=args)
                sent.append(command.message_id)
                await observer.client.publish("edgefleet/plant-2/room-000/command", encode(command), qos=1)
            await until(lambda: sum(isinstance(m, CommandReply) for m in observer.messages()) >= 4)
            await asyncio.sleep(1.2)
        replies = {m.command_id: m for m in observer.messages() if isinstance(m, CommandReply)}
        assert [replies[i].status for i in sent] == [
            ReplyStatus.OK,
            ReplyStatus.OK,
            ReplyStatus.ACCEPTED,
            ReplyStatus.REJECTED,
        ], mode
        assert replies[sent[1]].result["temperature.rate_hz"] == 5.0
        temperature = [m for m in observer.messages() if isinstance(m, TelemetryReading) and m.stream == "temperature"]
        assert len(temperature) >= 4, mode  # 5 Hz after the command, 0.1 Hz before


async def test_many_devices_share_few_connections_in_the_multiplexed_mode(mosquitto: Mosquitto) -> None:
    document = meters(40, 10.0, duration_s=2.0)
    fleet = Fleet(settings(mosquitto, mode="multiplexed", connections=3), parse_scenario(document))
    async with observing(mosquitto) as observer:
        await fleet.run(asyncio.Event())
        await until(lambda: sum(t.endswith("/death") for t, _ in observer.seen) >= 40, 10.0)
    assert len(fleet.sessions) == 3
    per_device: dict[str, list[int]] = {}
    for message in observer.messages():
        if isinstance(message, TelemetryReading):
            per_device.setdefault(message.device_id, []).append(message.seq)
    assert len(per_device) == 40
    assert all(seqs == list(range(20)) for seqs in per_device.values())
    assert fleet.totals().published == 40 * 20


async def test_a_reproducible_run_replays_byte_for_byte_through_the_broker(mosquitto: Mosquitto) -> None:
    document = {
        "name": "replay",
        "seed": 9,
        "duration_s": 30.0,
        "speed": 0.0,
        "sites": [{"name": "plant-3", "devices": [{"profile": "climate", "count": 3, "rate_hz": 2.0, "prefix": "r"}]}],
        "faults": [{"kind": "spike", "every_s": 5.0}, {"kind": "malformed", "probability": 0.05}],
    }
    runs = []
    for _ in range(2):
        fleet = Fleet(settings(mosquitto), parse_scenario(document))
        async with observing(mosquitto) as observer:
            await fleet.run(asyncio.Event())
            await until(lambda: sum(t.endswith("/death") for t, _ in observer.seen) >= 3, 10.0)
        runs.append([(t, p) for t, p in observer.seen if "/telemetry/" in t])
    assert len(runs[0]) == 3 * 2 * 30 * 2  # devices × streams × seconds × Hz
    # Devices hold separate connections, so only each topic's order is the broker's to keep.
    first, second = (sorted(run, key=lambda item: item[0]) for run in runs)
    assert first == second
