"""Inference backends behind one small interface.

A backend runs a batch of preprocessed windows and returns class probabilities and anomaly scores.
ONNX Runtime is the default; OpenVINO (Intel) and LiteRT (Arm; ``ai-edge-litert``, or the older
``tflite-runtime`` where that is what a device has) are chosen per model in the settings. Each loads
the file its manifest names for it, after checking its sha256. :class:`FakeBackend` is the fast
double for unit tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _checked(path: Path, sha256: str) -> Path:
    if not path.is_file():
        raise ModelLoadError(f"model artifact {path} is missing")
    actual = file_sha256(path)
    if actual != sha256:
        raise ModelLoadError(f"model artifact {path} has sha256 {actual}, the manifest says {sha256}")
    return path


def artifact_for(backend: str, directory: Path, manifest: ModelManifest) -> Path:
    """The verified file ``backend`` loads: the ONNX artifact, or the backend's export."""
    for export in manifest.exports:
        if export.backend == backend:
            if export.weights is not None and export.weights_sha256 is not None:
                _checked(directory / export.weights, export.weights_sha256)
            return _checked(directory / export.artifact, export.sha256)
    if backend in ("onnxruntime", "openvino"):  # OpenVINO reads ONNX directly
        return _checked(directory / manifest.artifact, manifest.sha256)
    raise ModelLoadError(f"model {manifest.name} {manifest.version} has no export for the {backend} backend")


def _split_outputs(manifest: ModelManifest, outputs: dict[str, FloatArray], batch: int) -> BatchOutput:
    """Find the probabilities and the anomaly score among named outputs (by name, else by shape)."""
    spec = manifest.output
    probabilities = outputs.get(spec.probabilities)
    scores = outputs.get(spec.anomaly_score) if spec.anomaly_score else None
    if probabilities is None:
        classes = len(spec.labels)
        candidates = [v for v in outputs.values() if v.ndim == 2 and v.shape[-1] == classes]
        if len(candidates) != 1:
            raise InferenceError(f"cannot tell the probabilities among outputs {sorted(outputs)}")
        probabilities = candidates[0]
    if scores is None and spec.anomaly_score is not None:
        rest = [v for v in outputs.values() if v is not probabilities and v.size == batch]
        scores = rest[0] if len(rest) == 1 else None
    return BatchOutput(
        probabilities=np.asarray(probabilities, dtype=np.float32).reshape(batch, -1),
        anomaly_scores=(
            np.asarray(scores, dtype=np.float32).reshape(batch)
            if scores is not None
            else np.zeros(batch, dtype=np.float32)
        ),
    )


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
        self._manifest = manifest
        self._input = manifest.input.name
        self._outputs = [output.name for output in self._session.get_outputs()]

    def run(self, batch: FloatArray) -> BatchOutput:
        try:
            results = self._session.run(self._outputs, {self._input: batch})
        except Exception as exc:
            raise InferenceError(f"onnxruntime failed on a batch of shape {batch.shape}: {exc}") from exc
        return _split_outputs(self._manifest, dict(zip(self._outputs, results, strict=True)), len(batch))


class OpenVinoBackend:
    """OpenVINO on the CPU; fp32 inference precision, so results match the other backends."""

    name = "openvino"
    # Measured with openvino 2026.4.1 on this project's 1-D convolutional models (fp32 and int8 QDQ):
    # rows past the 16th of one inference request come back as if their input were zeros. Requests of
    # at most 16 rows agree with ONNX Runtime to 1e-7, so larger batches are split.
    MAX_ROWS = 16

    def __init__(self, artifact: Path, manifest: ModelManifest, *, threads: int = 1) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ModelLoadError("openvino is not installed (pip install 'edgefleet[edge-openvino]')") from exc
        try:
            core = ov.Core()
            model = core.read_model(str(artifact))
            # On CPUs with bf16 support OpenVINO would otherwise pick bf16 and drift from the reference.
            config = {
                "INFERENCE_NUM_THREADS": threads,
                "INFERENCE_PRECISION_HINT": "f32",
                "PERFORMANCE_HINT": "LATENCY",
            }
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ModelLoadError(f"openvino cannot load {artifact}: {exc}") from exc
        self._request = self._compiled.create_infer_request()
        self._manifest = manifest
        self._outputs = [(output.get_any_name(), output) for output in self._compiled.outputs]

    def run(self, batch: FloatArray) -> BatchOutput:
        parts = [self._run(batch[start : start + self.MAX_ROWS]) for start in range(0, len(batch), self.MAX_ROWS)]
        if len(parts) == 1:
            return parts[0]
        return BatchOutput(
            probabilities=np.concatenate([p.probabilities for p in parts]),
            anomaly_scores=np.concatenate([p.anomaly_scores for p in parts]),
        )

    def _run(self, batch: FloatArray) -> BatchOutput:
        try:
            result = self._request.infer({0: batch})
            # Copies: the request reuses its output buffers on the next call.
            named = {name: np.array(result[port]) for name, port in self._outputs}
        except Exception as exc:
            raise InferenceError(f"openvino failed on a batch of shape {batch.shape}: {exc}") from exc
        return _split_outputs(self._manifest, named, len(batch))


def _litert_interpreter(path: Path, threads: int) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise ModelLoadError(
                "neither ai-edge-litert nor tflite-runtime is installed (pip install 'edgefleet[edge-litert]')"
            ) from exc
    return Interpreter(model_path=str(path), num_threads=threads)


class LiteRtBackend:
    """LiteRT (TensorFlow Lite's successor). Models with a fixed batch of one run window by window."""

    name = "litert"

    def __init__(self, artifact: Path, manifest: ModelManifest, *, threads: int = 1) -> None:
        try:
            self._interpreter = _litert_interpreter(artifact, threads)
            self._interpreter.allocate_tensors()
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"LiteRT cannot load {artifact}: {exc}") from exc
        self._manifest = manifest
        self._input = self._interpreter.get_input_details()[0]
        self._outputs = self._interpreter.get_output_details()
        self._batch = int(self._input["shape"][0])

    def run(self, batch: FloatArray) -> BatchOutput:
        try:
            if self._batch == len(batch):
                return self._invoke(batch)
            parts = [self._invoke(batch[i : i + 1]) for i in range(len(batch))]
        except InferenceError:
            raise
        except Exception as exc:
            raise InferenceError(f"LiteRT failed on a batch of shape {batch.shape}: {exc}") from exc
        return BatchOutput(
            probabilities=np.concatenate([p.probabilities for p in parts]),
            anomaly_scores=np.concatenate([p.anomaly_scores for p in parts]),
        )

    def _invoke(self, batch: FloatArray) -> BatchOutput:
        shape = [len(batch), *self._input["shape"][1:]]
        self._interpreter.set_tensor(self._input["index"], batch.reshape(shape).astype(np.float32))
        self._interpreter.invoke()
        named = {d["name"]: np.asarray(self._interpreter.get_tensor(d["index"])) for d in self._outputs}
        return _split_outputs(self._manifest, named, len(batch))


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
    "openvino": lambda artifact, manifest, threads: OpenVinoBackend(artifact, manifest, threads=threads),
    "litert": lambda artifact, manifest, threads: LiteRtBackend(artifact, manifest, threads=threads),
}
