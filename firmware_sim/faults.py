"""Faults with ground truth: the catalogue, schedules per stream, and the ground-truth log.

A fault acts at one of three levels:

* ``value``: the sensor reads wrong (spike, drift, stuck-at, noise burst);
* ``physics``: the machine itself changes, and the signal model renders it (bearing-fault onset);
* ``message``: the firmware or its link misbehaves (dropout, clock skew, duplicated or out-of-order
  sends, malformed payloads).

Faults are scheduled per stream in sample-index (``seq``) space, at fixed times (``at_s``), at random
with a mean interval (``every_s``), or with a probability per message. Only faults that touched at
least one sample are logged: each becomes one JSON Lines record with the device, stream, kind, the
first and last affected ``seq`` (``start``, ``end``) and their timestamps, so detection can be scored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import numpy.typing as npt

Values = npt.NDArray[np.float64]


class FaultKind(StrEnum):
    SPIKE = "spike"
    DRIFT = "drift"
    STUCK = "stuck"
    DROPOUT = "dropout"
    NOISE_BURST = "noise_burst"
    BEARING_FAULT = "bearing_fault"
    CLOCK_SKEW = "clock_skew"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    MALFORMED = "malformed"


class FaultLevel(StrEnum):
    VALUE = "value"
    PHYSICS = "physics"
    MESSAGE = "message"


@dataclass(frozen=True, slots=True)
class FaultInfo:
    """One entry of the fault catalogue (``edgefleet sim faults``)."""

    kind: FaultKind
    level: FaultLevel
    description: str
    magnitude: float
    magnitude_unit: str
    duration_s: float


CATALOGUE: dict[FaultKind, FaultInfo] = {
    info.kind: info
    for info in (
        FaultInfo(FaultKind.SPIKE, FaultLevel.VALUE, "a sample jumps far off", 6.0, "× signal scale", 0.0),
        FaultInfo(FaultKind.DRIFT, FaultLevel.VALUE, "calibration drifts away linearly", 4.0, "× scale at end", 600.0),
        FaultInfo(FaultKind.STUCK, FaultLevel.VALUE, "the reading freezes at its last value", 0.0, "-", 120.0),
        FaultInfo(FaultKind.NOISE_BURST, FaultLevel.VALUE, "extra noise (EMI, loose wire)", 3.0, "× scale (σ)", 30.0),
        FaultInfo(
            FaultKind.BEARING_FAULT,
            FaultLevel.PHYSICS,
            "outer-race defect: BPFO impulse train grows in (vibration only)",
            1.0,
            "severity at end of ramp",
            math.inf,
        ),
        FaultInfo(FaultKind.DROPOUT, FaultLevel.MESSAGE, "samples taken but never sent (seq gap)", 0.0, "-", 30.0),
        FaultInfo(FaultKind.CLOCK_SKEW, FaultLevel.MESSAGE, "the device clock is off", 30.0, "seconds", 300.0),
        FaultInfo(FaultKind.DUPLICATE, FaultLevel.MESSAGE, "each message is sent twice", 0.0, "-", 10.0),
        FaultInfo(FaultKind.OUT_OF_ORDER, FaultLevel.MESSAGE, "consecutive messages swap places", 0.0, "-", 10.0),
        FaultInfo(
            FaultKind.MALFORMED,
            FaultLevel.MESSAGE,
            "garbage: truncated, not UTF-8, schema violation, NaN, wrong device, no id",
            0.0,
            "-",
            0.0,
        ),
    )
}

Direction = Literal["up", "down", "random"]


@dataclass(frozen=True, slots=True)
class FaultRule:
    """When and how strongly one kind of fault strikes a stream.

    Exactly one of ``at_s`` (once, that many seconds after the start), ``every_s`` (at random, on
    average that often) and ``probability`` (per message) is set. ``duration_s`` defaults to the
    catalogue's; ``inf`` lasts to the end of the run; ``0`` touches one message. A malformed fault
    with ``alongside`` sends the garbage next to the valid message rather than in its place.
    """

    kind: FaultKind
    at_s: float | None = None
    every_s: float | None = None
    probability: float | None = None
    duration_s: float | None = None
    magnitude: float | None = None
    direction: Direction = "up"
    ramp_s: float = 60.0
    alongside: bool = False

    def __post_init__(self) -> None:
        given = [value is not None for value in (self.at_s, self.every_s, self.probability)]
        if sum(given) != 1:
            raise ValueError(f"a {self.kind} fault needs exactly one of at_s, every_s, probability")

    @property
    def info(self) -> FaultInfo:
        return CATALOGUE[self.kind]


@dataclass(slots=True)
class FaultWindow:
    """A scheduled fault on one stream, over samples ``start .. end`` (inclusive)."""

    kind: FaultKind
    start: int
    end: int
    magnitude: float
    sign: float
    ramp: int
    alongside: bool = False
    first_seq: int = -1
    last_seq: int = -1
    first_ts: float = 0.0
    last_ts: float = 0.0
    anchor: float | None = None  # the value a stuck sensor holds

    def touch(self, first: int, last: int, first_ts: float, last_ts: float) -> None:
        if self.first_seq < 0:
            self.first_seq, self.first_ts = first, first_ts
        self.last_seq, self.last_ts = last, last_ts


@dataclass(frozen=True, slots=True)
class MessageFaults:
    """What the message-level faults do to the message that starts at one ``seq``."""

    drop: bool = False
    duplicate: bool = False
    out_of_order: bool = False
    malformed: bool = False
    skew_s: float = 0.0
    keep_original: bool = False


NO_MESSAGE_FAULTS = MessageFaults()


class GroundTruth:
    """The ground-truth log: one JSON object per injected fault, as JSON Lines.

    Records are kept in memory (``records``) and, when a path is given, written as each fault ends,
    so a run that is killed still leaves what it finished.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self._handle: IO[str] | None = None

    def open(self) -> None:
        if self.path is not None and self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        kind = str(record["kind"])
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self._handle is not None:
            self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._handle.flush()

    def recent(self, count: int) -> list[dict[str, Any]]:
        return self.records[-count:]

    @contextmanager
    def opened(self) -> Iterator[GroundTruth]:
        self.open()
        try:
            yield self
        finally:
            self.close()


