from __future__ import annotations

import pytest

from protocol import Kind, Topic, TopicError, matches, shared, topic_filter


def test_topic_renders_and_parses() -> None:
    topic = Topic(site="plant-1", device="meter-001", kind=Kind.TELEMETRY, stream="power")
    assert str(topic) == "edgefleet/plant-1/meter-001/telemetry/power"
    assert Topic.parse(str(topic)) == topic
    verdict = topic.sibling(Kind.VERDICT)
    assert str(verdict) == "edgefleet/plant-1/meter-001/verdict"
    assert Topic.parse(str(verdict)) == verdict


@pytest.mark.parametrize(
    "text",
    [
        "edgefleet/plant-1/meter-001/telemetry",  # telemetry needs a stream
        "edgefleet/plant-1/meter-001/verdict/extra",  # verdicts have none
        "other/plant-1/meter-001/verdict",  # wrong root
        "edgefleet/plant-1/meter-001/gossip",  # unknown kind
        "edgefleet/plant-1/+/verdict",  # wildcard is not a concrete topic
        "edgefleet/plant 1/meter-001/verdict",
        "edgefleet//meter-001/verdict",
        "edgefleet/plant-1",
        "",
    ],
)
def test_bad_topics_are_refused(text: str) -> None:
    with pytest.raises(TopicError):
        Topic.parse(text)


def test_filters_and_shared_subscriptions() -> None:
    assert topic_filter(Kind.TELEMETRY) == "edgefleet/+/+/telemetry/#"
    assert topic_filter(Kind.VERDICT, site="plant-1", device="meter-001") == "edgefleet/plant-1/meter-001/verdict"
    assert shared("hub", topic_filter(Kind.ESCALATION)) == "$share/hub/edgefleet/+/+/escalation"
    assert shared(None, "a/b") == "a/b"
    with pytest.raises(TopicError):
        topic_filter(Kind.VERDICT, device="bad/device")


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("edgefleet/+/+/telemetry/#", "edgefleet/p/d/telemetry/power", True),
        ("edgefleet/+/+/telemetry/#", "edgefleet/p/d/verdict", False),
        ("edgefleet/p/d/verdict", "edgefleet/p/d/verdict", True),
        ("edgefleet/p/+/verdict", "edgefleet/p/d/verdict/x", False),
        ("$share/hub/edgefleet/+/+/escalation", "edgefleet/p/d/escalation", True),
        ("edgefleet/#", "edgefleet/p", True),
    ],
)
def test_filter_matching(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


def test_acl_pattern_confines_a_device_to_its_own_topics() -> None:
    # Mosquitto's "pattern readwrite edgefleet/+/%c/#" with the client id as the device id.
    acl = "edgefleet/+/{client}/#"
    own = str(Topic(site="plant-1", device="meter-001", kind=Kind.TELEMETRY, stream="power"))
    other = str(Topic(site="plant-1", device="meter-002", kind=Kind.TELEMETRY, stream="power"))
    assert matches(acl.format(client="meter-001"), own)
    assert not matches(acl.format(client="meter-001"), other)
