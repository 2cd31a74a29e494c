"""The steps every task ends with once its ONNX variants exist: the other backends, their agreement, latencies.

A task builds ``<task>_cloud_fp32.onnx``, ``<task>_edge_fp32.onnx`` and ``<task>_edge_int8.onnx``; this
module adds ``<task>_edge_int8.xml``/``.bin`` (OpenVINO) and ``<task>_edge_int8.tflite`` (LiteRT), checks
that the three backends agree on the test windows, and measures every variant's per-window latency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from torch import nn

from models.cards import ArtifactCard, artifact_card
from models.conversion import ConversionUnavailableError, export_litert, export_openvino
from models.latency import measure_latency
from models.runtimes import BACKENDS, Backend, RuntimeMissingError, load_runner
from protocol.manifest import ExportedArtifact

MINIMUM_AGREEMENT = 0.99
"""Share of test windows on which a backend's argmax must equal ONNX Runtime's (the build fails below it)."""


@dataclass
class EdgeExports:
    """What :func:`export_edge_backends` made, and what it had to skip (with the reason)."""

    artifacts: list[ArtifactCard]
    skipped: dict[str, str] = field(default_factory=dict)


def export_edge_backends(
    directory: Path,
    variant: str,
    litert_module: nn.Module,
    calibration: npt.NDArray[np.float32],
    *,
    quantized_prefix: str,
    fp32_prefixes: Sequence[str] = (),
    reduce_range: bool = False,
    describe: Callable[[str], None] = lambda _: None,
) -> EdgeExports:
    """Write the OpenVINO IR and the ``.tflite`` of the edge int8 variant beside its ``.onnx``.

    The IR is converted from the int8 ``.onnx`` (same quantization); the ``.tflite`` from ``litert_module``
    (the same trained student, quantized by litert-torch with the same calibration windows). A missing
    converter environment skips the ``.tflite`` and says so, rather than failing the whole build.
    ``reduce_range``: the ``.onnx`` was quantized with 7-bit weights, and the ``.tflite`` is too.
    """
    onnx_path = directory / f"{variant}.onnx"
    exports = EdgeExports(artifacts=[artifact_card(onnx_path, "onnxruntime")])
    describe("OpenVINO IR")
    xml_path, bin_path = export_openvino(onnx_path, directory / f"{variant}.xml")
    exports.artifacts += [artifact_card(xml_path, "openvino"), artifact_card(bin_path, "openvino-weights")]
    describe("LiteRT .tflite (litert-torch)")
    tflite_path = directory / f"{variant}.tflite"
    try:
        export_litert(
            litert_module,
            calibration,
            tflite_path,
            quantized_prefix=quantized_prefix,
            fp32_prefixes=fp32_prefixes,
            reduce_range=reduce_range,
        )
    except ConversionUnavailableError as exc:
        exports.skipped["litert"] = str(exc)
    else:
        exports.artifacts.append(artifact_card(tflite_path, "litert"))
    return exports


def manifest_exports(exports: EdgeExports) -> list[ExportedArtifact]:
    """The exports as the protocol manifest lists them (OpenVINO's ``.bin`` as the ``.xml``'s weights)."""
    by_backend = {artifact.backend: artifact for artifact in exports.artifacts}
    listed = []
    if "openvino" in by_backend:
        xml, weights = by_backend["openvino"], by_backend["openvino-weights"]
        listed.append(
            ExportedArtifact(
                backend="openvino",
                artifact=xml.file,
                sha256=xml.sha256,
                bytes=xml.bytes,
                weights=weights.file,
                weights_sha256=weights.sha256,
            )
        )
    if "litert" in by_backend:
        tflite = by_backend["litert"]
        listed.append(
            ExportedArtifact(backend="litert", artifact=tflite.file, sha256=tflite.sha256, bytes=tflite.bytes)
        )
    return listed


def available_backends(directory: Path, variant: str) -> list[Backend]:
    """Backends that have an artifact of ``variant`` in ``directory`` and whose runtime is installed."""
    found: list[Backend] = []
    for backend in BACKENDS:
        try:
            load_runner(directory, variant, backend)
        except (FileNotFoundError, RuntimeMissingError):
            continue
        found.append(backend)
    return found


def backend_predictions(
    directory: Path, variant: str, windows: npt.NDArray[np.float32], backends: Sequence[Backend]
) -> dict[Backend, npt.NDArray[np.int64]]:
    """Argmax of each backend's probabilities over ``windows``."""
    return {backend: load_runner(directory, variant, backend)(windows).predictions for backend in backends}


def agreement(predictions: dict[Backend, npt.NDArray[np.int64]], *, strict: bool = True) -> dict[str, float]:
    """Share of windows on which each backend agrees with ONNX Runtime.

    ``strict`` fails below :data:`MINIMUM_AGREEMENT`. Quick builds (tests) are not strict: a model trained
    for a few epochs has near-ties between classes, which any rounding difference flips.
    """
    reference = predictions["onnxruntime"]
    shares: dict[str, float] = {
        backend: float(np.mean(values == reference))
        for backend, values in predictions.items()
        if backend != "onnxruntime"
    }
    failing = {backend: share for backend, share in shares.items() if share < MINIMUM_AGREEMENT}
    if failing and strict:
        raise RuntimeError(f"backends disagree with ONNX Runtime beyond tolerance: {failing}")
    return shares


def variant_latencies(
    directory: Path, variant: str, window: npt.NDArray[np.float32], backends: Sequence[Backend], *, repeats: int = 300
) -> dict[str, float]:
    """Median per-window latency (ms) of ``variant`` on each backend."""
    return {
        backend: round(measure_latency(load_runner(directory, variant, backend), window, repeats=repeats).median_ms, 4)
        for backend in backends
    }
