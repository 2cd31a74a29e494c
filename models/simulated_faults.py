"""The simulator's labelled value faults, injected into a task's test stretch, to score anomaly detectors on them.

``firmware_sim`` schedules and applies its faults (spike, drift, stuck, noise burst) with ground truth; it
runs in its own process (``edgefleet sim inject``, JSON in and out), because the parts import nothing of
each other. Fault lengths and intervals are set in windows, so they mean the same on any sample rate; the
magnitudes are the simulator's, in units of the stretch's spread. No torch here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class FaultInjectionError(RuntimeError):
    """``edgefleet sim inject`` failed; the message carries its error output."""


@dataclass(frozen=True)
class InjectedFaults:
    """A series with the simulator's faults in it, which readings they touched, and where to score."""

    series: FloatArray
    labels: npt.NDArray[np.int64]
    """1 where an injected fault touched the reading."""
    scored: npt.NDArray[np.bool_]
    """Readings to score: all but the series' own anomalies and one window around them."""
    counts: dict[str, int]
    """Injected faults by kind."""


def fault_rules(window: int, rate_hz: float) -> list[dict[str, Any]]:
    """The schedule: every kind of value fault, at random, a few windows apart on average."""
    seconds = window / rate_hz
    return [
        {"kind": "spike", "every_s": 6 * seconds, "duration_s": 0.0},
        {"kind": "stuck", "every_s": 12 * seconds, "duration_s": seconds / 2},
        {"kind": "noise_burst", "every_s": 12 * seconds, "duration_s": seconds / 2},
        {"kind": "drift", "every_s": 24 * seconds, "duration_s": 2 * seconds},
    ]


def inject(
    series: FloatArray,
    own_labels: npt.NDArray[np.int64],
    *,
    window: int,
    rate_hz: float | None,
    scale: float,
    seed: int,
) -> InjectedFaults:
    """Inject the simulator's faults into ``series`` (readings, unnormalized) and label them.

    ``own_labels`` marks the series' own anomalies: those readings, and one window either side, are left
    out of ``scored`` so that a detector is judged on the injected faults alone.
    """
    rate = rate_hz or 1.0  # a series without a stated rate is indexed by reading
    request = {
        "values": np.asarray(series, dtype=np.float64).tolist(),
        "rate_hz": rate,
        "scale": scale,
        "seed": seed,
        "rules": fault_rules(window, rate),
    }
    command = [sys.executable, "-m", "edgefleet", "sim", "inject"]
    result = subprocess.run(command, input=json.dumps(request), capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise FaultInjectionError(f"{' '.join(command[2:])} failed (exit {result.returncode}): {result.stderr}")
    answer = json.loads(result.stdout)
    counts: dict[str, int] = {}
    for record in answer["truth"]:
        counts[record["kind"]] = counts.get(record["kind"], 0) + 1
    own = np.convolve(np.asarray(own_labels, dtype=np.float64), np.ones(2 * window + 1), mode="same") > 0
    return InjectedFaults(
        series=np.asarray(answer["values"], dtype=np.float64),
        labels=np.asarray(answer["labels"], dtype=np.int64),
        scored=~own,
        counts=counts,
    )
