"""The ``italy_power`` model task: a quick build from scratch (marked ``train``) and the committed artifacts."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from protocol.manifest import ModelManifest, ZNormalize
from protocol.preprocessing import preprocess

COMMITTED = Path(__file__).resolve().parents[2] / "models" / "quantized"
EDGE, CLOUD = "italy_power_edge_int8", "italy_power_cloud_fp32"
ONE_MEGABYTE = 1_000_000


def _manifest(directory: Path, name: str) -> ModelManifest:
    return ModelManifest.model_validate_json((directory / f"{name}.manifest.json").read_text(encoding="utf-8"))


def _test_split() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    pytest.importorskip("sktime")
    from models.datasets import load_italy_power

    data = load_italy_power()
    return data.test_windows, data.test_labels


def _assert_artifact_matches(directory: Path, manifest: ModelManifest) -> None:
    artifact = directory / manifest.artifact
    content = artifact.read_bytes()
    assert hashlib.sha256(content).hexdigest() == manifest.sha256
    assert len(content) == manifest.bytes


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    pytest.importorskip("torch")
    pytest.importorskip("sktime")
    from models.italy_power import build

    directory = tmp_path_factory.mktemp("italy_power")
    return directory, build(directory, quick=True)


@pytest.mark.train
def test_quick_build_writes_valid_manifests(quick_build: tuple[Path, dict[str, Any]]) -> None:
    directory, _ = quick_build
    edge, cloud = _manifest(directory, EDGE), _manifest(directory, CLOUD)
    for manifest in (edge, cloud):
        _assert_artifact_matches(directory, manifest)
        assert manifest.task == "italy_power"
        assert manifest.signature is None
        assert manifest.input.name == "window"
        assert manifest.input.shape == [None, 24]
        assert manifest.input.preprocessing == [ZNormalize()]
        assert manifest.output.labels == ["winter", "summer"]
        assert manifest.output.anomaly_score == "anomaly_score"
        assert {"test_accuracy", "val_accuracy", "baseline_1nn_accuracy"} <= manifest.metrics.keys()
    assert (edge.role, cloud.role) == ("edge", "cloud")
    assert edge.quantization.scheme == "qdq-int8-static"
    assert edge.quantization.per_channel
    assert edge.distilled_from == CLOUD
    assert edge.bytes < ONE_MEGABYTE
    assert (directory / "italy_power.md").is_file()


@pytest.mark.train
def test_quick_build_int8_model_classifies_and_scores_faults(quick_build: tuple[Path, dict[str, Any]]) -> None:
    from models.evaluation import OnnxWindowModel, accuracy
    from models.faults import spike

    directory, _ = quick_build
    manifest = _manifest(directory, EDGE)
    windows, labels = _test_split()
    model = OnnxWindowModel(directory / manifest.artifact)
    outputs = model(preprocess(windows, manifest.input.preprocessing))

    test_accuracy = accuracy(outputs.predictions, labels)
    assert test_accuracy >= 0.85
    assert test_accuracy == pytest.approx(manifest.metrics["test_accuracy"], abs=1e-6)
    np.testing.assert_allclose(outputs.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (outputs.anomaly_score >= 0).all()

    spiked = model(preprocess(spike(windows, np.random.default_rng(0)), manifest.input.preprocessing))
    assert np.median(spiked.anomaly_score) > 3 * max(1.0, float(np.median(outputs.anomaly_score)))


@pytest.mark.train
def test_quick_build_is_reproducible(quick_build: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    from models.italy_power import build

    directory, summary = quick_build
    again = build(tmp_path, quick=True)
    assert again["variants"] == summary["variants"]
    for name in (EDGE, CLOUD):
        assert _manifest(tmp_path, name).sha256 == _manifest(directory, name).sha256


def test_committed_artifacts_match_their_manifests() -> None:
    pytest.importorskip("onnxruntime")
    from models.evaluation import OnnxWindowModel, accuracy

    edge, cloud = _manifest(COMMITTED, EDGE), _manifest(COMMITTED, CLOUD)
    for manifest in (edge, cloud):
        _assert_artifact_matches(COMMITTED, manifest)
    assert edge.bytes < ONE_MEGABYTE

    windows, labels = _test_split()
    edge_outputs = OnnxWindowModel(COMMITTED / edge.artifact)(preprocess(windows, edge.input.preprocessing))
    cloud_outputs = OnnxWindowModel(COMMITTED / cloud.artifact)(preprocess(windows, cloud.input.preprocessing))
    assert accuracy(edge_outputs.predictions, labels) == pytest.approx(edge.metrics["test_accuracy"], abs=0.005)
    assert accuracy(cloud_outputs.predictions, labels) == pytest.approx(cloud.metrics["test_accuracy"], abs=0.005)
    assert np.mean(edge_outputs.predictions == cloud_outputs.predictions) >= 0.90
