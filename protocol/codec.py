"""Bytes in, typed messages out — and back. No I/O.

:func:`decode` is the one place raw payloads become messages. It never lets a foreign exception
through: every failure is a :class:`protocol.errors.ProtocolError` with a reason a person can act on.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import TypeAdapter, ValidationError

from protocol.errors import (
    DecodeError,
    NonFiniteValueError,
    ProtocolError,
    SchemaError,
    TopicMismatchError,
    UnsupportedVersionError,
)
from protocol.messages import AnyMessage, Message
from protocol.topics import Topic

MAX_PAYLOAD_BYTES = 256 * 1024

_ANY = TypeAdapter[AnyMessage](AnyMessage)

_WIRE = {"wire": True}

M = TypeVar("M", bound=Message)


def encode(message: Message) -> bytes:
    """Compact JSON with wire names; absent optional fields are left out."""
    return message.model_dump_json(by_alias=True, exclude_none=True).encode()


def decode(payload: bytes | bytearray | str, *, topic: Topic | None = None) -> Message:
    """Decode any message; with ``topic``, also check that it belongs on that topic."""
    raw = _check_size(payload)
    try:
        message: Message = _ANY.validate_json(raw, context=_WIRE)
    except ValidationError as exc:
        raise _translate(exc) from exc
    if topic is not None:
        check_topic(message, topic)
    return message


def decode_as(cls: type[M], payload: bytes | bytearray | str, *, topic: Topic | None = None) -> M:
    """Decode a payload that must be of one message type."""
    message = decode(payload, topic=topic)
    if not isinstance(message, cls):
        raise SchemaError(f"expected a {cls.TYPE!r} message, got {message.type!r}")
    return message


def check_topic(message: Message, topic: Topic) -> None:
    """Raise :class:`TopicMismatchError` unless ``message`` may travel on ``topic``."""
    if message.KIND is not topic.kind:
        raise TopicMismatchError(f"a {message.type!r} message does not belong on a {topic.kind} topic")
    if message.device_id != topic.device:
        raise TopicMismatchError(
            f"message is for device {message.device_id!r} but arrived on device {topic.device!r}'s topic"
        )
    stream = getattr(message, "stream", None)
    if topic.stream is not None and stream is not None and stream != topic.stream:
        raise TopicMismatchError(f"message is for stream {stream!r} but arrived on stream {topic.stream!r}")
    site = getattr(message, "site", None)
    if site is not None and site != topic.site:
        raise TopicMismatchError(f"message is for site {site!r} but arrived on site {topic.site!r}'s topic")


def _check_size(payload: bytes | bytearray | str) -> bytes | bytearray | str:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DecodeError(f"payload of {len(payload)} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}")
    if len(payload) == 0:
        raise DecodeError("empty payload")
    return payload


def _translate(exc: ValidationError) -> ProtocolError:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    kind = first["type"]
    location = _location(first["loc"])
    if kind in ("json_invalid", "json_type"):
        return DecodeError(f"payload is not valid JSON: {first['msg']}")
    if kind in ("model_attributes_type", "dict_type", "model_type"):
        return DecodeError("payload is not a JSON object")
    if kind == "union_tag_not_found":
        return SchemaError("payload has no 'type' field naming its message type")
    if kind == "union_tag_invalid":
        return SchemaError(f"unknown message type: {first['msg']}")
    if kind == "literal_error" and first["loc"][-1] == "v":
        return UnsupportedVersionError(f"unsupported schema version: {first['msg']}")
    if kind == "finite_number":
        return NonFiniteValueError(f"{location} is not a finite number")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return SchemaError(f"{location}: {first['msg']}{more}")


def _location(loc: tuple[int | str, ...]) -> str:
    # The first location segment is the discriminator value (the message type); keep the field path.
    if len(loc) > 1:
        return f"{loc[0]} field " + repr(".".join(str(part) for part in loc[1:]))
    return f"{loc[0]} message" if loc else "payload"
