"""The hub's own check of each global head: accuracy on held-out windows it keeps (never sent to devices)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
from flwr.app import ArrayRecord, MetricRecord

from cloud_hub.fl.errors import SettingsError
from cloud_hub.fl.global_model import ModelDescription
from protocol.messages import SensorKind

FloatArray = npt.NDArray[np.float32]


def embed(backbone_int8: Path, windows: FloatArray) -> FloatArray:
    """Embeddings by the devices' int8 backbone (ONNX Runtime), so the hub scores what devices will run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(backbone_int8), options, providers=["CPUExecutionProvider"])
    parts = [session.run(["embedding"], {"window": windows[i : i + 256]})[0] for i in range(0, len(windows), 256)]
    return np.concatenate(parts).astype(np.float32)


class HoldoutEvaluation:
    """``evaluate_fn`` for ``Strategy.start``: the head's accuracy and loss on held-out embeddings."""

    def __init__(self, features: FloatArray, labels: npt.NDArray[np.int64]) -> None:
        self.features = features
        self.labels = labels

    @classmethod
    def from_files(cls, backbone_int8: Path, holdout: Path) -> HoldoutEvaluation:
        try:
            with np.load(holdout) as data:
                windows, labels = data["windows"].astype(np.float32), data["labels"].astype(np.int64)
        except (OSError, KeyError, ValueError) as exc:
            raise SettingsError(f"cannot read held-out data {holdout}: {exc}") from exc
        return cls(embed(backbone_int8, windows), labels)

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        weight = arrays["weight"].numpy().astype(np.float32)
        bias = arrays["bias"].numpy().astype(np.float32)
        logits = self.features @ weight.T + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return MetricRecord(
            {
                "holdout-accuracy": float(np.mean(np.argmax(logits, axis=1) == self.labels)),
                "holdout-loss": float(-np.mean(log_p[np.arange(len(self.labels)), self.labels])),
                "holdout-examples": len(self.labels),
            }
        )


def read_task_description(path: Path, *, name: str = "federated_plaid_edge_int8") -> ModelDescription:
    """The model description of a task's federated artifacts (``models/quantized/federated_<task>.json``).

    ``keep_fp32.nodes`` names the backbone nodes the task's int8 edge model keeps fp32; a description
    without it leaves the default of :func:`cloud_hub.fl.global_model.excluded_nodes`. ``head`` says whether
    that model's head is int8 (``int8``) and with how many bits of weight range (``weight_bits``, 7 or 8); a
    description without it keeps the head fp32.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        shape = data["input"]["shape"]
        keep_fp32 = data.get("keep_fp32")
        nodes = None if keep_fp32 is None else keep_fp32["nodes"]
        if nodes is not None and (not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes)):
            raise ValueError(f"keep_fp32.nodes is a list of node names, not {nodes!r}")
        head = data.get("head") or {"int8": False}
        bits = int(head["weight_bits"]) if head["int8"] else None
        if bits not in (None, 7, 8):
            raise ValueError(f"head.weight_bits is 7 or 8, not {bits}")
        return ModelDescription(
            name=name,
            version="unset",
            task=str(data["task"]),
            labels=[str(label) for label in data["labels"]],
            window_size=int(shape[-1]),
            sensor=SensorKind(data.get("sensor", "current")),
            unit=str(data.get("unit", "A")),
            data=str(data.get("data", "")) + "; head trained by federated rounds on the fleet's labelled windows",
            metrics={},
            keep_fp32=None if nodes is None else tuple(nodes),
            head_weight_bits=bits,
        )
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise SettingsError(f"cannot read the task description {path}: {exc}") from exc
