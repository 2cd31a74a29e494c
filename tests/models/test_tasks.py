"""Every registered task's committed artifacts: digests, sizes, figures, and agreement between backends.

Needs no torch: the artifacts are scored with the runtimes alone. A backend whose package is missing is
skipped with a message naming the package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.cards import TaskCard, machine_description, read_card
from models.runtimes import PACKAGES, Backend, load_runner
from models.tasks import COMMITTED, TASKS, evaluate, evaluation_inputs

REPO = Path(__file__).resolve().parents[2]
ONE_MEGABYTE = 1_000_000
MINIMUM_AGREEMENT = 0.99
ANOTHER_PROCESSOR = 0.002
"""How far int8 figures may move on another processor than the one that built the card (exact on the same).
ONNX Runtime's and OpenVINO's x86 int8 kernels take other paths with VNNI and without: keywords, built on a
Xeon with AVX-512 VNNI, decides one test window of 660 (0.0015) otherwise on an AMD EPYC with AVX2."""
MODULES: dict[Backend, str] = {"onnxruntime": "onnxruntime", "openvino": "openvino", "litert": "ai_edge_litert"}


def _int8_tolerance(card: TaskCard, exact: float) -> float:
    """``exact`` on the processor that built ``card``, :data:`ANOTHER_PROCESSOR` elsewhere."""
    return exact if card.machine == machine_description() else ANOTHER_PROCESSOR


def _require(backend: Backend) -> None:
    if importlib.util.find_spec(MODULES[backend]) is None:
        pytest.skip(f"the {backend} runtime is not installed (pip install {PACKAGES[backend]})")


def _require_data(task: str) -> None:
    """Skip, naming what to install, when a task's test data cannot be made on this machine."""
    if task == "keywords" and shutil.which("espeak-ng") is None:
        pytest.skip("the keywords test clips are synthesized by espeak-ng (apt-get install espeak-ng)")
    if task == "anomaly_kdd135" and not (REPO / ".venv-aeon" / "bin" / "python").is_file():
        pytest.skip("KDD-TSAD_135 is read through .venv-aeon (python -m models.environments aeon)")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_committed_artifacts_match_their_card(task: str) -> None:
    card = read_card(COMMITTED, task)
    assert set(card.variants) == {"cloud_fp32", "edge_fp32", "edge_int8"}
    for variant in card.variants.values():
        assert variant.artifacts, "every variant has at least one file"
        for artifact in variant.artifacts:
            content = (COMMITTED / artifact.file).read_bytes()
            assert hashlib.sha256(content).hexdigest() == artifact.sha256, artifact.file
            assert len(content) == artifact.bytes
    edge = card.variants["edge_int8"]
    assert {artifact.backend for artifact in edge.artifacts} >= {"onnxruntime", "openvino", "litert"}
    for artifact in edge.artifacts:
        assert artifact.bytes < ONE_MEGABYTE, f"{artifact.file} is {artifact.bytes:,} bytes"
    assert edge.parameters <= card.variants["cloud_fp32"].parameters
    assert edge.macs < card.variants["cloud_fp32"].macs
    assert card.source_commit is None or len(card.source_commit) == 40


def test_no_committed_graph_keeps_a_batchnorm() -> None:
    """BatchNorm is folded into the layer before it on export: unfolded, the int8 graphs requantize around it."""
    onnx = pytest.importorskip("onnx")
    graphs = sorted(COMMITTED.glob("*.onnx"))
    assert graphs
    for path in graphs:
        kept = [node.name for node in onnx.load(str(path)).graph.node if node.op_type == "BatchNormalization"]
        assert not kept, f"{path.name} keeps {kept}"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_committed_models_reproduce_their_recorded_test_figures(task: str) -> None:
    _require("onnxruntime")
    _require_data(task)
    card = read_card(COMMITTED, task)
    for variant in ("edge_int8", "edge_fp32", "cloud_fp32"):
        result = evaluate(task, "onnxruntime", variant=variant)
        assert result.recorded is not None
        tolerance = _int8_tolerance(card, 1e-5) if variant == "edge_int8" else 1e-5
        assert result.value == pytest.approx(result.recorded, abs=tolerance), variant


@pytest.mark.parametrize("backend", ["openvino", "litert"])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_backends_agree_with_onnxruntime(task: str, backend: Backend) -> None:
    _require("onnxruntime")
    _require(backend)
    _require_data(task)
    card = read_card(COMMITTED, task)
    windows = evaluation_inputs(TASKS[task], card).windows
    reference = load_runner(COMMITTED, f"{task}_edge_int8", "onnxruntime")(windows)
    other = load_runner(COMMITTED, f"{task}_edge_int8", backend)(windows)
    shares = float(np.mean(other.predictions == reference.predictions))
    assert shares >= MINIMUM_AGREEMENT, f"{backend} agrees with onnxruntime on {shares:.1%} of {len(windows)} windows"
    assert shares == pytest.approx(card.backend_agreement[backend], abs=_int8_tolerance(card, 1e-6))
    np.testing.assert_allclose(other.probabilities.sum(axis=1), 1.0, atol=1e-4)


def _edgefleet(*arguments: str) -> subprocess.CompletedProcess[str]:
    # In a subprocess, as a user runs it (and click's deprecation notices stay out of this process).
    return subprocess.run(
        [sys.executable, "-m", "edgefleet", *arguments], capture_output=True, text=True, cwd=REPO, check=False
    )


def test_models_eval_prints_the_test_figure() -> None:
    _require("onnxruntime")
    result = _edgefleet("models", "eval", "italy_power", "--backend", "onnxruntime")
    assert result.returncode == 0, result.stderr
    recorded = read_card(COMMITTED, "italy_power").variants["edge_int8"].metrics["test_accuracy"]
    assert f"italy_power edge_int8 on onnxruntime: test accuracy {recorded:.4f}" in result.stdout


def test_models_eval_refuses_an_unknown_backend_or_task() -> None:
    assert _edgefleet("models", "eval", "italy_power", "--backend", "tensorrt").returncode == 2
    assert _edgefleet("models", "eval", "no_such_task").returncode == 2
