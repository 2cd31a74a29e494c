"""Inference backends behind one small interface.

A backend runs a batch of preprocessed windows and returns class probabilities and anomaly scores.
ONNX Runtime is the default; :class:`FakeBackend` is the fast double for unit tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge_agent.errors import InferenceError, ModelLoadError
from protocol.manifest import ModelManifest

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class BatchOutput:
    probabilities: FloatArray  # [batch, classes]
    anomaly_scores: FloatArray  # [batch]


class InferenceBackend(Protocol):
    name: str

    def run(self, batch: FloatArray) -> BatchOutput:
        """Run a batch shaped like the manifest's input (batch dimension first)."""
        ...


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU, with a fixed number of intra-op threads."""

    name = "onnxruntime"

    def __init__(self, artifact: Path, manifest: ModelManifest, *, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelLoadError("onnxruntime is not installed (install the 'edge' extra)") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"onnxruntime cannot load {artifact}: {exc}") from exc
        self._input = manifest.input.name
        self._outputs = [manifest.output.probabilities]
        if manifest.output.anomaly_score is not None:
            self._outputs.append(manifest.output.anomaly_score)

    def run(self, batch: FloatArray) -> BatchOutput:
        try:
            results = self._session.run(self._outputs, {self._input: batch})
        except Exception as exc:
            raise InferenceError(f"onnxruntime failed on a batch of shape {batch.shape}: {exc}") from exc
        probabilities = np.asarray(results[0], dtype=np.float32)
        if len(results) > 1:
            scores = np.asarray(results[1], dtype=np.float32).reshape(len(batch))
        else:
            scores = np.zeros(len(batch), dtype=np.float32)
        return BatchOutput(probabilities=probabilities, anomaly_scores=scores)


class FakeBackend:
    """A test double: probabilities and scores computed by a plain function of each window."""

    name = "fake"

    def __init__(self, score: Callable[[FloatArray], tuple[list[float], float]]) -> None:
        self._score = score
        self.batches: list[int] = []

    def run(self, batch: FloatArray) -> BatchOutput:
        self.batches.append(len(batch))
        rows = [self._score(window) for window in batch]
        return BatchOutput(
            probabilities=np.asarray([row[0] for row in rows], dtype=np.float32),
            anomaly_scores=np.asarray([row[1] for row in rows], dtype=np.float32),
        )


BACKENDS: dict[str, Callable[[Path, ModelManifest, int], InferenceBackend]] = {
    "onnxruntime": lambda artifact, manifest, threads: OnnxRuntimeBackend(artifact, manifest, threads=threads),
}
