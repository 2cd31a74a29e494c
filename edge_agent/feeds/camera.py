"""A camera as a local source: frames through OpenCV, motion-gated, inferred by the camera's model."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edge_agent.errors import FeedError, ModelLoadError
from edge_agent.feeds.gate import GateDecision, MotionGate
from edge_agent.model import LoadedModel
from edge_agent.settings import CameraSettings
from edge_agent.windowing import ReadyWindow, StreamKey
from protocol.manifest import Frame, Resize
from protocol.preprocessing import resize


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    image: npt.NDArray[np.uint8]
    """``[height, width, 3]`` BGR or ``[height, width]`` grey, as OpenCV gives it."""
    timestamp: float
    """Seconds on the source's clock: the position in a video file, the monotonic clock for a camera."""


class FrameSource(Protocol):
    """Where frames come from. ``read`` blocks until the next frame; ``None`` when the source has ended."""

    def read(self) -> CapturedFrame | None: ...

    def close(self) -> None: ...


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise FeedError(
            "the camera source needs OpenCV: install the 'edge-camera' extra (pip install 'edgefleet[edge-camera]')"
        ) from exc
    return cv2


class OpenCVCamera:
    """A camera (device index) or a video file or stream (path, URL) through ``cv2.VideoCapture``.

    A video file's frames carry their position in the video as timestamps, so gating a recording gives
    the same decisions however fast it is read.
    """

    def __init__(self, source: int | str, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        cv2 = _cv2()
        self._cv2 = cv2
        self._live = isinstance(source, int)
        self._monotonic = monotonic
        self._capture = cv2.VideoCapture(source)
        if not self._capture.isOpened():
            raise FeedError(f"OpenCV cannot open the camera source {source!r}")
        self.source = source

    def read(self) -> CapturedFrame | None:
        ok, image = self._capture.read()
        if not ok:
            return None
        position_s = float(self._capture.get(self._cv2.CAP_PROP_POS_MSEC)) / 1000.0
        return CapturedFrame(np.asarray(image, dtype=np.uint8), self._monotonic() if self._live else position_s)

    def close(self) -> None:
        self._capture.release()


def model_frame(model: LoadedModel) -> Frame:
    """The frame geometry the camera model reads (its manifest's ``frame`` step)."""
    steps = model.manifest.input.preprocessing
    frame = next((step for step in steps if isinstance(step, Frame)), None)
    if frame is None:
        raise ModelLoadError(f"model {model.manifest.name} takes no camera frames: its manifest has no 'frame' step")
    return frame


def fit_frame(image: npt.NDArray[np.generic], frame: Frame) -> npt.NDArray[np.float64]:
    """``image`` at the model's frame size and channel count (area averaging, grey copied to each channel)."""
    data = np.asarray(image, dtype=np.float64)
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    if data.ndim != 3:
        raise FeedError(f"a camera frame is [height, width(, channels)]; got shape {list(image.shape)}")
    if data.shape[2] != frame.channels:
        if data.shape[2] == 1:
            data = np.repeat(data, frame.channels, axis=2)
        elif frame.channels == 1:
            data = data.mean(axis=2, keepdims=True)
        else:
            raise FeedError(f"the camera gives {data.shape[2]} channels; the model reads {frame.channels}")
    if data.shape[:2] != (frame.height, frame.width):
        step = Resize(height=frame.height, width=frame.width, interpolation="area")
        data = np.moveaxis(resize(np.moveaxis(data, 2, 0), step), 0, 2)
    return data


class CameraFeed:
    """Frames from a :class:`FrameSource`, gated by motion, as windows for the camera's model.

    A frame is brought to the geometry of the model's ``frame`` step when the camera gives another size
    (the source's job, as a microphone opens at the model's sample rate); the gate decides; an inferred
    frame is one window, flat, numbered by its frame index. Counts: ``read``, ``inferred``,
    ``gated_still``, ``gated_cooldown``, and ``skipped_pace`` (frames read past the ``fps`` limit).
    """

    kind = "camera"

    def __init__(
        self,
        settings: CameraSettings,
        model: LoadedModel,
        source: FrameSource,
        *,
        site: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.model = model
        self.source = source
        self.frame = model_frame(model)
        self.key = StreamKey(site=site, device=settings.device_id, stream=settings.stream)
        self.name = f"{settings.device_id}/{settings.stream}"
        self.gate = MotionGate(
            threshold=settings.gate_threshold,
            cooldown_s=settings.cooldown_s,
            pixel_delta=settings.gate_pixel_delta,
            width=settings.gate_width,
            height=settings.gate_height,
            refresh_s=settings.refresh_s,
        )
        self.counts: Counter[str] = Counter()
        self._clock = clock
        self._index = -1
        self._last_taken: float | None = None

    def read(self) -> list[ReadyWindow] | None:
        """Read one frame (blocking); the windows to infer (none or one), or ``None`` once the source ended."""
        captured = self.source.read()
        if captured is None:
            return None
        self._index += 1
        self.counts["read"] += 1
        fps = self.settings.fps
        # A millisecond of slack: a video's frame times are float milliseconds, 0.1 s apart or a hair less.
        if fps is not None and self._last_taken is not None and captured.timestamp - self._last_taken < 1 / fps - 1e-3:
            self.counts["skipped_pace"] += 1
            return []
        self._last_taken = captured.timestamp
        image = fit_frame(captured.image, self.frame)
        result = self.gate.offer(image, captured.timestamp)
        self.counts[result.decision.value] += 1
        if result.decision is not GateDecision.INFER:
            return []
        spec = self.model.manifest.input
        window = ReadyWindow(
            key=self.key,
            sensor=spec.sensor,
            unit=spec.unit,
            start_seq=self._index,
            values=tuple(image.ravel().tolist()),
            completed_at=self._clock(),
        )
        return [window]

    def close(self) -> None:
        self.source.close()
