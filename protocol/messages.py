"""Versioned wire messages.

Every message is an immutable pydantic model built once at the boundary (by :mod:`protocol.codec`
or by the sender's code) and validated when built. Wire names are short and stable; Python names say
what a field is. The common envelope:

====  ==================  =============================================================
wire  python              meaning
====  ==================  =============================================================
type  type                message type, e.g. ``telemetry.reading`` (the discriminator)
v     schema_version      schema version of that type
id    message_id          unique id; the idempotency key
dev   device_id           device that the message is about
ts    timestamp           seconds since the Unix epoch (UTC) when the message was made
====  ==================  =============================================================
"""

from __future__ import annotations

import math
import uuid
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from protocol.topics import Kind

SCHEMA_VERSION = 1
WIRE_REQUIRED = ("type", "v", "id", "dev", "ts")

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
MessageId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Timestamp = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


_DERIVED_IDS = uuid.UUID("5c0f7d2e-6a8b-4f51-9a43-0e1f2d3c4b5a")


def new_message_id() -> str:
    """A fresh random message id (UUID4, hex)."""
    return uuid.uuid4().hex


def derived_message_id(*parts: object) -> str:
    """A message id that depends only on ``parts`` (UUID5, hex).

    What a sender derives from its input (an escalation from a device's window, say) gets the same id
    when it is made again after a restart, so the receiver's idempotency drops the copy.
    """
    return uuid.uuid5(_DERIVED_IDS, "/".join(str(part) for part in parts)).hex


class SensorKind(StrEnum):
    """Physical quantity a stream measures; validation ranges are set per kind."""

    TEMPERATURE = "temperature"
    HUMIDITY = "humidity"
    POWER = "power"
    CURRENT = "current"
    VOLTAGE = "voltage"
    VIBRATION = "vibration"
    ACCELERATION = "acceleration"
    ANGULAR_VELOCITY = "angular_velocity"
    SOUND_LEVEL = "sound_level"
    GENERIC = "generic"


class EscalationReason(StrEnum):
    """Why the edge escalated a window (the rule that fired)."""

    LOW_CONFIDENCE = "low_confidence"
    ANOMALY = "anomaly"
    CRITICAL_RULE = "critical_rule"


class ErrorCode(StrEnum):
    """Why an input was rejected."""

    MALFORMED_PAYLOAD = "malformed_payload"
    SCHEMA_VIOLATION = "schema_violation"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_TOPIC = "bad_topic"
    TOPIC_MISMATCH = "topic_mismatch"
    OUT_OF_RANGE = "out_of_range"
    STALE_TIMESTAMP = "stale_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    OUT_OF_ORDER = "out_of_order"
    DUPLICATE = "duplicate"
    NON_FINITE = "non_finite"
    UNIT_MISMATCH = "unit_mismatch"
    INFERENCE_FAILED = "inference_failed"


class CommandName(StrEnum):
    SET_SAMPLING_RATE = "set_sampling_rate"
    START_STREAM = "start_stream"
    STOP_STREAM = "stop_stream"
    REPORT_CONFIG = "report_config"
    UPDATE_MODEL = "update_model"


