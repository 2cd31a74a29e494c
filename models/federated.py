"""The federated-learning artifacts of task ``plaid``: a frozen int8 backbone that outputs embeddings, and heads.

Federated rounds on the fleet train only the classification head (a softmax regression over the backbone's
embedding), so a device needs numpy and ONNX Runtime, not torch. This module cuts the committed ``plaid``
edge models in two where their head begins and writes, under ``models/quantized/``:

- ``federated_plaid_backbone_int8.onnx``: the int8 edge model up to the input of its head, standardized for
  the fleet (minus its mean over the training split, divided by its spread there), output ``embedding``
  (what devices run to embed their labelled windows);
- ``federated_plaid_backbone_fp32.onnx``: the same cut of the fp32 edge model (what the hub joins with a new
  head and quantizes statically into the next edge model, with no torch);
- ``federated_plaid_head_initial.npz``: the first global head (``weight`` ``[classes, features]``, ``bias``),
  fitted on a small seed set of the training split (two windows per class): the model a fleet starts from
  before its own verdicts teach it more;
- ``federated_plaid_calibration.npy``: preprocessed training windows the hub calibrates int8 quantization with;
- ``federated_plaid.json``: what the files are, their sha256, the seed set, the figures measured here, the
  embedding's width (``features``), the backbone nodes the task's int8 build keeps fp32 (``keep_fp32``,
  which the hub keeps fp32 too when it quantizes the next edge model) and whether that build's head is
  int8, with how many bits of weight range (``head``: the hub quantizes the next head the same way).

The head is found in the graph, not by name: the ``Gemm`` (or ``MatMul`` then ``Add``) whose output, through
any quantize/dequantize pair, feeds the ``Softmax`` that gives the model's output. Its first input is the
embedding (in the int8 graph, the ``DequantizeLinear`` output the head reads), its weight and bias the
trained head.

The backbone was trained on the whole training split when task ``plaid`` was built, so its embeddings
already separate the classes; federated rounds adapt the head. Run ``python -m models.federated``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import helper, utils

from models.datasets import WindowDataset, load_plaid
from models.kernels import pin_kernels
from models.signals import apply_preprocessing
from protocol.manifest import FitLength, ZNormalize
from protocol.updates import EMBEDDING_STANDARDIZED_KEY

COMMITTED = Path(__file__).resolve().parent / "quantized"
# The same steps as task plaid (models/plaid.py), without importing its torch-based recipe.
PREPROCESSING = (ZNormalize().model_dump(), FitLength(length=512, pad=0.0).model_dump())
SOURCE_INT8 = "plaid_edge_int8.onnx"
SOURCE_FP32 = "plaid_edge_fp32.onnx"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
CENTRE = "federated.embedding.centre"
CENTRE_NODE = "/federated/centre/Sub"
SPREAD = "federated.embedding.spread"
SPREAD_NODE = "/federated/spread/Div"
SPREAD_FLOOR = 0.3
"""A feature's spread is at least this share of the root mean square spread (a nearly flat feature is not blown up)."""
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
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


@dataclass(frozen=True)
class Head:
    """Where a classifier graph's head is: the tensor it reads (the embedding) and its parameters' sources."""

    embedding: str
    """The head's input: in an int8 graph, the ``DequantizeLinear`` output the head reads."""
    weight: str
    """The weight tensor (an initializer, or the output of a ``DequantizeLinear`` of one)."""
    bias: str | None
    transposed: bool
    """True when the weight is stored ``[features, classes]`` (``MatMul``; ``Gemm`` without ``transB``)."""
    alpha: float = 1.0
    beta: float = 1.0


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in graph.node for output in node.output}


def _through_qdq(tensor: str, producers: dict[str, onnx.NodeProto]) -> str:
    """The tensor a chain of QuantizeLinear/DequantizeLinear/Identity nodes ending in ``tensor`` starts from."""
    while tensor in producers and producers[tensor].op_type in (*QDQ_OPS, "Identity"):
        tensor = producers[tensor].input[0]
    return tensor


