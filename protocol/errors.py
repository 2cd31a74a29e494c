"""The protocol's exception tree.

Every failure to read or build a wire message is a :class:`ProtocolError`; callers that only want to
know "was this message bad" catch that one class. Each subclass carries an :attr:`code` that names
the failure on the wire (see :class:`protocol.messages.ErrorCode`).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every protocol error."""

    code: str = "malformed_payload"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TopicError(ProtocolError):
    """A topic string does not follow the topic grammar."""

    code = "bad_topic"


class DecodeError(ProtocolError):
    """A payload is not a JSON object of acceptable size and encoding."""

    code = "malformed_payload"


class SchemaError(ProtocolError):
    """A payload is JSON but does not match the schema of its message type."""

    code = "schema_violation"


class UnsupportedVersionError(ProtocolError):
    """A payload declares a schema version this side does not speak."""

    code = "unsupported_version"


class TopicMismatchError(ProtocolError):
    """A message's device or kind disagrees with the topic it arrived on."""

    code = "topic_mismatch"


class NonFiniteValueError(SchemaError):
    """A number in the payload is NaN or infinite."""

    code = "non_finite"
