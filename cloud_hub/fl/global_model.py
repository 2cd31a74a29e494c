"""The next edge model of a federated run: the frozen backbone joined with the new head, int8, signed.

No torch: the fp32 backbone graph (input ``window``, output ``embedding``) gets the head appended as ONNX
nodes (``Gemm`` with the head's weight and bias, then ``Softmax`` to ``probabilities``), then ONNX
Runtime's static quantization makes it int8 (QDQ, per-channel int8 weights, min-max calibration over
windows the hub holds). What the task's own int8 edge model keeps fp32 in the backbone stays fp32 here
too (``ModelDescription.keep_fp32``, node names read from the task's federated description: a
convolutional backbone's first convolution, say, or a whole front end of convolutions and comparisons
whose int8 outputs would cross their thresholds), and so does the Softmax. The head's Gemm is int8 where
the task's int8 model has an int8 head (``ModelDescription.head_weight_bits``, with the same weight range),
so that a backbone kept fp32 throughout (a MiniRocket-style front end) still gives an int8 model; a
description that does not say so keeps the head fp32, exactly as the fleet trained it.
The artifact goes out with a protocol manifest signed with the fleet's model-signing key.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_hub.fl.errors import ModelBuildError
from protocol.manifest import FitLength, InputSpec, ModelManifest, OutputSpec, Quantization, ZNormalize
from protocol.messages import SensorKind
from protocol.signing import sign

FloatArray = npt.NDArray[np.float32]
HEAD_NODES = ("/head/Gemm", "/Softmax")
"""The nodes :func:`head_graph` appends; always kept fp32."""


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """What the manifest says of the federated model besides its files."""

    name: str
    version: str
    task: str
    labels: list[str]
    window_size: int
    sensor: SensorKind
    unit: str
    data: str
    metrics: dict[str, float]
    rebuild: str = "edgefleet fl start (the run's final head, joined with the frozen backbone)"
    keep_fp32: tuple[str, ...] | None = None
    """The backbone nodes kept fp32 when the model is quantized, by name; ``None`` (a description written
    before it said so): the first convolution, as the task's convolutional edge models keep it."""
    head_weight_bits: int | None = None
    """The range of the head's int8 weights in the task's int8 model: 8, or 7 (ONNX Runtime's
    ``reduce_range``, -64…64, which then applies to every int8 weight of the model); ``None``: the head
    stays fp32."""


