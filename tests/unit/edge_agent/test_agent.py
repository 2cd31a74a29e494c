from __future__ import annotations

import asyncio

from edge_agent.agent import EdgeAgent
from edge_agent.model import LoadedModel
from edge_agent.settings import AgentSettings
from edge_agent.transport import Incoming, InMemoryBroker
from protocol import Escalation, Kind, Outcome, TelemetryReading, Topic, Verdict, decode, encode

TOPIC = Topic(site="plant-1", device="meter-001", kind=Kind.TELEMETRY, stream="power")


def reading(seq: int, value: float) -> Incoming:
    message = TelemetryReading(
        device_id="meter-001", timestamp=1_800_000_000.0, stream="power", sensor="power", unit="kW", seq=seq,
        value=value,
    )  # fmt: skip
    return Incoming(str(TOPIC), encode(message))


async def test_agent_decides_escalates_and_receives_verdicts(settings: AgentSettings, fake_model: LoadedModel) -> None:
    broker = InMemoryBroker()
    async with EdgeAgent(
        settings, model=fake_model, connect=broker.connector("agent"), clock=lambda: 1_800_000_000.0
    ) as agent:
        await asyncio.wait_for(agent.connected.wait(), 2)
        for seq, value in enumerate([10.0, 20.0, 30.0, 40.0, 10.0, 11.0, 9.0, 10.0]):
            broker.deliver(reading(seq, value))
        async with asyncio.timeout(2):
            while agent.stats.escalations < 1 or agent.queued:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        escalations = [m for m in broker.published if Topic.parse(m.topic).kind is Kind.ESCALATION]
        assert len(escalations) == 1
        escalation = decode(escalations[0].payload)
        assert isinstance(escalation, Escalation)
        verdict = Verdict(
            device_id="meter-001",
            timestamp=1_800_000_000.0,
            escalation_id=escalation.message_id,
            cloud=Outcome(model="c", model_version="1", label="low", confidence=0.9, anomaly_score=0.0),
            agrees_with_edge=False,
        )
        broker.deliver(Incoming(str(TOPIC.sibling(Kind.VERDICT)), encode(verdict)))
        async with asyncio.timeout(2):
            while agent.stats.verdicts < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    assert agent.stats.windows == 2
    assert agent.stats.batches >= 1


async def test_agent_reconnects_after_the_broker_comes_back(settings: AgentSettings, fake_model: LoadedModel) -> None:
    broker = InMemoryBroker()
    async with EdgeAgent(settings, model=fake_model, connect=broker.connector("agent"), clock=lambda: 1.8e9) as agent:
        await asyncio.wait_for(agent.connected.wait(), 2)
        broker.deliver(Incoming(str(TOPIC), b"garbage"))
        async with asyncio.timeout(2):
            while agent.queued or agent.stats.rejections == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        broker.take_offline()
        async with asyncio.timeout(2):
            while agent.connected.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        broker.online = True
        await asyncio.wait_for(agent.connected.wait(), 10)
        broker.deliver(Incoming(str(TOPIC), b"more garbage"))
        async with asyncio.timeout(2):
            while agent.queued or agent.stats.rejections < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        assert agent.reconnects >= 1
    errors = [m for m in broker.published if Topic.parse(m.topic).kind is Kind.ERROR]
    assert len(errors) == 2


async def test_escalations_wait_in_the_outbox_while_the_uplink_is_down(
    settings: AgentSettings, fake_model: LoadedModel
) -> None:
    feed, hub_side = InMemoryBroker(), InMemoryBroker()
    hub_side.online = False
    settings = settings.model_copy(update={"policy": settings.policy.model_copy(update={"episode_reminder_s": 0})})
    agent = EdgeAgent(
        settings,
        model=fake_model,
        connect=feed.connector("agent"),
        uplink=hub_side.connector("agent-uplink"),
        clock=lambda: 1_800_000_000.0,
    )
    async with agent:
        await asyncio.wait_for(agent.connected.wait(), 2)
        for day in range(3):  # three unsure windows: flat trend
            for offset, value in enumerate([10.0, 11.0, 9.0, 10.0]):
                feed.deliver(reading(day * 4 + offset, value))
        async with asyncio.timeout(2):
            while agent.stats.escalations < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        assert agent.queued == 6  # three results and three escalations, waiting
        assert not hub_side.published
        hub_side.online = True
        assert await agent.drained(10)
    kinds = [Topic.parse(m.topic).kind for m in hub_side.published]
    assert kinds.count(Kind.ESCALATION) == 3
    assert kinds.count(Kind.INFERENCE) == 3
    # The urgent ones go first once the uplink is back.
    assert kinds[:3] == [Kind.ESCALATION] * 3
    assert not [m for m in feed.published if Topic.parse(m.topic).kind is not Kind.TELEMETRY]


async def test_what_was_not_sent_is_sent_by_the_next_run(settings: AgentSettings, fake_model: LoadedModel) -> None:
    feed, hub_side = InMemoryBroker(), InMemoryBroker()
    hub_side.online = False
    async with EdgeAgent(
        settings, model=fake_model, connect=feed.connector("a"), uplink=hub_side.connector("b"), clock=lambda: 1.8e9
    ) as agent:
        await asyncio.wait_for(agent.connected.wait(), 2)
        for offset, value in enumerate([10.0, 11.0, 9.0, 10.0]):
            feed.deliver(reading(offset, value))
        async with asyncio.timeout(2):
            while agent.queued < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    hub_side.online = True
    async with EdgeAgent(
        settings, model=fake_model, connect=feed.connector("a"), uplink=hub_side.connector("b"), clock=lambda: 1.8e9
    ) as again:
        assert again.queued == 2
        assert await again.drained(10)
    assert len(hub_side.published) == 2
