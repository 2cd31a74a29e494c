from __future__ import annotations

import asyncio
import json

from edge_agent.agent import EdgeAgent
from edge_agent.model import LoadedModel
from edge_agent.settings import AgentSettings
from edge_agent.transport import Incoming, InMemoryBroker
from protocol import Kind, TelemetryReading, Topic, encode

TOPIC = Topic(site="plant-1", device="meter-001", kind=Kind.TELEMETRY, stream="power")


async def get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_metrics_and_health_endpoints(settings: AgentSettings, fake_model: LoadedModel) -> None:
    settings = settings.model_copy(update={"http_port": 0})
    broker = InMemoryBroker()
    async with EdgeAgent(settings, model=fake_model, connect=broker.connector("a"), clock=lambda: 1.8e9) as agent:
        await asyncio.wait_for(agent.connected.wait(), 2)
        assert agent.http_port
        for seq, value in enumerate([10.0, 11.0, 9.0, 10.0]):
            reading = TelemetryReading(
                device_id="meter-001", timestamp=1.8e9, stream="power", sensor="power", unit="kW", seq=seq, value=value
            )
            broker.deliver(Incoming(str(TOPIC), encode(reading)))
        broker.deliver(Incoming(str(TOPIC), b"garbage"))
        async with asyncio.timeout(5):
            while agent.stats.rejections < 1 or agent.stats.windows < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert await agent.drained(5)
        status, body = await get(agent.http_port, "/metrics")
        text = body.decode()
        assert status == 200
        assert 'edgefleet_agent_rejections_total{reason="malformed_payload"} 1.0' in text
        assert 'edgefleet_agent_inferences_total{backend="fake",model="fake_edge",version="0.0.1"} 1.0' in text
        assert 'edgefleet_agent_escalation_rules_total{rule="low_confidence"} 1.0' in text
        assert "edgefleet_agent_decision_seconds_count 1.0" in text
        assert 'edgefleet_agent_outbox_depth{state="unsent"} 0.0' in text
        assert 'edgefleet_agent_outbox_depth{state="awaiting_reply"} 1.0' in text  # the escalation, no hub here
        assert 'edgefleet_agent_model_info{backend="fake"' in text
        status, body = await get(agent.http_port, "/health")
        assert status == 200
        document = json.loads(body)
        assert document["status"] == "ok"
        assert document["model"]["name"] == "fake_edge"
        assert (await get(agent.http_port, "/nope"))[0] == 404
        broker.take_offline()
        async with asyncio.timeout(2):
            while agent.connected.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert (await get(agent.http_port, "/health"))[0] == 503
