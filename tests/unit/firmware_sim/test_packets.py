from __future__ import annotations

import struct

import pytest

from firmware_sim import packets


def test_publish_packets_parse_back_however_the_stream_is_cut() -> None:
    big = b"x" * 300_000  # a four-byte remaining length
    stream = (
        packets.publish(b"a/b", b"hello", qos=1, packet_id=7)
        + packets.publish(b"a/c", big)
        + packets.puback(9)
        + bytes((0x20, 2, 0, 0))  # CONNACK accepted
    )
    for cut in (1, 2, 3, 7, 1000, len(stream)):
        reader = packets.PacketReader()
        parsed = []
        for start in range(0, len(stream), cut):
            parsed += reader.feed(stream[start : start + cut])
        assert [p.type for p in parsed] == [
            packets.PacketType.PUBLISH,
            packets.PacketType.PUBLISH,
            packets.PacketType.PUBACK,
            packets.PacketType.CONNACK,
        ]
        assert parsed[0].incoming_publish() == ("a/b", b"hello", 1, 7)
        assert parsed[1].incoming_publish() == ("a/c", big, 0, 0)
        assert parsed[2].packet_id == 9
        assert parsed[3].connack_code() == 0


def test_connect_carries_the_client_id_will_and_credentials() -> None:
    will = packets.WillMessage("root/s/d/death", b"gone", qos=1)
    packet = packets.connect("meter-001", keepalive_s=30, will=will, username="u", password="p")
    assert packet[0] == 0x10
    body = packet[2:]
    assert body[:6] == b"\x00\x04MQTT"
    assert body[6] == 4  # MQTT 3.1.1
    assert body[7] == 0x02 | 0x04 | 0x08 | 0x40 | 0x80  # clean, will, will QoS 1, password, user
    assert struct.unpack("!H", body[8:10]) == (30,)
    assert b"meter-001" in body and b"root/s/d/death" in body and b"gone" in body


def test_garbage_from_the_broker_is_an_error() -> None:
    with pytest.raises(packets.PacketError):
        packets.PacketReader().feed(bytes((0xF0, 0)))
    with pytest.raises(packets.PacketError):
        packets.PacketReader().feed(bytes((0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01)))
