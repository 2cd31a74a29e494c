"""The image modality: a camera watching simple shapes move across a textured background.

Frames are drawn with OpenCV (``opencv-python-headless``, in the ``sim`` extra): circles and boxes
that drift, bounce off the edges, and now and then enter or leave, over a lit gradient with sensor
noise. A frame travels as one ``telemetry.batch`` of grey levels in [0, 1], row by row (a 32×24 frame
is 768 values, a few kB); :func:`write_frame` saves frames as PNG for an agent's local image source.
The label track says how many objects each frame shows (``objects_2``); :meth:`CameraScene.boxes`
gives their bounding boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from firmware_sim.errors import SynthesisError
from firmware_sim.signals import LabelTrack
from protocol.messages import SensorKind

Values = npt.NDArray[np.float64]


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise SynthesisError("OpenCV is not installed (pip install 'edgefleet[sim]')") from exc
    return cv2


@dataclass
class Shape:
    kind: str  # "circle" or "box"
    x: float
    y: float
    dx: float
    dy: float
    size: float
    shade: int


class CameraScene:
    """Consecutive frames of a synthetic scene, flattened into one stream of grey levels."""

    sensor = SensorKind.GENERIC
    unit = "grey"
    scale = 0.2

    def __init__(
        self,
        rng: np.random.Generator,
        *,
        width: int = 32,
        height: int = 24,
        max_objects: int = 3,
        speed_px: float = 1.5,
        noise_std: float = 0.02,
    ) -> None:
        self.cv2 = _cv2()
        self.rng = rng
        self.width = width
        self.height = height
        self.max_objects = max_objects
        self.speed_px = speed_px
        self.noise_std = noise_std
        self.labels: LabelTrack | None = LabelTrack()
        self.shapes: list[Shape] = [self._shape() for _ in range(int(rng.integers(0, max_objects + 1)))]
        yy, xx = np.mgrid[0:height, 0:width]
        tilt = float(rng.uniform(-1.0, 1.0))
        self._background = (60 + 40 * (xx / max(width - 1, 1)) + 20 * tilt * (yy / max(height - 1, 1))).astype(
            np.float64
        )
        self._frame: Values = np.empty(0)
        self._position = 0

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def _shape(self) -> Shape:
        rng = self.rng
        size = float(rng.uniform(2.0, max(3.0, min(self.width, self.height) / 4)))
        angle = float(rng.uniform(0.0, 2.0 * np.pi))
        return Shape(
            kind=str(rng.choice(("circle", "box"))),
            x=float(rng.uniform(size, self.width - size)),
            y=float(rng.uniform(size, self.height - size)),
            dx=self.speed_px * float(np.cos(angle)),
            dy=self.speed_px * float(np.sin(angle)),
            size=size,
            shade=int(rng.integers(150, 256)),
        )

    def step(self) -> None:
        """Move every shape one frame on; now and then one enters or leaves."""
        for shape in self.shapes:
            shape.x += shape.dx
            shape.y += shape.dy
            if not shape.size <= shape.x <= self.width - shape.size:
                shape.dx = -shape.dx
            if not shape.size <= shape.y <= self.height - shape.size:
                shape.dy = -shape.dy
        if self.rng.random() < 0.05 and len(self.shapes) < self.max_objects:
            self.shapes.append(self._shape())
        if self.rng.random() < 0.05 and self.shapes:
            self.shapes.pop(int(self.rng.integers(len(self.shapes))))

    def frame(self) -> npt.NDArray[np.uint8]:
        """The current frame, ``height × width`` grey levels."""
        cv2 = self.cv2
        image = self._background + self.rng.normal(0.0, self.noise_std * 255.0, self._background.shape)
        canvas: npt.NDArray[np.uint8] = np.clip(image, 0, 255).astype(np.uint8)
        for shape in self.shapes:
            centre = (round(shape.x), round(shape.y))
            radius = max(1, round(shape.size))
            if shape.kind == "circle":
                cv2.circle(canvas, centre, radius, shape.shade, thickness=-1, lineType=cv2.LINE_AA)
            else:
                corner = (centre[0] - radius, centre[1] - radius)
                opposite = (centre[0] + radius, centre[1] + radius)
                cv2.rectangle(canvas, corner, opposite, shape.shade, thickness=-1)
        return canvas

    def boxes(self) -> list[tuple[str, int, int, int, int]]:
        """Each shape's kind and bounding box ``(x0, y0, x1, y1)``, clipped to the frame."""
        result = []
        for shape in self.shapes:
            radius = max(1, round(shape.size))
            x0, y0 = max(0, round(shape.x) - radius), max(0, round(shape.y) - radius)
            x1, y1 = min(self.width - 1, round(shape.x) + radius), min(self.height - 1, round(shape.y) + radius)
            result.append((shape.kind, x0, y0, x1, y1))
        return result

    def generate(self, seq: int, times: Values, severity: Values | None = None) -> Values:
        values = np.empty(len(times))
        filled = 0
        while filled < len(times):
            if self._position >= len(self._frame):
                self.step()
                self._frame = self.frame().astype(np.float64).ravel() / 255.0
                self._position = 0
                assert self.labels is not None
                self.labels.begin(seq + filled, f"objects_{len(self.shapes)}")
            take = min(len(times) - filled, len(self._frame) - self._position)
            values[filled : filled + take] = self._frame[self._position : self._position + take]
            self._position += take
            filled += take
        return values


def write_frame(path: Path, frame: npt.NDArray[np.uint8]) -> None:
    """Save a frame as PNG (for an agent's local image source)."""
    cv2 = _cv2()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), frame):
        raise SynthesisError(f"cannot write {path}")
