from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_hub.fl.errors import ModelBuildError, SettingsError
from cloud_hub.fl.evaluation import embed, read_task_description
from cloud_hub.fl.global_model import HEAD_NODES, build_global_model, excluded_nodes, model_accuracy
from cloud_hub.fl.registry import (
    DirectoryModelRegistry,
    HubApiModelRegistry,
    InMemoryModelRegistry,
    publish_global_model,
)
from protocol.signing import public_key_of, verify
from tests.unit.fl.conftest import (
    BACKBONE_FP32,
    BACKBONE_INT8,
    CALIBRATION,
    DESCRIPTION,
    INITIAL_HEAD,
    synthetic_windows,
)


def test_the_next_model_is_the_backbone_and_head_in_int8_signed(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    description = dataclasses.replace(read_task_description(DESCRIPTION), version="fl-1-3")
    with np.load(INITIAL_HEAD) as head:
        weight, bias = head["weight"], head["bias"]
    built = build_global_model(
        backbone_fp32=BACKBONE_FP32,
        weight=weight,
        bias=bias,
        calibration=np.load(CALIBRATION),
        description=description,
        output_dir=tmp_path,
        signing_key=key,
    )
    verify(built.manifest, [public_key_of(key)])
    assert built.manifest.quantization.scheme == "qdq-int8-static"
    assert built.manifest.input.window_size == 512 and built.manifest.output.labels == [str(i) for i in range(11)]
    graph = onnx.load(str(built.artifact)).graph
    assert {"QuantizeLinear", "DequantizeLinear", "Gemm", "Softmax"} <= {node.op_type for node in graph.node}
    # What the task's int8 edge model keeps fp32 stays fp32 (reads no int8 tensor, or its own parameters in
    # fp32), the rest is int8, and the head is the fleet's, int8 as the task's own head is.
    dequantized = {output for node in graph.node if node.op_type == "DequantizeLinear" for output in node.output}
    fp32_parameters = {item.name for item in graph.initializer if item.data_type == onnx.TensorProto.FLOAT}
    nodes = {node.name: node for node in graph.node}
    backbone_convs = [node.name for node in onnx.load(str(BACKBONE_FP32)).graph.node if node.op_type == "Conv"]
    kept = description.keep_fp32 if description.keep_fp32 is not None else backbone_convs[:1]
    assert kept
    for name in kept:
        inputs = nodes[name].input
        assert not any(i in dequantized for i in inputs) or any(i in fp32_parameters for i in inputs), name
    assert any(name in dequantized for node in graph.node for name in node.input)
    assert description.head_weight_bits == 7  # plaid's MiniRocket-style head, as its build quantizes it
    gemm = nodes[HEAD_NODES[0]]
    assert gemm.input[0] in dequantized and gemm.input[1] in dequantized
    dequantize = next(node for node in graph.node if gemm.input[1] in node.output)
    initializers = {item.name: onnx.numpy_helper.to_array(item) for item in graph.initializer}
    integers, scale = initializers[dequantize.input[0]], initializers[dequantize.input[1]]
    assert integers.dtype == np.int8 and np.abs(integers.astype(np.int16)).max() == 64
    assert np.allclose(integers * scale[:, None], weight, atol=float(scale.max()) / 2 + 1e-7)
    assert list(nodes[HEAD_NODES[1]].output) == [graph.output[0].name]  # fp32 probabilities, as the task's

    # The model decides as the devices' int8 backbone with the same head does, on almost every window.
    labels = np.arange(200, dtype=np.int64) % 11
    windows = synthetic_windows(labels, seed=3)
    expected = np.argmax(embed(BACKBONE_INT8, windows) @ weight.T + bias, axis=1)
    assert model_accuracy(built.artifact, windows, expected) >= 0.9

    registry = InMemoryModelRegistry()
    registration = publish_global_model(built, registry)
    assert registration.sha256 == built.manifest.sha256
    with pytest.raises(ModelBuildError, match="already"):
        publish_global_model(built, registry)
    on_disk = publish_global_model(built, DirectoryModelRegistry(tmp_path / "registry"))
    assert (Path(on_disk.location) / built.manifest.artifact).read_bytes() == built.artifact.read_bytes()


def test_the_nodes_kept_fp32_are_the_descriptions_and_the_heads() -> None:
    nodes = [
        ("/a/Conv", "Conv"),
        ("/b/Conv", "Conv"),
        ("/b/Relu", "Relu"),
        ("/head/Gemm", "Gemm"),
        ("/Softmax", "Softmax"),
    ]
    assert excluded_nodes(nodes, ("/b/Conv", "/b/Relu")) == ["/b/Conv", "/b/Relu", "/head/Gemm", "/Softmax"]
    assert excluded_nodes(nodes, None) == ["/a/Conv", "/head/Gemm", "/Softmax"]  # older descriptions: the first Conv
    assert excluded_nodes(nodes, ()) == ["/head/Gemm", "/Softmax"]
    assert excluded_nodes(nodes, ("/b/Conv",), quantize_head=True) == ["/b/Conv", "/Softmax"]
    with pytest.raises(ModelBuildError, match="/c/Conv"):
        excluded_nodes(nodes, ("/c/Conv",))


def test_the_task_description_says_what_stays_fp32(tmp_path: Path) -> None:
    data = json.loads(DESCRIPTION.read_text())
    data["keep_fp32"] = {"nodes": ["/x/Conv", "/x/Cast"]}
    path = tmp_path / "with.json"
    path.write_text(json.dumps(data))
    assert read_task_description(path).keep_fp32 == ("/x/Conv", "/x/Cast")
    assert read_task_description(path).head_weight_bits == 7
    data["head"] = {"int8": False}
    path.write_text(json.dumps(data))
    assert read_task_description(path).head_weight_bits is None
    data["head"] = {"int8": True, "weight_bits": 4}
    path.write_text(json.dumps(data))
    with pytest.raises(SettingsError, match="weight_bits"):
        read_task_description(path)
    data.pop("head")
    data.pop("keep_fp32")
    path.write_text(json.dumps(data))
    assert read_task_description(path).keep_fp32 is None
    data["keep_fp32"] = {"nodes": "/x/Conv"}
    path.write_text(json.dumps(data))
    with pytest.raises(SettingsError, match="node names"):
        read_task_description(path)


def test_an_unsigned_model_is_not_published_and_a_wrong_head_not_built(tmp_path: Path) -> None:
    description = dataclasses.replace(read_task_description(DESCRIPTION), version="x")
    with np.load(INITIAL_HEAD) as head:
        weight, bias = head["weight"], head["bias"]
    calibration = np.load(CALIBRATION)[:16]
    built = build_global_model(
        backbone_fp32=BACKBONE_FP32,
        weight=weight,
        bias=bias,
        calibration=calibration,
        description=description,
        output_dir=tmp_path,
        signing_key=None,
    )
    with pytest.raises(ModelBuildError, match="not signed"):
        publish_global_model(built, InMemoryModelRegistry())
    with pytest.raises(ModelBuildError, match="does not fit"):
        build_global_model(
            backbone_fp32=BACKBONE_FP32,
            weight=weight[:, :8],
            bias=bias,
            calibration=calibration,
            description=description,
            output_dir=tmp_path,
            signing_key=None,
        )


def test_the_hub_api_registry_uploads_the_signed_model(tmp_path: Path) -> None:
    import base64

    import httpx

    key = Ed25519PrivateKey.generate()
    description = dataclasses.replace(read_task_description(DESCRIPTION), version="fl-7-9")
    with np.load(INITIAL_HEAD) as head:
        built = build_global_model(
            backbone_fp32=BACKBONE_FP32,
            weight=head["weight"],
            bias=head["bias"],
            calibration=np.load(CALIBRATION)[:16],
            description=description,
            output_dir=tmp_path,
            signing_key=key,
        )
    received: list[httpx.Request] = []

    def hub(request: httpx.Request) -> httpx.Response:
        received.append(request)
        body = json.loads(request.content)
        if body["manifest"]["version"] == "refused":
            return httpx.Response(422, json={"detail": "not signed by a trusted key"})
        return httpx.Response(201, json={"name": body["manifest"]["name"]})

    registry = HubApiModelRegistry("http://hub.test/", "tok", client=httpx.Client(transport=httpx.MockTransport(hub)))
    registration = registry.register(built.artifact, built.manifest)
    (request,) = received
    assert request.url == "http://hub.test/api/v1/models" and request.headers["Authorization"] == "Bearer tok"
    body = json.loads(request.content)
    assert base64.b64decode(body["artifact_base64"]) == built.artifact.read_bytes()
    assert body["manifest"]["signature"] == built.manifest.signature
    assert registration.location.endswith("/federated_plaid_edge_int8/fl-7-9")
    refused = built.manifest.model_copy(update={"version": "refused"})
    with pytest.raises(ModelBuildError, match=r"422 .*trusted key"):
        registry.register(built.artifact, refused)
