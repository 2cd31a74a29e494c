"""Test doubles shared by unit and integration tests."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge_agent.backends import FakeBackend
from edge_agent.model import LoadedModel
from protocol.manifest import InputSpec, ModelManifest, OutputSpec, ZNormalize
from protocol.messages import SensorKind

WINDOW = 4


def fake_manifest() -> ModelManifest:
    return ModelManifest(
        name="fake_edge",
        version="0.0.1",
        task="fake",
        role="edge",
        artifact="fake.onnx",
        sha256="0" * 64,
        bytes=1,
        input=InputSpec(
            name="window",
            shape=[None, WINDOW],
            sensor=SensorKind.POWER,
            unit="kW",
            window_size=WINDOW,
            hop=WINDOW,
            preprocessing=[ZNormalize()],
        ),
        output=OutputSpec(probabilities="probabilities", labels=["low", "high"], anomaly_score="anomaly_score"),
        parameters=0,
        data="none",
        rebuild="none",
    )


def rising_is_high(window: npt.NDArray[np.float32]) -> tuple[list[float], float]:
    """A stand-in model: 'high' with a confidence that grows with the window's trend; the anomaly
    score is the largest absolute z-score."""
    trend = float(window[-1] - window[0])
    p_high = float(1.0 / (1.0 + np.exp(-2.0 * trend)))
    return [1.0 - p_high, p_high], float(np.abs(window).max()) / 1.5


def fake_model() -> LoadedModel:
    return LoadedModel(manifest=fake_manifest(), backend=FakeBackend(rising_is_high))
