"""A smart power meter that replays real daily demand profiles (ItalyPowerDemand), one reading an
hour of simulated time, with injected spike faults recorded as ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from firmware_sim.datasets import LabelledSeries

HOURS_PER_DAY = 24


@dataclass(frozen=True, slots=True)
class Sample:
    seq: int
    value_kw: float
    day_label: str
    fault: str | None


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected fault, as written to the ground-truth log."""

    device: str
    stream: str
    kind: str
    start_seq: int
    end_seq: int

    def as_record(self) -> dict[str, object]:
        return {
            "device": self.device,
            "stream": self.stream,
            "kind": self.kind,
            "start": self.start_seq,
            "end": self.end_seq,
        }


class PowerMeter:
    """Days are drawn from the dataset in a seeded order and scaled to the meter's own load."""

    stream = "power"

    def __init__(self, device: str, days: LabelledSeries, *, seed: int, spike_probability: float) -> None:
        self.device = device
        self._days = days
        self._rng = np.random.default_rng(seed)
        # A meter's typical load and daily swing, in kW; z-normalized profiles are mapped onto them.
        self.base_kw = float(self._rng.uniform(40.0, 60.0))
        self.swing_kw = float(self._rng.uniform(6.0, 12.0))
        self._spike_probability = spike_probability
        self.faults: list[Fault] = []
        self.day_labels: dict[int, str] = {}

    def samples(self) -> Iterator[Sample]:
        seq = 0
        while True:
            index = int(self._rng.integers(len(self._days.labels)))
            profile = self._days.values[index]
            label = self._days.labels[index]
            self.day_labels[seq] = label
            spike_at = -1
            if self._rng.random() < self._spike_probability:
                spike_at = int(self._rng.integers(HOURS_PER_DAY))
                self.faults.append(Fault(self.device, self.stream, "spike", seq + spike_at, seq + spike_at))
            for hour in range(HOURS_PER_DAY):
                value = self.base_kw + self.swing_kw * float(profile[hour])
                fault = None
                if hour == spike_at:
                    value += 6.0 * self.swing_kw
                    fault = "spike"
                yield Sample(seq=seq, value_kw=round(max(value, 0.0), 3), day_label=label, fault=fault)
                seq += 1
