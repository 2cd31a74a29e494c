"""The edge agent against a real Mosquitto, fed by a plain MQTT client (paho), not our encoder."""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.model import LoadedModel
from edge_agent.settings import AgentSettings
from edge_agent.transport import mqtt_connector
from protocol import BrokerSettings, ErrorEvent, InferenceResult, decode
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

TELEMETRY = "edgefleet/plant-1/meter-009/telemetry/power"


@pytest.fixture
def plain_client(mosquitto: Mosquitto) -> Iterator[tuple[paho.Client, queue.Queue[tuple[str, bytes]]]]:
    received: queue.Queue[tuple[str, bytes]] = queue.Queue()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="plain-test-client")
    client.on_message = lambda _c, _u, message: received.put((message.topic, message.payload))
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    client.subscribe("edgefleet/plant-1/meter-009/#", qos=1)
    time.sleep(0.2)
    yield client, received
    client.loop_stop()
    client.disconnect()


def hand_written_reading(seq: int, value: object) -> bytes:
    return (
        f'{{"type":"telemetry.reading","v":1,"id":"hand-{seq}","dev":"meter-009","ts":{time.time()},'
        f'"stream":"power","sensor":"power","unit":"kW","seq":{seq},"value":{json.dumps(value)}}}'
    ).encode()


async def wait_for(received: queue.Queue[tuple[str, bytes]], topic_suffix: str, timeout_s: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            topic, payload = received.get_nowait()
        except queue.Empty:
            await asyncio.sleep(0.02)
            continue
        if topic.endswith(topic_suffix):
            return payload
    raise AssertionError(f"nothing arrived on */{topic_suffix} within {timeout_s} s")


async def test_malformed_and_out_of_range_readings_become_error_events_and_the_agent_keeps_running(
    mosquitto: Mosquitto,
    plain_client: tuple[paho.Client, queue.Queue[tuple[str, bytes]]],
    fake_model: LoadedModel,
    tmp_path: Path,
) -> None:
    client, received = plain_client
    broker = BrokerSettings(host=mosquitto.host, port=mosquitto.port)
    settings = AgentSettings(site="plant-1", devices=["meter-009"], broker=broker, outbox_path=tmp_path / "outbox.db")
    async with EdgeAgent(settings, model=fake_model, connect=mqtt_connector(broker, client_id="agent-test")) as agent:
        await asyncio.wait_for(agent.connected.wait(), 10)

        client.publish(TELEMETRY, b'{"type":"telemetry.reading","v":1,"value":', qos=1)
        event = decode(await wait_for(received, "/error"))
        assert isinstance(event, ErrorEvent)
        assert event.code.value == "malformed_payload"
        assert event.device_id == "meter-009"

        client.publish(TELEMETRY, hand_written_reading(0, -40.0), qos=1)
        event = decode(await wait_for(received, "/error"))
        assert isinstance(event, ErrorEvent)
        assert event.code.value == "out_of_range"
        assert event.offending_id == "hand-0"

        client.publish(TELEMETRY, b"\xff\x00 not even text", qos=1)
        assert isinstance(decode(await wait_for(received, "/error")), ErrorEvent)

        # Still running: a clean window is decided and its result published.
        for seq, value in enumerate([10.0, 20.0, 30.0, 40.0], start=4):
            client.publish(TELEMETRY, hand_written_reading(seq, value), qos=1)
        result = decode(await wait_for(received, "/inference/power"))
        assert isinstance(result, InferenceResult)
        assert result.window_start_seq == 4
        assert agent.stats.rejected == {"malformed_payload": 2, "out_of_range": 1}


async def test_a_backlog_waiting_at_the_broker_is_drained_without_loss(
    mosquitto: Mosquitto, fake_model: LoadedModel, tmp_path: Path
) -> None:
    """Readings queued for the agent's persistent session while it was away (more than any client-side
    queue bound) are all decided when it comes back."""
    broker = BrokerSettings(host=mosquitto.host, port=mosquitto.port)
    settings = AgentSettings(
        site="plant-2", devices=["+"], broker=broker, outbox_path=tmp_path / "outbox.db", publish_results=False
    )
    connect = mqtt_connector(broker, client_id="agent-backlog-test", clean_session=False)
    async with EdgeAgent(settings, model=fake_model, connect=connect) as agent:
        await asyncio.wait_for(agent.connected.wait(), 10)  # the broker now holds the session
    devices, samples = 10, 1_200  # 12,000 readings, 3,000 windows of 4
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="backlog-publisher")
    client.max_inflight_messages_set(1000)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    for seq in range(samples):
        for device in range(devices):
            payload = (
                f'{{"type":"telemetry.reading","v":1,"id":"b-{device}-{seq}","dev":"m{device}","ts":{time.time()},'
                f'"stream":"power","sensor":"power","unit":"kW","seq":{seq},"value":{10 + seq % 4}}}'
            )
            client.publish(f"edgefleet/plant-2/m{device}/telemetry/power", payload.encode(), qos=1)
    while client._out_messages:  # noqa: ASYNC110 - paho has no public "all acknowledged"
        await asyncio.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    async with EdgeAgent(settings, model=fake_model, connect=connect) as agent:
        async with asyncio.timeout(120):
            while agent.stats.windows < devices * samples // 4:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert agent.stats.readings == devices * samples
        assert agent.stats.rejections == 0
