"""Evaluation of exported artifacts with ONNX Runtime, and cheap reference baselines (numpy only, no torch)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.faults import FAULTS
from protocol.manifest import PreprocessStep
from protocol.preprocessing import preprocess


@dataclass(frozen=True)
class Outputs:
    """What a window model returns for a batch."""

    probabilities: npt.NDArray[np.float32]
    anomaly_score: npt.NDArray[np.float32]

    @property
    def predictions(self) -> npt.NDArray[np.int64]:
        """Index of the most probable class per window."""
        return np.asarray(self.probabilities.argmax(axis=-1), dtype=np.int64)


class OnnxWindowModel:
    """An exported window model run by ONNX Runtime on the CPU, single-threaded as on a small device."""

    def __init__(
        self, path: Path, *, input_name: str = "window", outputs: tuple[str, str] = ("probabilities", "anomaly_score")
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input_name = input_name
        self._outputs = list(outputs)

    def __call__(self, normalized: npt.NDArray[np.float32]) -> Outputs:
        """Run on windows that are already preprocessed, shape ``[batch, window]``."""
        probabilities, scores = self._session.run(self._outputs, {self._input_name: normalized.astype(np.float32)})
        return Outputs(probabilities=np.asarray(probabilities), anomaly_score=np.asarray(scores))


def accuracy(predictions: npt.NDArray[np.int64], labels: npt.NDArray[np.int64]) -> float:
    """Share of correct predictions."""
    return float(np.mean(predictions == labels))


def nearest_neighbour_predictions(
    train_windows: npt.NDArray[np.floating],
    train_labels: npt.NDArray[np.int64],
    windows: npt.NDArray[np.floating],
) -> npt.NDArray[np.int64]:
    """Labels by the 1-nearest-neighbour rule with Euclidean distance (the standard UCR baseline)."""
    train = np.asarray(train_windows, dtype=np.float64)
    queries = np.asarray(windows, dtype=np.float64)
    # ‖a-b‖² = ‖a‖² - 2a·b + ‖b‖²; the queries' own norms do not change which neighbour is nearest.
    distances = (train**2).sum(axis=1)[np.newaxis, :] - 2.0 * queries @ train.T
    return np.asarray(train_labels[distances.argmin(axis=1)], dtype=np.int64)


@dataclass(frozen=True)
class FaultResponse:
    """How an anomaly score responds to one kind of injected fault."""

    median_score: float
    detection_rate: float
    """Share of faulted windows scoring above 1.0 (the training windows' 99th percentile)."""


def fault_responses(
    model: OnnxWindowModel,
    raw_windows: npt.NDArray[np.float64],
    steps: list[PreprocessStep],
    *,
    seed: int,
) -> Mapping[str, FaultResponse]:
    """Anomaly-score response to clean windows (key ``"clean"``) and to each fault in :data:`models.faults.FAULTS`.

    Faults are injected into raw windows, then the manifest's preprocessing runs, as on the device.
    """
    rng = np.random.default_rng(seed)
    responses: dict[str, FaultResponse] = {}
    for name, inject in {"clean": None, **FAULTS}.items():
        windows = raw_windows if inject is None else inject(raw_windows, rng)
        scores = model(preprocess(windows, steps)).anomaly_score
        responses[name] = FaultResponse(
            median_score=float(np.median(scores)), detection_rate=float(np.mean(scores > 1.0))
        )
    return responses