def find_head(model: onnx.ModelProto) -> Head:
    """The head of a classifier graph: the Gemm (or MatMul + Add) whose output the final Softmax takes."""
    graph = model.graph
    producers = _producers(graph)
    if len(graph.output) != 1:
        raise ValueError(f"expected one graph output, found {[output.name for output in graph.output]}")
    softmax = producers.get(_through_qdq(graph.output[0].name, producers))
    if softmax is None or softmax.op_type != "Softmax":
        raise ValueError(f"the graph's output {graph.output[0].name} does not come from a Softmax")
    scores = producers.get(_through_qdq(softmax.input[0], producers))
    if scores is not None and scores.op_type == "Gemm":
        attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in scores.attribute}
        if attributes.get("transA", 0):
            raise ValueError(f"head {scores.name} transposes its input (transA), which no embedding does")
        return Head(
            embedding=scores.input[0],
            weight=scores.input[1],
            bias=scores.input[2] if len(scores.input) > 2 and scores.input[2] else None,
            transposed=not attributes.get("transB", 0),
            alpha=float(attributes.get("alpha", 1.0)),
            beta=float(attributes.get("beta", 1.0)),
        )
    if scores is not None and scores.op_type == "Add":
        for product_input, bias in (scores.input, reversed(scores.input)):
            product = producers.get(_through_qdq(product_input, producers))
            if product is not None and product.op_type == "MatMul":
                return Head(embedding=product.input[0], weight=product.input[1], bias=bias, transposed=True)
    raise ValueError("the Softmax's input comes from neither a Gemm nor a MatMul followed by an Add")


def _constant(model: onnx.ModelProto, tensor: str) -> npt.NDArray[np.float32]:
    """An initializer's value, or the value a DequantizeLinear of initializers gives."""
    initializers = {item.name: item for item in model.graph.initializer}
    if tensor in initializers:
        return onnx.numpy_helper.to_array(initializers[tensor]).astype(np.float32)
    node = _producers(model.graph).get(tensor)
    if node is None or node.op_type != "DequantizeLinear" or any(name not in initializers for name in node.input):
        raise ValueError(f"{tensor} is neither an initializer nor the dequantization of one")
    values, scale, *zero = (onnx.numpy_helper.to_array(initializers[name]) for name in node.input)
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * values.ndim
    if scale.ndim == 1 and scale.size > 1:
        shape[axis] = scale.size
    offset = zero[0].astype(np.float32).reshape(shape) if zero else np.float32(0.0)
    return ((values.astype(np.float32) - offset) * scale.astype(np.float32).reshape(shape)).astype(np.float32)


def head_parameters(model: onnx.ModelProto, head: Head) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The head's ``weight`` ``[classes, features]`` and ``bias`` ``[classes]`` (Gemm's alpha and beta folded in)."""
    weight = _constant(model, head.weight)
    weight = (weight.T if head.transposed else weight) * np.float32(head.alpha)
    bias = (
        np.zeros(weight.shape[0], dtype=np.float32)
        if head.bias is None
        else np.broadcast_to(_constant(model, head.bias) * np.float32(head.beta), (weight.shape[0],))
    )
    return np.ascontiguousarray(weight, dtype=np.float32), np.ascontiguousarray(bias, dtype=np.float32)


def head_weight_bits(model: onnx.ModelProto) -> int | None:
    """The range of the head's int8 weights in an int8 graph: 7 (-64…64, ONNX Runtime's ``reduce_range``) or 8;
    ``None`` when the head reads fp32 weights.

    ONNX Runtime quantizes weights symmetrically per channel, so each channel's largest weight lands on the
    end of the range: 64 with ``reduce_range``, 127 without.
    """
    head = find_head(model)
    initializers = {item.name: item for item in model.graph.initializer}
    node = _producers(model.graph).get(head.weight)
    if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in initializers:
        return None
    values = onnx.numpy_helper.to_array(initializers[node.input[0]])
    if values.dtype != np.int8:
        raise ValueError(f"the head's weights are {values.dtype}, not int8")
    return 7 if int(np.abs(values.astype(np.int16)).max()) <= 64 else 8


def cut_backbone(
    source: Path,
    target: Path,
    standardize: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None = None,
) -> tuple[Path, str, int]:
    """Write the part of ``source`` that computes its head's input, as output ``embedding``.

    With ``standardize`` = ``(centre, spread)``, the embedding is that input minus ``centre`` (an fp32 ``Sub``,
    node :data:`CENTRE_NODE`), divided by ``spread`` (an fp32 ``Div``, node :data:`SPREAD_NODE`), and the
    model says so in its metadata (:data:`EMBEDDING_STANDARDIZED_KEY`). Returns the file, the tensor cut at
    and the embedding's width.
    """
    model = onnx.shape_inference.infer_shapes(onnx.load(str(source)))
    embedding_tensor = find_head(model).embedding
    extracted = utils.Extractor(model).extract_model(["window"], [embedding_tensor])
    if standardize is None:
        extracted.graph.node.append(helper.make_node("Identity", [embedding_tensor], ["embedding"], name="embedding"))
    else:
        centre, spread = standardize
        centred = "federated.embedding.centred"
        extracted.graph.initializer.append(onnx.numpy_helper.from_array(centre.astype(np.float32), CENTRE))
        extracted.graph.initializer.append(onnx.numpy_helper.from_array(spread.astype(np.float32), SPREAD))
        extracted.graph.node.append(helper.make_node("Sub", [embedding_tensor, CENTRE], [centred], name=CENTRE_NODE))
        extracted.graph.node.append(helper.make_node("Div", [centred, SPREAD], ["embedding"], name=SPREAD_NODE))
        onnx.helper.set_model_props(extracted, {EMBEDDING_STANDARDIZED_KEY: "true"})
    features = extracted.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    if not features:  # shape inference left the width open: run the cut once to read it
        session = ort.InferenceSession(extracted.SerializeToString(), providers=["CPUExecutionProvider"])
        width = session.get_inputs()[0].shape[-1]
        features = int(session.run([embedding_tensor], {"window": np.zeros((1, width), np.float32)})[0].shape[-1])
    del extracted.graph.output[:]
    extracted.graph.output.append(
        helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["batch", features])
    )
    onnx.checker.check_model(extracted)
    onnx.save(extracted, str(target))
    return target, embedding_tensor, int(features)


def standardization(features: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``(centre, spread)`` per feature over the training split, the spread floored (:data:`SPREAD_FLOOR`)."""
    centre = features.mean(axis=0, dtype=np.float64)
    spread = features.std(axis=0, dtype=np.float64)
    floor = SPREAD_FLOOR * float(np.sqrt(np.mean(spread**2)))
    spread = np.maximum(spread, floor) if floor > 0 else np.ones_like(spread)
    return centre.astype(np.float32), spread.astype(np.float32)


