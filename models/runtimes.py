"""The three inference runtimes an edge artifact is exported for, behind one call: windows in, outputs out.

ONNX Runtime runs the QDQ ``.onnx``; OpenVINO runs its IR (``.xml`` + ``.bin``); LiteRT runs the
``.tflite``. Each runs on the CPU with one thread, as a small device would, so that figures and latencies
compare. No torch here: evaluation and the benchmark need only the runtimes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from models.evaluation import Outputs

Backend = Literal["onnxruntime", "openvino", "litert"]
BACKENDS: tuple[Backend, ...] = ("onnxruntime", "openvino", "litert")
SUFFIXES: dict[Backend, str] = {"onnxruntime": ".onnx", "openvino": ".xml", "litert": ".tflite"}
"""The file each backend loads, by suffix after the variant's name (``<task>_edge_int8.xml``)."""
PACKAGES: dict[Backend, str] = {"onnxruntime": "onnxruntime", "openvino": "openvino", "litert": "ai-edge-litert"}


class RuntimeMissingError(RuntimeError):
    """The runtime's package is not installed; the message names it."""


class WindowRunner(Protocol):
    """A loaded artifact: preprocessed windows (batch first) in, :class:`Outputs` out."""

    backend: Backend

    def __call__(self, windows: npt.NDArray[np.float32]) -> Outputs:
        """Run a batch of preprocessed windows."""
        ...


def _outputs(values: Sequence[npt.NDArray[np.float32]], batch: int) -> Outputs:
    probabilities = np.asarray(values[0], dtype=np.float32).reshape(batch, -1)
    if len(values) > 1:
        scores = np.asarray(values[1], dtype=np.float32).reshape(batch)
    else:
        scores = np.zeros(batch, dtype=np.float32)
    return Outputs(probabilities=probabilities, anomaly_score=scores)


@dataclass
class OnnxRuntimeRunner:
    """ONNX Runtime, CPU execution provider, one intra-op thread, sequential execution."""

    path: Path
    backend: Backend = "onnxruntime"

    def __post_init__(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeMissingError("onnxruntime is not installed") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._names = [output.name for output in self._session.get_outputs()]

    def __call__(self, windows: npt.NDArray[np.float32]) -> Outputs:
        """Run a batch of preprocessed windows."""
        values = self._session.run(self._names, {self._input: np.ascontiguousarray(windows, dtype=np.float32)})
        return _outputs(values, len(windows))


@dataclass
class OpenVinoRunner:
    """OpenVINO on the CPU, one stream, one thread, fp32 inference precision.

    OpenVINO defaults to bf16 on CPUs that have it; f32 keeps its figures comparable with the other
    runtimes (the int8 parts of the graph run in int8 either way).
    """

    path: Path
    backend: Backend = "openvino"
    # As the edge agent's backend does: with openvino 2026.4.1, rows past the 16th of one request were
    # measured to come back as if their input were zeros on these 1-D convolutional models.
    max_rows: int = 16

    def __post_init__(self) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise RuntimeMissingError("openvino is not installed") from exc
        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": 1,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
        }
        self._compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._outputs = list(self._compiled.outputs)

    def __call__(self, windows: npt.NDArray[np.float32]) -> Outputs:
        """Run a batch of preprocessed windows."""
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        parts = []
        for start in range(0, len(windows), self.max_rows):
            results = self._request.infer([windows[start : start + self.max_rows]])
            parts.append([np.array(results[output]) for output in self._outputs])
        return _outputs([np.concatenate(values) for values in zip(*parts, strict=True)], len(windows))


@dataclass
class LiteRtRunner:
    """LiteRT (the successor of TensorFlow Lite) with one thread; the ``.tflite`` takes one window per call.

    The converter fixes the batch at 1, so a batch is run window by window; its outputs are in the order
    of the signature's ``output_0``, ``output_1`` (probabilities, then the anomaly score when there is one).
    """

    path: Path
    backend: Backend = "litert"

    def __post_init__(self) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise RuntimeMissingError("ai-edge-litert is not installed") from exc
        self._interpreter = Interpreter(model_path=str(self.path), num_threads=1)
        self._interpreter.allocate_tensors()
        signature = self._interpreter.get_signature_list()["serving_default"]
        self._input = signature["inputs"][0]
        self._names = sorted(signature["outputs"])
        self._runner: Callable[..., dict[str, npt.NDArray[np.float32]]] = self._interpreter.get_signature_runner()

    def __call__(self, windows: npt.NDArray[np.float32]) -> Outputs:
        """Run a batch of preprocessed windows, one at a time."""
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        rows = [self._runner(**{self._input: windows[index : index + 1]}) for index in range(len(windows))]
        values = [np.concatenate([row[name] for row in rows]) for name in self._names]
        return _outputs(values, len(windows))


RUNNERS: dict[Backend, Callable[[Path], WindowRunner]] = {
    "onnxruntime": OnnxRuntimeRunner,
    "openvino": OpenVinoRunner,
    "litert": LiteRtRunner,
}


def load_runner(directory: Path, variant: str, backend: Backend) -> WindowRunner:
    """Load ``<directory>/<variant><suffix>`` with ``backend``; raises FileNotFoundError or RuntimeMissingError."""
    path = directory / f"{variant}{SUFFIXES[backend]}"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (rebuild the task, or this variant has no {backend} export)")
    return RUNNERS[backend](path)
