"""Per-stream validation of readings: ranges, timestamps, order and duplicates. Pure; the clock is
passed in."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from edge_agent.settings import ValidationSettings
from protocol.messages import ErrorCode, TelemetryBatch, TelemetryReading

Telemetry = TelemetryReading | TelemetryBatch


@dataclass(frozen=True, slots=True)
class Rejection:
    code: ErrorCode
    reason: str


class Validator:
    """Remembers, per device and stream, the last sequence number and recent message ids."""

    def __init__(self, settings: ValidationSettings) -> None:
        self._settings = settings
        self._last_seq: dict[tuple[str, str], int] = {}
        self._units: dict[tuple[str, str], str] = {}
        self._seen: dict[str, OrderedDict[str, None]] = {}

    def check(self, message: Telemetry, now: float) -> Rejection | None:
        """Return why ``message`` is rejected, or ``None`` and record it as accepted."""
        rejection = self._check(message, now)
        if rejection is None:
            self._accept(message)
        return rejection

    def _check(self, message: Telemetry, now: float) -> Rejection | None:
        settings = self._settings
        if message.message_id in self._seen.get(message.device_id, ()):
            return Rejection(ErrorCode.DUPLICATE, f"message id {message.message_id} was already received")
        age = now - message.timestamp
        if age > settings.max_age_s:
            return Rejection(ErrorCode.STALE_TIMESTAMP, f"reading is {age:.1f} s old (limit {settings.max_age_s:g} s)")
        if -age > settings.max_future_s:
            return Rejection(
                ErrorCode.FUTURE_TIMESTAMP, f"reading is {-age:.1f} s in the future (limit {settings.max_future_s:g} s)"
            )
        key = (message.device_id, message.stream)
        last = self._last_seq.get(key)
        if last is not None and message.seq <= last:
            return Rejection(ErrorCode.OUT_OF_ORDER, f"seq {message.seq} is not after the last accepted seq {last}")
        unit = self._units.get(key)
        if unit is not None and unit != message.unit:
            return Rejection(ErrorCode.UNIT_MISMATCH, f"unit {message.unit!r} differs from the stream's unit {unit!r}")
        limits = settings.ranges.get(message.sensor)
        if limits is not None:
            values = [message.value] if isinstance(message, TelemetryReading) else message.values
            for value in values:
                if not limits.minimum <= value <= limits.maximum:
                    return Rejection(
                        ErrorCode.OUT_OF_RANGE,
                        f"{message.sensor} value {value:g} is outside [{limits.minimum:g}, {limits.maximum:g}]",
                    )
        return None

    def _accept(self, message: Telemetry) -> None:
        key = (message.device_id, message.stream)
        last_seq = message.seq if isinstance(message, TelemetryReading) else message.seq + len(message.values) - 1
        self._last_seq[key] = last_seq
        self._units[key] = message.unit
        seen = self._seen.setdefault(message.device_id, OrderedDict())
        seen[message.message_id] = None
        if len(seen) > self._settings.duplicate_memory:
            seen.popitem(last=False)
