"""The federated-learning artifacts of task ``plaid``: a frozen int8 backbone that outputs embeddings, and heads.

Federated rounds on the fleet train only the classification head (a softmax regression over the backbone's
16-value embedding), so a device needs numpy and ONNX Runtime, not torch. This module cuts the committed
``plaid`` edge models in two and writes, under ``models/quantized/``:

- ``federated_plaid_backbone_int8.onnx``: the int8 edge model up to its pooled features, output ``embedding``
  (what devices run to embed their labelled windows);
- ``federated_plaid_backbone_fp32.onnx``: the same cut of the fp32 edge model (what the hub joins with a new
  head and quantizes statically into the next edge model, with no torch);
- ``federated_plaid_head_initial.npz``: the first global head (``weight`` ``[classes, features]``, ``bias``),
  fitted on a small seed set of the training split (two windows per class): the model a fleet starts from
  before its own verdicts teach it more;
- ``federated_plaid_calibration.npy``: preprocessed training windows the hub calibrates int8 quantization with;
- ``federated_plaid.json``: what the files are, their sha256, the seed set and the figures measured here.

The backbone was trained on the whole training split when task ``plaid`` was built, so its embeddings
already separate the classes; federated rounds adapt the head. Run ``python -m models.federated``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import helper, utils

from models.datasets import WindowDataset, load_plaid
from models.signals import apply_preprocessing
from protocol.manifest import FitLength, ZNormalize

COMMITTED = Path(__file__).resolve().parent / "quantized"
# The same steps as task plaid (models/plaid.py), without importing its torch-based recipe.
PREPROCESSING = (ZNormalize().model_dump(), FitLength(length=512, pad=0.0).model_dump())
SOURCE_INT8 = "plaid_edge_int8.onnx"
SOURCE_FP32 = "plaid_edge_fp32.onnx"
EMBEDDING_INT8 = "/classifier/Flatten_output_0_DequantizeLinear_Output"
EMBEDDING_FP32 = "/classifier/Flatten_output_0"
HEAD_WEIGHT = "classifier.head.weight"
HEAD_BIAS = "classifier.head.bias"
SEED_PER_CLASS = 2
CALIBRATION_WINDOWS = 128
CALIBRATION_SHARE = 0.95

BACKBONE_INT8 = "federated_plaid_backbone_int8.onnx"
BACKBONE_FP32 = "federated_plaid_backbone_fp32.onnx"
INITIAL_HEAD = "federated_plaid_head_initial.npz"
CALIBRATION = "federated_plaid_calibration.npy"
DESCRIPTION = "federated_plaid.json"


def preprocessed_plaid() -> tuple[WindowDataset, npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The PLAID split and its train and test windows as the edge model takes them (``[n, 512]``)."""
    data = load_plaid()
    return (
        data,
        apply_preprocessing(data.train_windows, PREPROCESSING),
        apply_preprocessing(data.test_windows, PREPROCESSING),
    )


def cut_backbone(source: Path, embedding_tensor: str, target: Path) -> Path:
    """Write the part of ``source`` that computes ``embedding_tensor``, renamed ``embedding``."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(source)))
    extracted = utils.Extractor(model).extract_model(["window"], [embedding_tensor])
    extracted.graph.node.append(helper.make_node("Identity", [embedding_tensor], ["embedding"], name="embedding"))
    features = extracted.graph.output[0].type.tensor_type.shape.dim[1].dim_value or 16
    del extracted.graph.output[:]
    extracted.graph.output.append(
        helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["batch", features])
    )
    onnx.checker.check_model(extracted)
    onnx.save(extracted, str(target))
    return target


def source_head(source: Path) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The trained head of the fp32 edge model: ``weight`` ``[classes, features]`` and ``bias``."""
    initializers = {
        tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in onnx.load(str(source)).graph.initializer
    }
    return initializers[HEAD_WEIGHT].astype(np.float32), initializers[HEAD_BIAS].astype(np.float32)


