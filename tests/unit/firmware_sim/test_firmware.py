"""The firmware, sans I/O: commands and replies, health, birth, the bounded outbox."""

from __future__ import annotations

from typing import Any

import pytest

from firmware_sim.firmware import DeviceFirmware
from firmware_sim.fleet import Fleet
from firmware_sim.scenario import parse_scenario
from firmware_sim.settings import SimSettings
from protocol import (
    Command,
    CommandName,
    CommandReply,
    DeviceBirth,
    DeviceHealth,
    ErrorEvent,
    Kind,
    ReplyStatus,
    TelemetryReading,
    Topic,
    decode,
    encode,
)
from tests.unit.firmware_sim.conftest import scenario


def firmware(**changes: Any) -> DeviceFirmware:
    document = scenario(
        sites=[{"name": "lab", "devices": [{"profile": "climate", "count": 1, "prefix": "room", "rate_hz": 1.0}]}],
        **changes,
    )
    return Fleet(SimSettings(mode="memory"), parse_scenario(document)).devices[0]


def command(device: DeviceFirmware, name: CommandName, **args: Any) -> CommandReply:
    message = Command(device_id=device.device_id, timestamp=1.0, name=name, args=args)
    device.handle(device.topic_command, encode(message), now=5.0)
    reply = decode(device.outbox.popleft().payload, topic=Topic.parse(device.topic_reply))
    assert isinstance(reply, CommandReply)
    assert reply.command_id == message.message_id
    assert reply.name is name
    return reply


def test_sampling_rate_start_stop_and_report_config() -> None:
    device = firmware()
    rescheduled: list[int] = []
    device.on_reschedule = lambda _, stream: rescheduled.append(stream)
    reply = command(device, CommandName.SET_SAMPLING_RATE, stream="humidity", rate_hz=4.0)
    assert reply.status is ReplyStatus.OK
    assert reply.result == {"humidity.rate_hz": 4.0}
    assert device.streams[1].config.rate_hz == 4.0
    assert rescheduled == [1]
    assert device.streams[1].sample_time == pytest.approx(5.25)

    assert command(device, CommandName.STOP_STREAM, stream="temperature").result == {"temperature.enabled": False}
    config = command(device, CommandName.REPORT_CONFIG).result
    assert config["temperature.enabled"] is False
    assert config["humidity.rate_hz"] == 4.0
    assert config["profile"] == "climate"
    birth = decode(device.birth(6.0).payload)
    assert isinstance(birth, DeviceBirth)
    assert [stream.name for stream in birth.streams] == ["humidity"]
    assert command(device, CommandName.START_STREAM, stream="temperature").status is ReplyStatus.OK
    assert rescheduled == [1, 0]


@pytest.mark.parametrize(
    ("name", "args", "reason"),
    [
        (CommandName.SET_SAMPLING_RATE, {"stream": "humidity", "rate_hz": 0}, "rate_hz"),
        (CommandName.SET_SAMPLING_RATE, {"stream": "humidity", "rate_hz": "fast"}, "rate_hz"),
        (CommandName.SET_SAMPLING_RATE, {"stream": "co2", "rate_hz": 1.0}, "no stream 'co2'"),
        (CommandName.STOP_STREAM, {}, "no stream None"),
    ],
)
def test_impossible_commands_are_rejected_with_the_reason(name: CommandName, args: dict[str, Any], reason: str) -> None:
    reply = command(firmware(), name, **args)
    assert reply.status is ReplyStatus.REJECTED
    assert reason in reply.detail


def test_model_and_firmware_updates_are_acknowledged() -> None:
    device = firmware()
    reply = command(device, CommandName.UPDATE_MODEL, model="climate_edge", version="2.0", sha256="ab" * 32)
    assert reply.status is ReplyStatus.ACCEPTED
    assert "climate_edge" in reply.detail
    assert command(device, CommandName.REPORT_CONFIG).result["model.version"] == "2.0"
    reply = command(device, CommandName.UPDATE_MODEL, firmware="sim-2.0.0")
    assert reply.status is ReplyStatus.OK
    # Installing firmware reboots the device: a birth announces the new version.
    birth = decode(device.outbox.popleft().payload)
    assert isinstance(birth, DeviceBirth)
    assert birth.firmware_version == "sim-2.0.0"


def test_unreadable_commands_become_error_events() -> None:
    device = firmware()
    device.handle(device.topic_command, b'{"type":"command","v":1}', now=1.0)
    error = decode(device.outbox.popleft().payload, topic=Topic.parse(device.topic_error))
    assert isinstance(error, ErrorEvent)
    assert error.code == "schema_violation"
    other = Command(device_id="room-999", timestamp=1.0, name=CommandName.REPORT_CONFIG)
    device.handle(device.topic_command, encode(other), now=1.0)
    error = decode(device.outbox.popleft().payload)
    assert isinstance(error, ErrorEvent)
    assert error.code == "topic_mismatch"


def test_health_and_the_bounded_outbox() -> None:
    device = firmware(buffer_limit=5)
    device.cut_link()
    for _ in range(8):
        device.sample(0)
    device.health(10.0)
    assert len(device.outbox) == 5
    assert device.counters.dropped == 4
    # The oldest telemetry went first; the health report stayed.
    kinds = [Topic.parse(outgoing.topic).kind for outgoing in device.outbox]
    assert kinds.count(Kind.HEALTH) == 1
    seqs = [decode(o.payload).seq for o in device.outbox if Topic.parse(o.topic).kind is Kind.TELEMETRY]  # type: ignore[attr-defined]
    assert seqs == [4, 5, 6, 7]
    health = decode(device.outbox[-1].payload)
    assert isinstance(health, DeviceHealth)
    assert (health.buffered, health.uptime_s) == (8, 10.0)  # reproducible: the simulated state
    device.restore_link(11.0)
    assert isinstance(decode(device.outbox[0].payload), DeviceBirth)
    assert isinstance(decode(device.outbox[1].payload), TelemetryReading)