def source_head(source: Path) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The trained head of the fp32 edge model: ``weight`` ``[classes, features]`` and ``bias``."""
    model = onnx.load(str(source))
    return head_parameters(model, find_head(model))


def kept_fp32(source_int8: Path) -> list[str]:
    """The backbone nodes (those its head's input depends on) the int8 edge model keeps fp32, by name.

    A node runs in fp32 when it reads no int8 tensor (no ``DequantizeLinear`` output), or when it reads its
    weights (input 1 of a Conv, ConvTranspose, Gemm or MatMul) as an fp32 initializer. That tells apart
    every node before the graph's first int8 tensor (a first convolution, a whole front end) and every
    weighted node; a weightless node kept fp32 after an int8 one reads int8 tensors as a quantized one
    does, and is not told apart. The names are those of ONNX Runtime's quantization pre-processing, as the
    hub's quantization of the same backbone sees them.
    """
    model = onnx.load(str(source_int8))
    producers = _producers(model.graph)
    float_initializers = {item.name for item in model.graph.initializer if item.data_type == onnx.TensorProto.FLOAT}
    pending, backbone = [find_head(model).embedding], {}
    while pending:
        node = producers.get(pending.pop())
        if node is not None and node.name not in backbone:
            backbone[node.name] = node
            pending.extend(node.input)

    def runs_fp32(node: onnx.NodeProto) -> bool:
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in float_initializers:
            return True
        return not any(name in producers and producers[name].op_type == "DequantizeLinear" for name in node.input)

    return sorted(
        node.name for node in backbone.values() if node.op_type not in (*QDQ_OPS, "Constant") and runs_fp32(node)
    )


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
    # Both backbones standardize the embedding for the whole fleet: minus the mean int8 embedding of the
    # training split, divided by its spread there. A head over centred features keeps ``weight @ x`` and
    # ``bias`` from cancelling large offsets, which robust aggregation would take apart; one scale for every
    # device lets devices train without rescaling by their own spreads (docs/federated.md). The model is the
    # same: the head's weight takes ``× spread`` and its bias ``weight @ centre``.
    backbone_int8, cut_int8, features = cut_backbone(source_dir / SOURCE_INT8, output_dir / BACKBONE_INT8)
    centre, spread = standardization(embed(backbone_int8, train))
    backbone_int8, cut_int8, features = cut_backbone(
        source_dir / SOURCE_INT8, output_dir / BACKBONE_INT8, (centre, spread)
    )
    backbone_fp32, cut_fp32, features_fp32 = cut_backbone(
        source_dir / SOURCE_FP32, output_dir / BACKBONE_FP32, (centre, spread)
    )
    if features != features_fp32:
        raise ValueError(f"the int8 backbone gives {features} features, the fp32 one {features_fp32}")
    train_features = embed(backbone_int8, train)
    test_features = embed(backbone_int8, test)
    classes = len(data.class_names)

    trained_weight, trained_bias = source_head(source_dir / SOURCE_FP32)
    trained_bias = trained_bias + trained_weight @ centre
    trained_weight = trained_weight * spread
    seed_set = seed_indices(data.train_labels, SEED_PER_CLASS, seed=seed)
    weight, bias = fit_seed_head(train_features[seed_set], data.train_labels[seed_set], classes)
    np.savez(output_dir / INITIAL_HEAD, weight=weight, bias=bias)

    # Calibrating on the windows with the 95 % smallest peaks keeps min-max ranges from being stretched by a
    # few spikes (measured on the convolutional backbone plaid had before: all windows 0.52, these 0.73).
    rng = np.random.default_rng(seed)
    peaks = np.abs(train).max(axis=1)
    typical = np.sort(np.argsort(peaks)[: int(CALIBRATION_SHARE * len(train))])
    calibration = train[np.sort(rng.choice(typical, size=CALIBRATION_WINDOWS, replace=False))]
    np.save(output_dir / CALIBRATION, calibration.astype(np.float32))

    fp32_nodes = [*kept_fp32(source_dir / SOURCE_INT8), CENTRE_NODE, SPREAD_NODE]
    op_types = {node.name: node.op_type for node in onnx.load(str(backbone_int8)).graph.node}
    description: dict[str, Any] = {
        "task": "plaid",
        "labels": list(data.class_names),
        "features": features,
        "sensor": "current",
        "unit": "A",
        "input": {"name": "window", "shape": [None, 512], "preprocessing": list(PREPROCESSING)},
        "backbone_int8": {
            "file": BACKBONE_INT8,
            "sha256": file_sha256(backbone_int8),
            "cut_from": SOURCE_INT8,
            "cut_at": cut_int8,
        },
        "backbone_fp32": {
            "file": BACKBONE_FP32,
            "sha256": file_sha256(backbone_fp32),
            "cut_from": SOURCE_FP32,
            "cut_at": cut_fp32,
        },
        "standardization": (
            f"both backbones output their head's input minus the mean int8 embedding of the training split "
            f"(initializer {CENTRE}, node {CENTRE_NODE}), divided by its spread there, floored at "
            f"{SPREAD_FLOOR} × the root mean square spread (initializer {SPREAD}, node {SPREAD_NODE}); their "
            f"metadata {EMBEDDING_STANDARDIZED_KEY} = true tells devices to train on it as it is"
        ),
        "keep_fp32": {
            "nodes": fp32_nodes,
            "op_types": dict(sorted(Counter(op_types[name] for name in fp32_nodes).items())),
            "read_from": SOURCE_INT8,
            "meaning": (
                "the backbone nodes the task's int8 build keeps fp32 (nodes: by name; op_types: how many of "
                "each); the hub keeps them fp32 when it quantizes the next edge model"
            ),
        },
        "head": _head_description(onnx.load(str(source_dir / SOURCE_INT8))),
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


def _head_description(model: onnx.ModelProto) -> dict[str, Any]:
    bits = head_weight_bits(model)
    return {
        "int8": bits is not None,
        **({"weight_bits": bits} if bits is not None else {}),
        "read_from": SOURCE_INT8,
        "meaning": (
            "whether the task's int8 build quantizes its head, and to how many bits of weight range (7: "
            "-64…64); the hub quantizes the next edge model's head the same way"
        ),
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(prog="python -m models.federated", description=__doc__)
    parser.add_argument("--output", type=Path, default=COMMITTED)
    parser.add_argument(
        "--source", type=Path, default=COMMITTED, help=f"the directory of {SOURCE_INT8} and {SOURCE_FP32}"
    )
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    description = build(arguments.output, seed=arguments.seed, source_dir=arguments.source)
    print(json.dumps({"features": description["features"], **description["test_accuracy"]}, indent=2))


if __name__ == "__main__":
    pin_kernels()
    main()
