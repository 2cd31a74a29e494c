"""Every inference backend gives the same decisions as ONNX Runtime on the test windows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import ModelLoadError
from edge_agent.model import LoadedModel, load_model, read_manifest
from firmware_sim.datasets import italy_power_demand
from tests.services import missing

MANIFEST = Path(__file__).resolve().parents[3] / "models" / "quantized" / "italy_power_edge_int8.manifest.json"
PACKAGES = {"openvino": "openvino", "litert": "ai_edge_litert"}


@pytest.fixture(scope="module")
def windows() -> list[list[float]]:
    return italy_power_demand("test").values.tolist()


@pytest.fixture(scope="module")
def reference(windows: list[list[float]]) -> list[tuple[str, float]]:
    model = load_model(MANIFEST)
    return [(o.label, o.anomaly_score) for o in model.infer(windows)]


def run(model: LoadedModel, windows: list[list[float]]) -> list[tuple[str, float]]:
    outcomes = []
    for start in range(0, len(windows), 64):
        outcomes += model.infer(windows[start : start + 64])
    return [(o.label, o.anomaly_score) for o in outcomes]


@pytest.mark.parametrize("backend", ["openvino", "litert"])
def test_backend_agrees_with_onnxruntime(
    backend: str, windows: list[list[float]], reference: list[tuple[str, float]]
) -> None:
    if importlib.util.find_spec(PACKAGES[backend]) is None:
        missing(f"the {backend} runtime (pip install 'edgefleet[edge-{backend}]')")
    manifest = read_manifest(MANIFEST)
    if backend == "litert" and not any(e.backend == "litert" for e in manifest.exports):
        pytest.skip("the committed model has no .tflite export yet")
    model = load_model(MANIFEST, backend=backend, threads=1)
    assert model.backend.name == backend
    outcomes = run(model, windows)
    agreement = np.mean([a[0] == b[0] for a, b in zip(outcomes, reference, strict=True)])
    assert agreement >= 0.99
    scores = np.array([o[1] for o in outcomes])
    assert np.allclose(scores, [r[1] for r in reference], rtol=0.05, atol=0.05)


def test_unknown_backend_and_missing_export_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown inference backend"):
        load_model(MANIFEST, backend="tpu")
    manifest = read_manifest(MANIFEST).model_copy(update={"exports": []})
    path = tmp_path / "m.manifest.json"
    path.write_text(manifest.model_dump_json())
    with pytest.raises(ModelLoadError, match="no export for the litert backend"):
        load_model(path, backend="litert")
