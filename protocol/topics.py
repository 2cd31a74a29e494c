"""The topic grammar: ``<root>/<site>/<device>/<kind>[/<stream>]``.

Site and device are part of every topic so that a broker ACL can confine a device to its own topics
(for Mosquitto: ``pattern readwrite edgefleet/+/%c/#`` with the client id set to the device id).
Only telemetry and inference topics carry a stream; every other kind ends at the kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import TopicError

DEFAULT_ROOT = "edgefleet"

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Kind(StrEnum):
    """What a topic carries. The value is the topic segment."""

    TELEMETRY = "telemetry"
    INFERENCE = "inference"
    ESCALATION = "escalation"
    VERDICT = "verdict"
    BIRTH = "birth"
    DEATH = "death"
    HEALTH = "health"
    COMMAND = "command"
    REPLY = "reply"
    ERROR = "error"

    @property
    def has_stream(self) -> bool:
        return self in _STREAM_KINDS


_STREAM_KINDS = frozenset({Kind.TELEMETRY, Kind.INFERENCE})


def check_segment(value: str, what: str) -> str:
    """Return ``value`` if it is a valid topic segment (and identifier), else raise :class:`TopicError`."""
    if not isinstance(value, str) or not _SEGMENT.match(value):
        raise TopicError(
            f"{what} {value!r} is not a valid identifier: 1-64 characters of letters, digits, "
            "'_', '-' or '.', starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class Topic:
    """A concrete (wildcard-free) topic, validated when built."""

    site: str
    device: str
    kind: Kind
    stream: str | None = None
    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        check_segment(self.root, "root")
        check_segment(self.site, "site")
        check_segment(self.device, "device")
        if not isinstance(self.kind, Kind):
            raise TopicError(f"kind {self.kind!r} is not a topic kind")
        if self.kind.has_stream:
            if self.stream is None:
                raise TopicError(f"a {self.kind} topic needs a stream")
            check_segment(self.stream, "stream")
        elif self.stream is not None:
            raise TopicError(f"a {self.kind} topic has no stream")

    def __str__(self) -> str:
        parts = [self.root, self.site, self.device, self.kind.value]
        if self.stream is not None:
            parts.append(self.stream)
        return "/".join(parts)

    @classmethod
    def parse(cls, topic: str, *, root: str = DEFAULT_ROOT) -> Topic:
        """Parse a topic string; raise :class:`TopicError` if it does not follow the grammar."""
        parts = topic.split("/")
        if len(parts) not in (4, 5):
            raise TopicError(f"topic {topic!r} has {len(parts)} levels; expected 4 or 5")
        if parts[0] != root:
            raise TopicError(f"topic {topic!r} is not under the root {root!r}")
        try:
            kind = Kind(parts[3])
        except ValueError:
            raise TopicError(f"topic {topic!r} has an unknown kind {parts[3]!r}") from None
        stream = parts[4] if len(parts) == 5 else None
        return cls(site=parts[1], device=parts[2], kind=kind, stream=stream, root=root)

    def sibling(self, kind: Kind, stream: str | None = None) -> Topic:
        """The topic of another kind for the same device."""
        return Topic(site=self.site, device=self.device, kind=kind, stream=stream, root=self.root)


def topic_filter(
    kind: Kind,
    *,
    site: str = "+",
    device: str = "+",
    stream: str | None = None,
    root: str = DEFAULT_ROOT,
) -> str:
    """A subscription filter; ``+`` in site or device matches any, streams default to all (``#``)."""
    for value, what in ((site, "site"), (device, "device")):
        if value != "+":
            check_segment(value, what)
    parts = [check_segment(root, "root"), site, device, kind.value]
    if kind.has_stream:
        if stream is None or stream == "#":
            parts.append("#")
        elif stream == "+":
            parts.append("+")
        else:
            parts.append(check_segment(stream, "stream"))
    return "/".join(parts)


def shared(group: str | None, topic_filter_: str) -> str:
    """Wrap a filter in an MQTT 5 / Mosquitto shared subscription, so workers of a group share load."""
    if group is None:
        return topic_filter_
    return f"$share/{check_segment(group, 'share group')}/{topic_filter_}"


def matches(topic_filter_: str, topic: str) -> bool:
    """Whether ``topic`` matches an MQTT subscription filter (``+`` one level, ``#`` the rest)."""
    if topic_filter_.startswith("$share/"):
        topic_filter_ = topic_filter_.split("/", 2)[2]
    filter_levels = topic_filter_.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level not in ("+", topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)
