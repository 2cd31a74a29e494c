"""Latency of one window, single stream, one thread: the figure a device with one sensor stream cares about."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.runtimes import WindowRunner


@dataclass(frozen=True)
class Latency:
    """Per-window latency over ``repeats`` calls, after ``warmup`` calls that are not counted."""

    median_ms: float
    p90_ms: float
    repeats: int


def measure_latency(
    runner: WindowRunner, window: npt.NDArray[np.float32], *, repeats: int = 200, warmup: int = 20
) -> Latency:
    """Time ``runner`` on one preprocessed window (batch of one) ``repeats`` times; median and 90th percentile."""
    batch = np.ascontiguousarray(window[np.newaxis], dtype=np.float32)
    for _ in range(warmup):
        runner(batch)
    samples = np.empty(repeats)
    for index in range(repeats):
        started = time.perf_counter()
        runner(batch)
        samples[index] = time.perf_counter() - started
    return Latency(
        median_ms=float(np.median(samples) * 1e3), p90_ms=float(np.quantile(samples, 0.9) * 1e3), repeats=repeats
    )
