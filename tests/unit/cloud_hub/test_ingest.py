"""The ingest's decisions, without MQTT: a fake publisher records what would be sent."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from cloud_hub.adjudication import Adjudicator, Judge
from cloud_hub.errors import PublishError
from cloud_hub.ingest import Backoff, MessageHandler, subscriptions
from cloud_hub.store import DeviceStatus, EventKind, Store
from protocol.codec import decode_as, encode
from protocol.messages import Verdict
from protocol.topics import Kind, Topic
from tests.unit.cloud_hub import factories
from tests.unit.cloud_hub.factories import SUMMER

ESCALATION_TOPIC = "edgefleet/site-1/dev-1/escalation"
VERDICT_TOPIC = "edgefleet/site-1/dev-1/verdict"
INGEST_LOGGER = "edgefleet.hub.ingest"


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.fail = False

    async def __call__(self, topic: str, payload: bytes) -> None:
        if self.fail:
            raise PublishError("broker gone")
        self.sent.append((topic, payload))

    def verdicts(self) -> list[Verdict]:
        return [decode_as(Verdict, payload, topic=Topic.parse(topic)) for topic, payload in self.sent]


@pytest.fixture
async def handler(store: Store, judge: Judge) -> AsyncIterator[MessageHandler]:
    async with Adjudicator(judge, store, max_batch=8, max_wait_ms=0.0, clock=lambda: 1_750_000_000.0) as adjudicator:
        yield MessageHandler(store=store, adjudicator=adjudicator)


async def feed(handler: MessageHandler, topic: str, payload: bytes, publish: FakePublisher) -> None:
    parsed = handler.parse(topic, payload)
    if parsed is not None:
        await handler.handle(*parsed, publish)


async def test_escalation_is_judged_stored_and_answered(handler: MessageHandler, store: Store) -> None:
    publish = FakePublisher()
    esc = factories.escalation(values=SUMMER, edge_label="winter")

    await feed(handler, ESCALATION_TOPIC, encode(esc), publish)

    [verdict] = publish.verdicts()
    assert publish.sent[0][0] == VERDICT_TOPIC
    assert verdict.escalation_id == esc.message_id
    assert verdict.device_id == "dev-1"
    assert verdict.cloud.label == "summer"
    assert verdict.agrees_with_edge is False
    assert await store.stored_verdict(esc.message_id) == verdict
    assert handler.counters.judged == 1
    assert handler.counters.verdicts_sent == 1
    assert handler.counters.received["escalation"] == 1


async def test_repeated_escalation_gets_the_stored_verdict_again(handler: MessageHandler, store: Store) -> None:
    publish = FakePublisher()
    payload = encode(factories.escalation())

    await feed(handler, ESCALATION_TOPIC, payload, publish)
    await feed(handler, ESCALATION_TOPIC, payload, publish)

    first, second = publish.verdicts()
    assert first == second
    assert handler.counters.judged == 1
    assert handler.counters.duplicates == 1
    assert handler.counters.verdicts_sent == 2
    assert (await store.list_events(kind=EventKind.ESCALATION)).total == 1


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("edgefleet/site-1/dev-1/escalation", b"{not json", "malformed_payload"),
        ("edgefleet/site-1/dev-1/escalation", b"", "malformed_payload"),
        ("edgefleet/site-1/dev-1/escalation", b'{"type": "escalation", "v": 1}', "schema_violation"),
        (
            "edgefleet/site-1/dev-1/escalation",
            encode(factories.escalation()).replace(b'"v":1', b'"v":7'),
            "unsupported_version",
        ),
        ("edgefleet/site-1/other-device/escalation", None, "topic_mismatch"),
        ("edgefleet/site-1/dev-1/nonsense", b"{}", "bad_topic"),
        ("somewhere/else", b"{}", "bad_topic"),
    ],
)
async def test_bad_input_is_counted_by_reason(
    handler: MessageHandler,
    topic: str,
    payload: bytes | None,
    reason: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # import-linter (tests/test_architecture.py) disables every existing logger when run in-process.
    monkeypatch.setattr(logging.getLogger(INGEST_LOGGER), "disabled", False)
    publish = FakePublisher()
    esc = factories.escalation()
    with caplog.at_level(logging.WARNING, logger=INGEST_LOGGER):
        await feed(handler, topic, payload if payload is not None else encode(esc), publish)

    assert handler.counters.rejected == {reason: 1}
    assert publish.sent == []
    [record] = [record for record in caplog.records if getattr(record, "event", None) == "message_rejected"]
    assert record.getMessage().startswith(f"message_rejected reason={reason} ")
    assert "\n" not in record.getMessage()


async def test_window_that_does_not_fit_the_model_is_rejected(handler: MessageHandler, store: Store) -> None:
    publish = FakePublisher()
    await feed(handler, ESCALATION_TOPIC, encode(factories.escalation(values=[1.0, 2.0, 3.0])), publish)

    assert handler.counters.rejected == {"window_mismatch": 1}
    assert publish.sent == []
    assert (await store.list_events()).total == 0


async def test_unsent_verdict_is_counted_and_sent_when_the_escalation_returns(handler: MessageHandler) -> None:
    publish = FakePublisher()
    payload = encode(factories.escalation())
    publish.fail = True
    await feed(handler, ESCALATION_TOPIC, payload, publish)
    assert handler.counters.failures == {"publish": 1}

    publish.fail = False
    await feed(handler, ESCALATION_TOPIC, payload, publish)
    assert len(publish.verdicts()) == 1
    assert handler.counters.judged == 1


async def test_lifecycle_health_and_errors_update_the_registry(handler: MessageHandler, store: Store) -> None:
    publish = FakePublisher()
    await feed(handler, "edgefleet/site-1/dev-1/birth", encode(factories.birth(timestamp=1000.0)), publish)
    await feed(handler, "edgefleet/site-1/dev-1/health", encode(factories.health(timestamp=1001.0)), publish)
    await feed(handler, "edgefleet/site-1/dev-1/error", encode(factories.error_event(timestamp=1002.0)), publish)
    device = await store.get_device("dev-1")
    assert device is not None and device.status is DeviceStatus.ONLINE
    assert device.last_health is not None

    await feed(handler, "edgefleet/site-1/dev-1/death", encode(factories.death(timestamp=1003.0)), publish)
    device = await store.get_device("dev-1")
    assert device is not None and device.status is DeviceStatus.OFFLINE

    assert publish.sent == []
    assert dict(handler.counters.received) == {"birth": 1, "health": 1, "error": 1, "death": 1}
    assert (await store.stats()).events_by_kind == {"birth": 1, "error": 1, "death": 1}


def test_subscriptions() -> None:
    assert subscriptions(share_group="hub") == [
        "edgefleet/+/+/birth",
        "edgefleet/+/+/death",
        "edgefleet/+/+/health",
        "edgefleet/+/+/error",
        "$share/hub/edgefleet/+/+/escalation",
    ]
    assert subscriptions(share_group=None, root="plant")[-1] == "plant/+/+/escalation"


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_backoff_grows_to_its_cap_with_jitter(jitter: float) -> None:
    backoff = Backoff(initial_s=1.0, maximum_s=8.0, jitter=lambda: jitter)
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert delays == [ceiling / 2 * (1 + jitter) for ceiling in ceilings]
    backoff.reset()
    assert backoff.next_delay() == 0.5 * (1 + jitter)


def test_verdict_topic_is_the_devices() -> None:
    assert str(Topic.parse(ESCALATION_TOPIC).sibling(Kind.VERDICT)) == VERDICT_TOPIC
