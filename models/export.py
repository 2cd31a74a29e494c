"""ONNX export, static int8 quantization and manifests: the steps every model task ends with."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from protocol.manifest import ModelManifest

OPSET = 17


def export_onnx(
    model: nn.Module,
    path: Path,
    *,
    window_size: int,
    input_name: str = "window",
    output_names: Sequence[str] = ("probabilities", "anomaly_score"),
    channels: int | None = None,
) -> Path:
    """Export a window model with the legacy TorchScript exporter, batch dimension dynamic.

    The input is ``[batch, window_size]``, or ``[batch, channels, window_size]`` when ``channels`` is given.

    The legacy exporter, not the dynamo one: its graphs quantize better (GlobalAveragePool stays
    quantizable) and it writes one self-contained file with a dynamic batch.
    """
    model = model.eval()
    shape = (1, window_size) if channels is None else (1, channels, window_size)
    example = torch.zeros(*shape, dtype=torch.float32)
    dynamic_axes = {name: {0: "batch"} for name in (input_name, *output_names)}
    with warnings.catch_warnings():
        # torch 2.13 deprecates the legacy exporter, on purpose chosen here; silence exactly its notices.
        warnings.filterwarnings(
            "ignore", message="You are using the legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(path))
    return path


class _WindowBatches(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type hints
    """Feeds calibration windows to ONNX Runtime's calibrator in fixed-size batches."""

    def __init__(self, windows: npt.NDArray[np.float32], input_name: str, batch_size: int) -> None:
        self._batches: Iterator[dict[str, npt.NDArray[np.float32]]] = (
            {input_name: windows[start : start + batch_size].astype(np.float32)}
            for start in range(0, len(windows), batch_size)
        )

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        return next(self._batches, None)


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    calibration_windows: npt.NDArray[np.float32],
    *,
    input_name: str = "window",
    exclude_prefixes: Sequence[str] = (),
    exclude_op_types: Sequence[str] = (),
    reduce_range: bool = False,
) -> list[str]:
    """Statically quantize to int8 (QDQ, per-channel weights, min-max calibration); returns the excluded nodes.

    Nodes whose name starts with one of ``exclude_prefixes`` (the exporter names nodes after the module
    path, e.g. ``/anomaly/``), or whose op type is in ``exclude_op_types``, stay fp32. The graph first goes
    through ONNX Runtime's quantization pre-processing (shape inference, basic fusions), as it recommends.
    ``reduce_range`` quantizes weights to 7 bits: on x86 CPUs without VNNI, ONNX Runtime's int8 kernels
    add pairs of 8-bit products in 16 bits, which full-range weights times full-range activations overflow.
    """
    with tempfile.TemporaryDirectory(prefix="edgefleet-quantize-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        excluded = [
            node.name
            for node in onnx.load(str(prepared)).graph.node
            if node.name.startswith(tuple(exclude_prefixes)) or node.op_type in exclude_op_types
        ]
        quantize_static(
            prepared,
            int8_path,
            _WindowBatches(calibration_windows, input_name, batch_size=64),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
            reduce_range=reduce_range,
        )
    onnx.checker.check_model(str(int8_path))
    return excluded


def reads_quantized(path: Path, node_name: str) -> bool:
    """Whether node ``node_name`` of the QDQ graph at ``path`` reads a dequantized (int8) tensor.

    A node left out of quantization still runs in int8 where its input is quantized: ONNX Runtime then
    quantizes its weights itself (and LiteRT's converter does the same), so only this tells whether a
    layer kept "fp32" really sees fp32 values.
    """
    nodes = onnx.load(str(path)).graph.node
    named = [node for node in nodes if node.name == node_name]
    if len(named) != 1:
        raise ValueError(f"{path.name} has {len(named)} nodes named {node_name!r}, not one")
    producers = {output: node.op_type for node in nodes for output in node.output}
    return producers.get(named[0].input[0]) == "DequantizeLinear"


def file_digest(path: Path) -> tuple[str, int]:
    """``(sha256 hex digest, size in bytes)`` of a file."""
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


def source_commit(repository: Path) -> str | None:
    """The repository's current commit, or None when there is none yet or git is unavailable."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repository, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit or None


def write_manifest(manifest: ModelManifest, directory: Path) -> Path:
    """Write ``<name>.manifest.json`` beside the artifact; returns its path."""
    path = directory / f"{manifest.name}.manifest.json"
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path
