"""Per-stream windows of ``size`` samples, one every ``hop`` samples, aligned on sequence numbers.

Window *k* of a stream covers sequence numbers ``[k*hop, k*hop + size)``, so a window is the same
whichever moment the agent started. A gap in the sequence drops the windows it cuts (counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.messages import SensorKind


@dataclass(frozen=True, slots=True)
class StreamKey:
    site: str
    device: str
    stream: str


@dataclass(frozen=True, slots=True)
class ReadyWindow:
    key: StreamKey
    sensor: SensorKind
    unit: str
    start_seq: int
    values: tuple[float, ...]
    completed_at: float


@dataclass(slots=True)
class _Run:
    """Consecutive samples of one stream, starting at ``start``."""

    start: int
    values: list[float] = field(default_factory=list)
    next_window: int = 0


class Windower:
    def __init__(self, *, size: int, hop: int) -> None:
        if size < 1 or hop < 1:
            raise ValueError("window size and hop must be at least 1")
        self.size = size
        self.hop = hop
        self._runs: dict[StreamKey, _Run] = {}
        self.gaps = 0

    def add(
        self, key: StreamKey, sensor: SensorKind, unit: str, seq: int, values: list[float], now: float
    ) -> list[ReadyWindow]:
        """Add consecutive samples starting at ``seq``; return the windows they complete."""
        run = self._runs.get(key)
        if run is None or seq != run.start + len(run.values):
            if run is not None:
                self.gaps += 1
            run = _Run(start=seq, next_window=self._first_window_at_or_after(seq))
            self._runs[key] = run
        run.values.extend(values)
        ready: list[ReadyWindow] = []
        end = run.start + len(run.values)
        while run.next_window + self.size <= end:
            offset = run.next_window - run.start
            ready.append(
                ReadyWindow(
                    key=key,
                    sensor=sensor,
                    unit=unit,
                    start_seq=run.next_window,
                    values=tuple(run.values[offset : offset + self.size]),
                    completed_at=now,
                )
            )
            run.next_window += self.hop
        # Keep only the samples a future window can still use.
        drop = min(run.next_window - run.start, len(run.values))
        if drop > 0:
            del run.values[:drop]
            run.start += drop
        return ready

    def _first_window_at_or_after(self, seq: int) -> int:
        return -(-seq // self.hop) * self.hop
