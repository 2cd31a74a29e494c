"""Synthetic sensor faults, injected into raw windows to check that a model's anomaly score notices them.

Each fault is expressed in units of the window's own spread, so it means the same on any sensor and scale.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Windows = npt.NDArray[np.float64]
Fault = Callable[[Windows, np.random.Generator], Windows]


def spike(windows: Windows, rng: np.random.Generator, *, magnitude: float = 6.0) -> Windows:
    """One reading per window, at a random position, jumps to ``mean + magnitude * std`` of its window."""
    faulted = windows.copy()
    rows = np.arange(len(faulted))
    columns = rng.integers(0, faulted.shape[1], size=len(faulted))
    faulted[rows, columns] = windows.mean(axis=1) + magnitude * windows.std(axis=1)
    return faulted


def stuck_at(windows: Windows, rng: np.random.Generator, *, fraction: float = 0.5) -> Windows:
    """The sensor freezes: ``fraction`` of the window, from a random start, repeats the reading at the start."""
    faulted = windows.copy()
    length = max(1, round(fraction * faulted.shape[1]))
    starts = rng.integers(0, faulted.shape[1] - length + 1, size=len(faulted))
    for row, start in enumerate(starts):
        faulted[row, start : start + length] = faulted[row, start]
    return faulted


def dropout(windows: Windows, rng: np.random.Generator, *, fraction: float = 0.25, depth: float = 3.0) -> Windows:
    """A run of readings (``fraction`` of the window) falls to ``mean - depth * std``, as a meter reporting ~0 would."""
    faulted = windows.copy()
    length = max(1, round(fraction * faulted.shape[1]))
    starts = rng.integers(0, faulted.shape[1] - length + 1, size=len(faulted))
    floors = windows.mean(axis=1) - depth * windows.std(axis=1)
    for row, start in enumerate(starts):
        faulted[row, start : start + length] = floors[row]
    return faulted


def flatline(windows: Windows, rng: np.random.Generator) -> Windows:
    """The whole window repeats its first reading (a dead sensor); z-normalization maps it to all zeros."""
    del rng  # same signature as the other faults; nothing random here
    return np.repeat(windows[:, :1], windows.shape[1], axis=1)


FAULTS: dict[str, Fault] = {"spike": spike, "stuck_at": stuck_at, "dropout": dropout, "flatline": flatline}
"""Every fault by the name reported in metrics and model cards."""