class Part(BaseModel):
    """A nested value object (no envelope)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Message(Part):
    """The envelope every wire message shares."""

    KIND: ClassVar[Kind]
    TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = SCHEMA_VERSION

    type: str
    schema_version: Literal[1] = Field(default=1, alias="v")
    message_id: MessageId = Field(default_factory=new_message_id, alias="id")
    device_id: Identifier = Field(alias="dev")
    timestamp: Timestamp = Field(alias="ts")

    @model_validator(mode="before")
    @classmethod
    def _wire_envelope_is_complete(cls, data: object, info: ValidationInfo) -> object:
        # In Python the id and version have defaults; on the wire they are required, since a
        # receiver that invented an id would break idempotency.
        if info.context and info.context.get("wire") and isinstance(data, dict):
            missing = [name for name in WIRE_REQUIRED if name not in data]
            if missing:
                raise ValueError(f"missing envelope field(s): {', '.join(missing)}")
        return data


class TelemetryReading(Message):
    """One sample of one sensor stream."""

    KIND = Kind.TELEMETRY
    TYPE = "telemetry.reading"

    type: Literal["telemetry.reading"] = "telemetry.reading"
    stream: Identifier
    sensor: SensorKind
    unit: str = Field(max_length=16)
    seq: int = Field(ge=0, description="Sample index within the stream; consecutive samples differ by one.")
    value: FiniteFloat


class TelemetryBatch(Message):
    """Consecutive samples of one stream, sent together (``seq`` is the first sample's index)."""

    KIND = Kind.TELEMETRY
    TYPE = "telemetry.batch"

    type: Literal["telemetry.batch"] = "telemetry.batch"
    stream: Identifier
    sensor: SensorKind
    unit: str = Field(max_length=16)
    seq: int = Field(ge=0)
    sample_rate_hz: float = Field(gt=0.0, le=1_000_000.0, allow_inf_nan=False, alias="rate")
    values: list[FiniteFloat] = Field(min_length=1, max_length=65_536)


class Outcome(Part):
    """What a model said about one window."""

    model: Identifier
    model_version: str = Field(min_length=1, max_length=64, alias="version")
    label: str = Field(min_length=1, max_length=64)
    confidence: Probability
    anomaly_score: float = Field(ge=0.0, allow_inf_nan=False, alias="anomaly")
    probabilities: list[Probability] = Field(default_factory=list, max_length=1024, alias="probs")


class InferenceResult(Message):
    """A local decision on one window, published for site dashboards and local consumers."""

    KIND = Kind.INFERENCE
    TYPE = "inference.result"

    type: Literal["inference.result"] = "inference.result"
    stream: Identifier
    window_start_seq: int = Field(ge=0, alias="start")
    window_size: int = Field(ge=1, alias="size")
    outcome: Outcome
    escalated: bool
    latency_ms: float = Field(ge=0.0, allow_inf_nan=False)


class Window(Part):
    """The samples a decision was made on."""

    stream: Identifier
    sensor: SensorKind
    unit: str = Field(max_length=16)
    start_seq: int = Field(ge=0, alias="start")
    sample_rate_hz: float | None = Field(default=None, gt=0.0, allow_inf_nan=False, alias="rate")
    values: list[FiniteFloat] = Field(min_length=1, max_length=65_536)


class Escalation(Message):
    """A window the edge was unsure about, or found anomalous, sent to the hub to be judged."""

    KIND = Kind.ESCALATION
    TYPE = "escalation"

    type: Literal["escalation"] = "escalation"
    site: Identifier
    window: Window
    edge: Outcome
    reasons: list[EscalationReason] = Field(min_length=1, max_length=8)
    priority: int = Field(default=5, ge=0, le=9, description="0 is the most urgent.")


class Verdict(Message):
    """The hub's judgement of an escalation; a label for the device's local training data."""

    KIND = Kind.VERDICT
    TYPE = "verdict"

    type: Literal["verdict"] = "verdict"
    escalation_id: MessageId = Field(alias="esc")
    cloud: Outcome
    agrees_with_edge: bool = Field(alias="agrees")


class StreamInfo(Part):
    name: Identifier
    sensor: SensorKind
    unit: str = Field(max_length=16)
    sample_rate_hz: float = Field(gt=0.0, allow_inf_nan=False, alias="rate")


class DeviceBirth(Message):
    """Sent (retained) when a device connects: what it is and what it streams."""

    KIND = Kind.BIRTH
    TYPE = "device.birth"

    type: Literal["device.birth"] = "device.birth"
    site: Identifier
    firmware_version: str = Field(min_length=1, max_length=64, alias="fw")
    streams: list[StreamInfo] = Field(default_factory=list, max_length=256)


class DeviceDeath(Message):
    """Sent on a clean disconnect, or by the broker as the device's Last Will."""

    KIND = Kind.DEATH
    TYPE = "device.death"

    type: Literal["device.death"] = "device.death"
    reason: str = Field(max_length=256)


class DeviceHealth(Message):
    """Periodic health of a device."""

    KIND = Kind.HEALTH
    TYPE = "device.health"

    type: Literal["device.health"] = "device.health"
    uptime_s: float = Field(ge=0.0, allow_inf_nan=False, alias="uptime")
    messages_sent: int = Field(ge=0, alias="sent")
    buffered: int = Field(default=0, ge=0)
    reconnects: int = Field(default=0, ge=0)
    cpu_percent: float | None = Field(default=None, ge=0.0, allow_inf_nan=False, alias="cpu")
    memory_bytes: int | None = Field(default=None, ge=0, alias="mem")


CommandArgument = str | int | float | bool


class Command(Message):
    """An instruction to a device (or to the agent beside it)."""

    KIND = Kind.COMMAND
    TYPE = "command"

    type: Literal["command"] = "command"
    name: CommandName
    args: dict[Identifier, CommandArgument] = Field(default_factory=dict, max_length=32)

    @field_validator("args")
    @classmethod
    def _finite_arguments(cls, value: dict[str, CommandArgument]) -> dict[str, CommandArgument]:
        for key, argument in value.items():
            if isinstance(argument, float) and not math.isfinite(argument):
                raise ValueError(f"argument {key!r} is not finite")
        return value


class ReplyStatus(StrEnum):
    """How a device answered a command."""

    OK = "ok"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class CommandReply(Message):
    """A device's answer to a :class:`Command`, on the device's reply topic.

    ``accepted`` says the device will act later (a model or firmware update it fetches); ``ok`` that
    it has acted; ``rejected`` that it will not, with the reason in ``detail``. ``result`` carries what
    the command asked for (the configuration, for ``report_config``) as flat ``name: value`` pairs.
    """

    KIND = Kind.REPLY
    TYPE = "command.reply"

    type: Literal["command.reply"] = "command.reply"
    command_id: MessageId = Field(alias="cmd")
    name: CommandName
    status: ReplyStatus
    detail: str = Field(default="", max_length=1024)
    result: dict[Identifier, CommandArgument] = Field(default_factory=dict, max_length=256)

    @field_validator("result")
    @classmethod
    def _finite_results(cls, value: dict[str, CommandArgument]) -> dict[str, CommandArgument]:
        for key, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"result {key!r} is not finite")
        return value


