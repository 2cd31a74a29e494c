"""The committed federated artifacts are the ones their description names, and reproduce its figures."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from cloud_hub.fl.evaluation import embed
from tests.unit.fl.conftest import BACKBONE_FP32, BACKBONE_INT8, COMMITTED, DESCRIPTION, synthetic_windows


def test_the_files_match_their_description() -> None:
    description = json.loads(DESCRIPTION.read_text())
    for part in ("backbone_int8", "backbone_fp32", "initial_head", "calibration"):
        entry = description[part]
        assert hashlib.sha256((COMMITTED / entry["file"]).read_bytes()).hexdigest() == entry["sha256"], part
    with np.load(COMMITTED / description["initial_head"]["file"]) as head:
        assert head["weight"].shape == (len(description["labels"]), description["features"])
    assert np.load(COMMITTED / description["calibration"]["file"]).shape[1:] == (512,)


def test_the_starting_head_scores_what_the_description_says() -> None:
    pytest.importorskip("sktime", reason="PLAID comes with sktime (the sim or train extra)")
    from models.federated import preprocessed_plaid

    data, _, test = preprocessed_plaid()
    description = json.loads(DESCRIPTION.read_text())
    with np.load(COMMITTED / description["initial_head"]["file"]) as head:
        logits = embed(BACKBONE_INT8, test) @ head["weight"].T + head["bias"]
    accuracy = float(np.mean(np.argmax(logits, axis=1) == data.test_labels))
    assert accuracy == pytest.approx(description["test_accuracy"]["initial_head_on_int8_backbone"], abs=1e-6)


def test_the_backbones_compute_the_committed_edge_models_head_input() -> None:
    """After a new plaid edge model, ``python -m models.federated`` must run again: this test says so."""
    import onnx
    import onnxruntime as ort

    from edge_agent.fl.embedding import OnnxEmbedder
    from models.federated import (
        CENTRE,
        CENTRE_NODE,
        SOURCE_FP32,
        SOURCE_INT8,
        SPREAD,
        SPREAD_NODE,
        find_head,
        kept_fp32,
    )

    description = json.loads(DESCRIPTION.read_text())
    windows = synthetic_windows(np.arange(22, dtype=np.int64) % 11, seed=5)
    for source, backbone in ((SOURCE_INT8, BACKBONE_INT8), (SOURCE_FP32, BACKBONE_FP32)):
        model = onnx.load(str(COMMITTED / source))
        head_input = find_head(model).embedding
        model.graph.output.append(onnx.helper.make_tensor_value_info(head_input, onnx.TensorProto.FLOAT, None))
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        expected = session.run([head_input], {"window": windows})[0]
        initializers = {item.name: item for item in onnx.load(str(backbone)).graph.initializer}
        centre = onnx.numpy_helper.to_array(initializers[CENTRE])
        spread = onnx.numpy_helper.to_array(initializers[SPREAD])
        assert expected.shape[1] == description["features"], f"{backbone.name} is not cut from this {source}"
        np.testing.assert_allclose(embed(backbone, windows), (expected - centre) / spread, rtol=1e-5, atol=1e-5)
        assert OnnxEmbedder(backbone).standardized  # devices train on the fleet's standardization as it is
    assert description["keep_fp32"]["nodes"] == [*kept_fp32(COMMITTED / SOURCE_INT8), CENTRE_NODE, SPREAD_NODE]


def test_the_head_is_found_whatever_its_form() -> None:
    """Gemm with or without transB, or MatMul then Add, behind a quantize/dequantize pair: one head."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from models.federated import find_head, head_parameters

    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    heads = {
        "gemm": ([helper.make_node("Gemm", ["h", "w", "b"], ["s"], transB=1)], weight),
        "gemm-alpha": ([helper.make_node("Gemm", ["h", "w", "b"], ["s"], alpha=0.5, beta=1.0)], 2 * weight.T),
        "matmul-add": (
            [helper.make_node("MatMul", ["h", "w"], ["p"]), helper.make_node("Add", ["b", "p"], ["s"])],
            weight.T,
        ),
    }
    for form, (nodes, stored) in heads.items():
        qdq = [
            helper.make_node("QuantizeLinear", ["s", "scale", "zero"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["d"]),
            helper.make_node("Softmax", ["d"], ["probabilities"], axis=1),
        ]
        graph = helper.make_graph(
            [helper.make_node("Relu", ["window"], ["h"]), *nodes, *qdq],
            form,
            [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", 5])],
            [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
            [
                numpy_helper.from_array(stored, "w"),
                numpy_helper.from_array(bias, "b"),
                numpy_helper.from_array(np.float32(0.05), "scale"),
                numpy_helper.from_array(np.int8(0), "zero"),
            ],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(model)
        head = find_head(model)
        assert head.embedding == "h", form
        found_weight, found_bias = head_parameters(model, head)
        np.testing.assert_allclose(found_weight, weight, rtol=1e-6, err_msg=form)
        np.testing.assert_allclose(found_bias, bias, rtol=1e-6, err_msg=form)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        scores = np.maximum(x, 0) @ found_weight.T + found_bias
        expected = np.exp(scores - scores.max(axis=1, keepdims=True))
        expected /= expected.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(session.run(["probabilities"], {"window": x})[0], expected, atol=0.05)