def embed(backbone: Path, windows: npt.NDArray[np.float32], *, batch: int = 256) -> npt.NDArray[np.float32]:
    """Embeddings of preprocessed windows by a backbone file (ONNX Runtime, CPU)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(backbone), options, providers=["CPUExecutionProvider"])
    parts = [
        session.run(["embedding"], {"window": windows[start : start + batch]})[0]
        for start in range(0, len(windows), batch)
    ]
    return np.concatenate(parts).astype(np.float32)


def head_accuracy(
    weight: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    features: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
) -> float:
    return float(np.mean(np.argmax(features @ weight.T + bias, axis=1) == labels))


def seed_indices(labels: npt.NDArray[np.int64], per_class: int, *, seed: int) -> npt.NDArray[np.int64]:
    """``per_class`` training windows of each class, drawn with ``seed``: the hub's labelled seed set."""
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == label), size=per_class, replace=False) for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def fit_seed_head(
    features: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], classes: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """A softmax regression fitted on the seed set (scikit-learn's L2-regularized logistic regression)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=2000).fit(features, labels)
    weight = np.zeros((classes, features.shape[1]), dtype=np.float32)
    bias = np.full(classes, -10.0, dtype=np.float32)  # a class absent from the seed set is never predicted
    weight[model.classes_] = model.coef_
    bias[model.classes_] = model.intercept_
    return weight, bias


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(output_dir: Path = COMMITTED, *, seed: int = 0, source_dir: Path = COMMITTED) -> dict[str, Any]:
    """Write the federated artifacts into ``output_dir``; returns the description written beside them."""
    output_dir.mkdir(parents=True, exist_ok=True)
    data, train, test = preprocessed_plaid()
    backbone_int8 = cut_backbone(source_dir / SOURCE_INT8, EMBEDDING_INT8, output_dir / BACKBONE_INT8)
    backbone_fp32 = cut_backbone(source_dir / SOURCE_FP32, EMBEDDING_FP32, output_dir / BACKBONE_FP32)
    train_features = embed(backbone_int8, train)
    test_features = embed(backbone_int8, test)
    classes = len(data.class_names)

    trained_weight, trained_bias = source_head(source_dir / SOURCE_FP32)
    seed_set = seed_indices(data.train_labels, SEED_PER_CLASS, seed=seed)
    weight, bias = fit_seed_head(train_features[seed_set], data.train_labels[seed_set], classes)
    np.savez(output_dir / INITIAL_HEAD, weight=weight, bias=bias)

    # As the task's own int8 build found: calibrating on the windows with the 95 % smallest peaks keeps
    # min-max ranges from being stretched by a few spikes (all windows: 0.52 test accuracy; these: 0.73).
    rng = np.random.default_rng(seed)
    peaks = np.abs(train).max(axis=1)
    typical = np.sort(np.argsort(peaks)[: int(CALIBRATION_SHARE * len(train))])
    calibration = train[np.sort(rng.choice(typical, size=CALIBRATION_WINDOWS, replace=False))]
    np.save(output_dir / CALIBRATION, calibration.astype(np.float32))

    description: dict[str, Any] = {
        "task": "plaid",
        "labels": list(data.class_names),
        "features": int(train_features.shape[1]),
        "sensor": "current",
        "unit": "A",
        "input": {"name": "window", "shape": [None, 512], "preprocessing": list(PREPROCESSING)},
        "backbone_int8": {"file": BACKBONE_INT8, "sha256": file_sha256(backbone_int8), "cut_from": SOURCE_INT8},
        "backbone_fp32": {"file": BACKBONE_FP32, "sha256": file_sha256(backbone_fp32), "cut_from": SOURCE_FP32},
        "initial_head": {
            "file": INITIAL_HEAD,
            "sha256": file_sha256(output_dir / INITIAL_HEAD),
            "seed_set": f"{SEED_PER_CLASS} training windows per class, drawn with seed {seed}",
            "seed_indices": seed_set.tolist(),
        },
        "calibration": {
            "file": CALIBRATION,
            "sha256": file_sha256(output_dir / CALIBRATION),
            "windows": (
                f"{CALIBRATION_WINDOWS} preprocessed training windows drawn with seed {seed} from the "
                f"{CALIBRATION_SHARE:.0%} with the smallest peaks"
            ),
        },
        "test_accuracy": {
            "initial_head_on_int8_backbone": round(head_accuracy(weight, bias, test_features, data.test_labels), 6),
            "trained_head_on_int8_backbone": round(
                head_accuracy(trained_weight, trained_bias, test_features, data.test_labels), 6
            ),
        },
        "data": data.describe(),
        "rebuild": "python -m models.federated",
    }
    (output_dir / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
    return description


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(prog="python -m models.federated", description=__doc__)
    parser.add_argument("--output", type=Path, default=COMMITTED)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    print(json.dumps(build(arguments.output, seed=arguments.seed)["test_accuracy"], indent=2))


if __name__ == "__main__":
    main()