class ErrorEvent(Message):
    """An input the receiver rejected, with the reason; published on the device's error topic."""

    KIND = Kind.ERROR
    TYPE = "error"

    type: Literal["error"] = "error"
    code: ErrorCode
    reason: str = Field(max_length=1024)
    topic: str = Field(max_length=512)
    stream: Identifier | None = None
    offending_id: MessageId | None = None
    payload_excerpt: str = Field(default="", max_length=512, alias="excerpt")


MESSAGE_TYPES: tuple[type[Message], ...] = (
    TelemetryReading,
    TelemetryBatch,
    InferenceResult,
    Escalation,
    Verdict,
    DeviceBirth,
    DeviceDeath,
    DeviceHealth,
    Command,
    CommandReply,
    ErrorEvent,
)

AnyMessage = Annotated[
    TelemetryReading
    | TelemetryBatch
    | InferenceResult
    | Escalation
    | Verdict
    | DeviceBirth
    | DeviceDeath
    | DeviceHealth
    | Command
    | CommandReply
    | ErrorEvent,
    Field(discriminator="type"),
]

MESSAGE_BY_TYPE: dict[str, type[Message]] = {cls.TYPE: cls for cls in MESSAGE_TYPES}


def excerpt(payload: bytes, limit: int = 200) -> str:
    """A printable, bounded excerpt of a raw payload for error events and logs."""
    text = payload[:limit].decode("utf-8", errors="backslashreplace")
    return text + ("…" if len(payload) > limit else "")
