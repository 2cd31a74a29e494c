"""Simulated firmware against a real Mosquitto: birth, health, readings, Last Will, buffering across
a broker restart."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt
import pytest

from firmware_sim.fleet import Fleet
from firmware_sim.settings import SimSettings
from protocol import BrokerSettings, DeviceBirth, DeviceDeath, TelemetryReading, decode
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


async def collect(broker: Mosquitto, into: list[object], ready: asyncio.Event) -> None:
    while True:
        with contextlib.suppress(aiomqtt.MqttError):
            async with aiomqtt.Client(broker.host, broker.port, identifier="sim-observer") as client:
                await client.subscribe("edgefleet/#", qos=1)
                ready.set()
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    into.append(decode(message.payload))
        await asyncio.sleep(0.2)


async def test_devices_buffer_while_the_broker_is_down_and_resend_in_order(own_mosquitto: Mosquitto) -> None:
    settings = SimSettings(
        site="plant-1",
        devices=2,
        rate_hz=20.0,
        broker=BrokerSettings(host=own_mosquitto.host, port=own_mosquitto.port),
        spike_probability=0.0,
        health_interval_s=0.5,
    )
    fleet = Fleet(settings)
    seen: list[object] = []
    ready = asyncio.Event()
    observer = asyncio.create_task(collect(own_mosquitto, seen, ready))
    await asyncio.wait_for(ready.wait(), 10)
    stop = asyncio.Event()
    run = asyncio.create_task(fleet.run(stop))
    await asyncio.sleep(1.5)
    own_mosquitto.stop()
    await asyncio.sleep(1.5)  # readings keep coming and wait in the devices' buffers
    assert fleet.totals().connected == 0
    own_mosquitto.start()
    ready.clear()
    await asyncio.wait_for(ready.wait(), 15)
    async with asyncio.timeout(20):
        while fleet.totals().connected < 2 or any(d._buffer for d in fleet.devices):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    stop.set()
    await run
    await asyncio.sleep(0.5)
    observer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await observer

    totals = fleet.totals()
    assert totals.reconnects >= 2
    assert totals.dropped == 0
    births = [m for m in seen if isinstance(m, DeviceBirth)]
    assert {b.device_id for b in births} == {"meter-000", "meter-001"}
    assert len(births) >= 4  # one per connect
    deaths = [m for m in seen if isinstance(m, DeviceDeath)]
    # The broker may send Last Wills ("connection lost") as it stops; the last word is the clean one.
    assert {d.reason for d in deaths} <= {"shutdown", "connection lost"}
    for device in ("meter-000", "meter-001"):
        assert [d.reason for d in deaths if d.device_id == device][-1] == "shutdown"
    for device in ("meter-000", "meter-001"):
        seqs = [m.seq for m in seen if isinstance(m, TelemetryReading) and m.device_id == device]
        # Every reading arrives once the broker is back, and in order; none lost across the outage
        # (QoS 1 may deliver one reading twice around the moment the connection broke).
        assert sorted(set(seqs)) == list(range(max(seqs) + 1))
        assert seqs == sorted(seqs)