def read_ground_truth(path: Path) -> list[dict[str, Any]]:
    """The records of a ground-truth log."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class StreamFaults:
    """The fault schedule of one stream: draws windows from its rules as the stream advances, applies
    value and physics faults to blocks of samples, tells what message faults apply, and logs every
    window that touched a sample when it ends."""

    def __init__(
        self,
        rules: Iterable[FaultRule],
        *,
        rng: np.random.Generator,
        device: str,
        stream: str,
        scale: float,
        batch: int,
        truth: GroundTruth,
    ) -> None:
        self.rules = list(rules)
        self.rng = rng
        self.device = device
        self.stream = stream
        self.scale = scale
        self.batch = batch
        self.truth = truth
        self.windows: list[FaultWindow] = []
        self._next_start: list[float] = [-1.0] * len(self.rules)
        self._horizon = -1
        # Lowest seq at which anything may change: lets the common no-fault case skip all work.
        self._quiet_until = -1.0
        self.has_physics = any(CATALOGUE[rule.kind].level is FaultLevel.PHYSICS for rule in self.rules)
        self.injected = 0

    def _draw(self, index: int, after: int, rate_hz: float) -> float:
        rule = self.rules[index]
        if rule.at_s is not None:
            return float(round(rule.at_s * rate_hz)) if after < 0 else math.inf
        if rule.every_s is not None:
            return after + 1 + float(self.rng.exponential(rule.every_s * rate_hz))
        assert rule.probability is not None
        if rule.probability <= 0.0:
            return math.inf
        # Messages until the next faulty one are geometric; faults start on a message boundary.
        messages = int(self.rng.geometric(min(rule.probability, 1.0)))
        first = (after + 1 + self.batch - 1) // self.batch * self.batch if after >= 0 else 0
        return float(first + (messages - 1) * self.batch)

    def _window(self, rule: FaultRule, start: int, rate_hz: float) -> FaultWindow:
        duration = rule.duration_s if rule.duration_s is not None else rule.info.duration_s
        length = self.batch if duration <= 0 else (2**62 if math.isinf(duration) else round(duration * rate_hz))
        length = max(length, self.batch if rule.info.level is FaultLevel.MESSAGE else 1)
        magnitude = rule.magnitude if rule.magnitude is not None else rule.info.magnitude
        sign = {"up": 1.0, "down": -1.0}.get(rule.direction) or float(self.rng.choice((-1.0, 1.0)))
        ramp = max(1, round(rule.ramp_s * rate_hz))
        return FaultWindow(rule.kind, start, start + length - 1, magnitude, sign, ramp, rule.alongside)

    def prepare(self, seq: int, count: int, rate_hz: float) -> None:
        """Schedule every window that starts before ``seq + count``; log those that ended before ``seq``."""
        last = seq + count - 1
        if last <= self._horizon:
            return
        for index, rule in enumerate(self.rules):
            if self._next_start[index] < 0:
                self._next_start[index] = self._draw(index, -1, rate_hz)
            while self._next_start[index] <= last:
                start = int(self._next_start[index])
                window = self._window(rule, max(start, 0), rate_hz)
                self.windows.append(window)
                self._next_start[index] = self._draw(index, window.end, rate_hz)
        self._horizon = last
        self.retire(seq)
        self._quiet_until = -1.0 if self.windows else min(self._next_start, default=math.inf)

    def quiet(self, seq: int, count: int) -> bool:
        """Whether no fault can touch samples ``seq .. seq+count-1``."""
        return not self.windows and seq + count - 1 < self._quiet_until

    def retire(self, before: int) -> None:
        """Log and forget the windows that ended before sample ``before``."""
        keep: list[FaultWindow] = []
        for window in self.windows:
            if window.end < before:
                self._log(window)
            else:
                keep.append(window)
        self.windows = keep

    def close(self) -> None:
        """Log the windows still open (at the end of a run)."""
        for window in self.windows:
            self._log(window)
        self.windows = []

    def _log(self, window: FaultWindow) -> None:
        if window.first_seq < 0:
            return
        self.injected += 1
        self.truth.write(
            {
                "device": self.device,
                "stream": self.stream,
                "kind": window.kind.value,
                "start": window.first_seq,
                "end": window.last_seq,
                "start_ts": round(window.first_ts, 6),
                "end_ts": round(window.last_ts, 6),
                "magnitude": window.magnitude * (window.sign if window.kind in _SIGNED else 1.0),
            }
        )

    def severity(self, seq: int, count: int) -> Values | None:
        """Physics faults' severity (0..1) per sample, or None when the machine is healthy."""
        if not self.has_physics:
            return None
        indices = np.arange(seq, seq + count)
        severity = np.zeros(count)
        for window in self.windows:
            if window.kind is FaultKind.BEARING_FAULT and window.start <= indices[-1] and window.end >= seq:
                inside = (indices >= window.start) & (indices <= window.end)
                ramp = np.clip((indices - window.start + 1) / window.ramp, 0.0, 1.0) * window.magnitude
                severity = np.where(inside, np.maximum(severity, ramp), severity)
        return severity if np.any(severity > 0.0) else None

    def apply(self, seq: int, values: Values) -> Values:
        """Apply value faults to samples ``seq ..`` in place (they are logged when they are sent)."""
        count = len(values)
        last = seq + count - 1
        for window in self.windows:
            if window.start > last or window.end < seq:
                continue
            low = max(window.start, seq) - seq
            high = min(window.end, last) - seq + 1
            level = CATALOGUE[window.kind].level
            if level is FaultLevel.MESSAGE:
                continue
            if window.kind is FaultKind.SPIKE:
                values[low:high] += window.sign * window.magnitude * self.scale
            elif window.kind is FaultKind.DRIFT:
                progress = (np.arange(low, high) + seq - window.start + 1) / (window.end - window.start + 1)
                values[low:high] += window.sign * window.magnitude * self.scale * progress
            elif window.kind is FaultKind.STUCK:
                if window.anchor is None:
                    window.anchor = float(values[low - 1]) if low > 0 else float(values[low])
                values[low:high] = window.anchor
            elif window.kind is FaultKind.NOISE_BURST:
                values[low:high] += self.rng.normal(0.0, window.magnitude * self.scale, high - low)
        return values

    def message(self, seq: int, count: int, first_ts: float, last_ts: float) -> MessageFaults:
        """The message faults of the message carrying samples ``seq .. seq+count-1``; marks every
        window the message touches as injected."""
        drop = duplicate = out_of_order = malformed = keep = False
        skew = 0.0
        last = seq + count - 1
        for window in self.windows:
            if window.start > last or window.end < seq:
                continue
            if CATALOGUE[window.kind].level is not FaultLevel.MESSAGE:
                low, high = max(window.start, seq), min(window.end, last)
                period = (last_ts - first_ts) / (count - 1) if count > 1 else 0.0
                window.touch(low, high, first_ts + (low - seq) * period, first_ts + (high - seq) * period)
                continue
            if not window.start <= seq <= window.end:
                continue
            window.touch(seq, last, first_ts, last_ts)
            if window.kind is FaultKind.DROPOUT:
                drop = True
            elif window.kind is FaultKind.DUPLICATE:
                duplicate = True
            elif window.kind is FaultKind.OUT_OF_ORDER:
                out_of_order = True
            elif window.kind is FaultKind.MALFORMED:
                malformed = True
                keep = window.alongside
            elif window.kind is FaultKind.CLOCK_SKEW:
                skew += window.sign * window.magnitude
        if any(window.end <= last for window in self.windows):
            self.retire(last + 1)  # log what this message completed, not only when the next block is made
        if not (drop or duplicate or out_of_order or malformed or skew):
            return NO_MESSAGE_FAULTS
        return MessageFaults(drop, duplicate, out_of_order, malformed, skew, keep)


_SIGNED = frozenset({FaultKind.SPIKE, FaultKind.DRIFT, FaultKind.CLOCK_SKEW})


GARBAGE_KINDS = ("truncated", "not_utf8", "schema_violation", "non_finite", "wrong_device", "no_message_id")


def garble(payload: bytes, rng: np.random.Generator) -> bytes:
    """A malformed variant of a valid payload, of a kind a receiver must tell apart and refuse."""
    kind = GARBAGE_KINDS[int(rng.integers(len(GARBAGE_KINDS)))]
    if kind == "truncated":
        return payload[: max(1, len(payload) // 2)]
    if kind == "not_utf8":
        return b"\xff\xfe" + payload[2:]
    document = json.loads(payload)
    if kind == "schema_violation":
        document["seq"] = -1
        document["sensor"] = "plasma"
    elif kind == "non_finite":
        if "value" in document:
            document["value"] = math.nan
        else:
            document["values"][0] = math.nan
    elif kind == "wrong_device":
        document["dev"] = "not-" + str(document["dev"])[:60]
    else:
        document.pop("id", None)
    return json.dumps(document, separators=(",", ":")).encode()