def head_graph(backbone_fp32: Path, weight: FloatArray, bias: FloatArray, target: Path) -> Path:
    """Write the fp32 model: ``backbone → Gemm(weight, bias) → Softmax → probabilities``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(backbone_fp32))
    outputs = [output.name for output in model.graph.output]
    if outputs != ["embedding"]:
        raise ModelBuildError(f"the backbone {backbone_fp32} outputs {outputs}, not ['embedding']")
    features = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    if weight.ndim != 2 or weight.shape[1] != features or bias.shape != (weight.shape[0],):
        raise ModelBuildError(f"a head of shape {weight.shape} / {bias.shape} does not fit {features} features")
    graph = model.graph
    graph.initializer.extend(
        [
            numpy_helper.from_array(weight.astype(np.float32), "federated.head.weight"),
            numpy_helper.from_array(bias.astype(np.float32), "federated.head.bias"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node(
                "Gemm",
                ["embedding", "federated.head.weight", "federated.head.bias"],
                ["logits"],
                name=HEAD_NODES[0],
                transB=1,
            ),
            helper.make_node("Softmax", ["logits"], ["probabilities"], name=HEAD_NODES[1], axis=1),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", weight.shape[0]]))
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return target


class _Windows:
    """ONNX Runtime calibration reader over preprocessed windows, in batches of 64."""

    def __init__(self, windows: FloatArray) -> None:
        self._batches: Iterator[FloatArray] = iter(
            [np.ascontiguousarray(windows[i : i + 64], dtype=np.float32) for i in range(0, len(windows), 64)]
        )

    def get_next(self) -> dict[str, FloatArray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"window": batch}


def excluded_nodes(
    nodes: list[tuple[str, str]], keep_fp32: tuple[str, ...] | None, *, quantize_head: bool = False
) -> list[str]:
    """The names, among ``(name, op type)`` of a graph ready to quantize, of the nodes to keep fp32.

    Those ``keep_fp32`` names (with ``None``, the first convolution), the Softmax and, unless
    ``quantize_head``, the head's Gemm. A name the graph lacks is an error: the node would be quantized
    where the task's own int8 model keeps it fp32.
    """
    if keep_fp32 is None:
        keep_fp32 = tuple(name for name, op_type in nodes if op_type == "Conv")[:1]
    missing = sorted(set(keep_fp32) - {name for name, _ in nodes})
    if missing:
        raise ModelBuildError(f"the backbone lacks nodes its description keeps fp32: {', '.join(missing)}")
    head = HEAD_NODES[1:] if quantize_head else HEAD_NODES
    return [name for name, _ in nodes if name in keep_fp32 or name in head]


def quantize(
    fp32_path: Path,
    int8_path: Path,
    calibration: FloatArray,
    keep_fp32: tuple[str, ...] | None = None,
    head_weight_bits: int | None = None,
) -> dict[str, int]:
    """Static QDQ int8 quantization; returns how many nodes of each op type stayed fp32 (see :func:`excluded_nodes`).

    ``head_weight_bits`` (see :attr:`ModelDescription.head_weight_bits`): ``None`` keeps the head fp32.
    """
    if head_weight_bits not in (None, 7, 8):
        raise ModelBuildError(f"int8 weights have 7 or 8 bits, not {head_weight_bits}")
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration.ndim != 2 or len(calibration) == 0:
        raise ModelBuildError(f"calibration windows are [n, samples], not {calibration.shape}")
    with tempfile.TemporaryDirectory(prefix="edgefleet-fl-quantize-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        nodes = [(node.name, node.op_type) for node in onnx.load(str(prepared)).graph.node]
        excluded = excluded_nodes(nodes, keep_fp32, quantize_head=head_weight_bits is not None)
        quantize_static(
            prepared,
            int8_path,
            _Windows(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
            reduce_range=head_weight_bits == 7,
        )
    onnx.checker.check_model(str(int8_path))
    kept = set(excluded)
    return dict(sorted(Counter(op_type for name, op_type in nodes if name in kept).items()))


def count_parameters(path: Path) -> int:
    import onnx
    from onnx import numpy_helper

    return int(
        sum(
            numpy_helper.to_array(tensor).size
            for tensor in onnx.load(str(path)).graph.initializer
            if tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT8)
            and not tensor.name.endswith(("_scale", "_zero_point"))
        )
    )


@dataclass(frozen=True, slots=True)
class BuiltModel:
    artifact: Path
    manifest_path: Path
    manifest: ModelManifest


def build_global_model(
    *,
    backbone_fp32: Path,
    weight: FloatArray,
    bias: FloatArray,
    calibration: FloatArray,
    description: ModelDescription,
    output_dir: Path,
    signing_key: Ed25519PrivateKey | None,
) -> BuiltModel:
    """Join, quantize, describe and (with a key) sign the next edge model; files land in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    artifact = output_dir / f"{description.name}.onnx"
    try:
        with tempfile.TemporaryDirectory(prefix="edgefleet-fl-model-") as scratch:
            fp32 = head_graph(backbone_fp32, weight, bias, Path(scratch) / "fp32.onnx")
            kept = quantize(fp32, artifact, calibration, description.keep_fp32, description.head_weight_bits)
    except ModelBuildError:
        raise
    except Exception as exc:  # onnx and onnxruntime raise their own types; the caller gets one
        raise ModelBuildError(f"cannot build model {description.name} {description.version}: {exc}") from exc
    data = artifact.read_bytes()
    manifest = ModelManifest(
        name=description.name,
        version=description.version,
        task=description.task,
        role="edge",
        artifact=artifact.name,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        input=InputSpec(
            name="window",
            shape=[None, description.window_size],
            sensor=description.sensor,
            unit=description.unit,
            window_size=description.window_size,
            hop=description.window_size,
            preprocessing=[ZNormalize(), FitLength(length=description.window_size)],
        ),
        output=OutputSpec(probabilities="probabilities", labels=description.labels),
        quantization=Quantization(
            scheme="qdq-int8-static",
            per_channel=True,
            calibration=(
                f"MinMax over {len(calibration)} windows held by the hub; kept fp32 ({sum(kept.values())} nodes): "
                + ", ".join(f"{op_type} ×{count}" for op_type, count in kept.items())
            ),
        ),
        parameters=count_parameters(artifact),
        metrics=description.metrics,
        distilled_from=None,
        data=description.data,
        rebuild=description.rebuild,
    )
    if signing_key is not None:
        manifest = sign(manifest, signing_key)
    manifest_path = output_dir / f"{description.name}.manifest.json"
    manifest_path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return BuiltModel(artifact=artifact, manifest_path=manifest_path, manifest=manifest)


def model_accuracy(artifact: Path, windows: FloatArray, labels: npt.NDArray[np.int64]) -> float:
    """Accuracy of an edge model file on preprocessed windows (ONNX Runtime)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
    probabilities = np.concatenate(
        [session.run(["probabilities"], {"window": windows[i : i + 256]})[0] for i in range(0, len(windows), 256)]
    )
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))
