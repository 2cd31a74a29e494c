"""Motion gating: infer a camera frame only when the scene has changed enough since the last inferred one."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from protocol.manifest import Grayscale, Resize
from protocol.preprocessing import grayscale, resize


class GateDecision(StrEnum):
    """What the gate made of a frame (also the name it is counted under)."""

    INFER = "inferred"
    STILL = "gated_still"
    """The scene has not changed enough since the last inferred frame."""
    COOLDOWN = "gated_cooldown"
    """It has, but the last inference is too recent."""


@dataclass(frozen=True, slots=True)
class GateResult:
    decision: GateDecision
    change: float
    """Share of the downscaled grey frame's pixels that differ from the last inferred one by ``pixel_delta``."""


class MotionGate:
    """Frame differencing on a downscaled grey frame, with a threshold and a cool-down (sans I/O).

    Each frame is reduced to ``width`` × ``height`` grey pixels (BT.601, area averaging, which also
    averages sensor noise away) and compared with the reduced frame last inferred: when at least a share
    ``threshold`` of the pixels differ by ``pixel_delta`` grey levels (0-255) or more, the scene has moved.
    Comparing with the last *inferred* frame, not the previous one, lets slow changes add up until they
    count. The first frame is always inferred; after an inference, frames wait ``cooldown_s`` (by the
    source's clock); with ``refresh_s``, a still scene is inferred again after that long.
    """

    def __init__(
        self,
        *,
        threshold: float,
        cooldown_s: float,
        pixel_delta: float = 25.0,
        width: int = 32,
        height: int = 24,
        refresh_s: float | None = None,
    ) -> None:
        if not 0 <= threshold <= 1 or pixel_delta < 0:
            raise ValueError("the gate threshold is a share of pixels (0-1) and the pixel delta >= 0")
        if cooldown_s < 0 or width < 1 or height < 1 or (refresh_s is not None and refresh_s <= 0):
            raise ValueError("the gate's cool-down must be >= 0, its size and refresh > 0")
        self.threshold = threshold
        self.pixel_delta = pixel_delta
        self.cooldown_s = cooldown_s
        self.refresh_s = refresh_s
        self._grey = Grayscale()
        self._resize = Resize(height=height, width=width, interpolation="area")
        self._reference: npt.NDArray[np.float64] | None = None
        self._last_inferred: float | None = None

    def reduce(self, frame: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
        """The frame (``[height, width]`` grey or ``[height, width, 3]`` BGR) as the gate compares it."""
        image = np.asarray(frame, dtype=np.float64)
        if image.ndim == 3:
            image = grayscale(image, self._grey)
        if image.ndim != 2:
            raise ValueError(f"a frame is [height, width] or [height, width, 3]; got shape {list(frame.shape)}")
        return np.asarray(resize(image[np.newaxis], self._resize)[0])

    def offer(self, frame: npt.NDArray[np.generic], timestamp: float) -> GateResult:
        """Decide on one frame taken at ``timestamp`` (seconds, the source's clock)."""
        small = self.reduce(frame)
        if self._reference is None or self._last_inferred is None:
            return self._infer(small, timestamp, float("inf"))
        change = float(np.mean(np.abs(small - self._reference) >= self.pixel_delta))
        elapsed = timestamp - self._last_inferred
        due = change >= self.threshold or (self.refresh_s is not None and elapsed >= self.refresh_s)
        if not due:
            return GateResult(GateDecision.STILL, change)
        if elapsed < self.cooldown_s:
            return GateResult(GateDecision.COOLDOWN, change)
        return self._infer(small, timestamp, change)

    def _infer(self, small: npt.NDArray[np.float64], timestamp: float, change: float) -> GateResult:
        self._reference = small
        self._last_inferred = timestamp
        return GateResult(GateDecision.INFER, change)
