from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol import (
    MESSAGE_TYPES,
    DecodeError,
    DeviceDeath,
    ErrorCode,
    Kind,
    NonFiniteValueError,
    ProtocolError,
    SchemaError,
    TelemetryReading,
    Topic,
    TopicMismatchError,
    UnsupportedVersionError,
    Verdict,
    decode,
    decode_as,
    encode,
)
from protocol.codec import MAX_PAYLOAD_BYTES

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
GOLDEN_FILES = sorted(GOLDEN.glob("*.json"))


def test_there_is_a_golden_fixture_for_every_message_type() -> None:
    assert {path.stem for path in GOLDEN_FILES} == {cls.TYPE for cls in MESSAGE_TYPES}


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_golden_fixture_round_trips_byte_for_byte(path: Path) -> None:
    raw = path.read_bytes().strip()
    message = decode(raw)
    assert message.type == path.stem
    assert encode(message) == raw
    assert decode(encode(message)) == message


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_golden_fixture_decodes_on_its_own_topic(path: Path) -> None:
    message = decode(path.read_bytes())
    stream = getattr(message, "stream", None) if message.KIND.has_stream else None
    site = getattr(message, "site", "plant-1")
    topic = Topic(site=site, device=message.device_id, kind=message.KIND, stream=stream)
    assert decode(path.read_bytes(), topic=topic) == message


def test_python_names_and_wire_names() -> None:
    reading = TelemetryReading(
        device_id="meter-001", timestamp=1.5, stream="power", sensor="power", unit="kW", seq=0, value=2.0
    )
    wire = json.loads(encode(reading))
    assert wire["dev"] == "meter-001"
    assert wire["id"] == reading.message_id
    assert wire["v"] == 1
    assert "device_id" not in wire


def test_each_message_gets_its_own_id() -> None:
    first = DeviceDeath(device_id="d1", timestamp=1.0, reason="x")
    second = DeviceDeath(device_id="d1", timestamp=1.0, reason="x")
    assert first.message_id != second.message_id


READING = json.loads((GOLDEN / "telemetry.reading.json").read_text())


def _with(**changes: object) -> bytes:
    data = {**READING, **changes}
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("payload", "error", "code"),
    [
        (b"", DecodeError, ErrorCode.MALFORMED_PAYLOAD),
        (b"{", DecodeError, ErrorCode.MALFORMED_PAYLOAD),
        (b"\xff\xfe\x00", DecodeError, ErrorCode.MALFORMED_PAYLOAD),
        (b"[1, 2]", DecodeError, ErrorCode.MALFORMED_PAYLOAD),
        (b'"text"', DecodeError, ErrorCode.MALFORMED_PAYLOAD),
        (b'{"value": 1}', SchemaError, ErrorCode.SCHEMA_VIOLATION),
        (_with(type="telemetry.unknown"), SchemaError, ErrorCode.SCHEMA_VIOLATION),
        (_with(v=2), UnsupportedVersionError, ErrorCode.UNSUPPORTED_VERSION),
        (_with(seq=-1), SchemaError, ErrorCode.SCHEMA_VIOLATION),
        (_with(value="high"), SchemaError, ErrorCode.SCHEMA_VIOLATION),
        (_with(extra_field=1), SchemaError, ErrorCode.SCHEMA_VIOLATION),
        (_with(dev="bad/device"), SchemaError, ErrorCode.SCHEMA_VIOLATION),
        (_with(ts=-5), SchemaError, ErrorCode.SCHEMA_VIOLATION),
        (_with(sensor="plasma"), SchemaError, ErrorCode.SCHEMA_VIOLATION),
        (_with(value=float("nan")), NonFiniteValueError, ErrorCode.NON_FINITE),
        (_with(value=float("inf")), NonFiniteValueError, ErrorCode.NON_FINITE),
        (b" " * (MAX_PAYLOAD_BYTES + 1), DecodeError, ErrorCode.MALFORMED_PAYLOAD),
    ],
)
def test_bad_payloads_raise_typed_errors(payload: bytes, error: type[ProtocolError], code: ErrorCode) -> None:
    with pytest.raises(error) as raised:
        decode(payload)
    assert raised.value.code == code.value
    assert raised.value.reason


@pytest.mark.parametrize("field", ["id", "v", "dev", "ts", "type"])
def test_the_wire_envelope_is_required(field: str) -> None:
    data = dict(READING)
    del data[field]
    with pytest.raises(SchemaError):
        decode(json.dumps(data).encode())


def test_topic_must_belong_to_the_message_device() -> None:
    other = Topic(site="plant-1", device="meter-002", kind=Kind.TELEMETRY, stream="power")
    with pytest.raises(TopicMismatchError, match="meter-002"):
        decode(_with(), topic=other)


def test_topic_kind_and_stream_must_match() -> None:
    verdict_topic = Topic(site="plant-1", device="meter-001", kind=Kind.VERDICT)
    with pytest.raises(TopicMismatchError):
        decode(_with(), topic=verdict_topic)
    other_stream = Topic(site="plant-1", device="meter-001", kind=Kind.TELEMETRY, stream="temperature")
    with pytest.raises(TopicMismatchError):
        decode(_with(), topic=other_stream)


def test_escalation_site_must_match_topic_site() -> None:
    raw = (GOLDEN / "escalation.json").read_bytes()
    with pytest.raises(TopicMismatchError, match="site"):
        decode(raw, topic=Topic(site="plant-2", device="meter-001", kind=Kind.ESCALATION))


def test_decode_as_checks_the_type() -> None:
    raw = (GOLDEN / "verdict.json").read_bytes()
    assert isinstance(decode_as(Verdict, raw), Verdict)
    with pytest.raises(SchemaError, match="expected"):
        decode_as(TelemetryReading, raw)
