"""A quick rebuild of one small task from scratch (``basic_motions``), checked against the committed card.

Marked ``train``: needs torch and sktime. The quick plan trains two folds for a few epochs, so its figures
are checked within a tolerance of the committed (full) build's, not for equality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.cards import read_card
from models.tasks import COMMITTED, TASKS
from protocol.manifest import ModelManifest

TASK = "basic_motions"
TOLERANCE = 0.15


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    pytest.importorskip("torch")
    pytest.importorskip("sktime")
    directory = tmp_path_factory.mktemp(TASK)
    return directory, TASKS[TASK].build(directory, quick=True)


@pytest.mark.train
def test_quick_build_lands_near_the_committed_figures(quick_build: tuple[Path, dict[str, Any]]) -> None:
    directory, summary = quick_build
    built, committed = read_card(directory, TASK), read_card(COMMITTED, TASK)
    for variant in ("cloud_fp32", "edge_int8"):
        quick_figure = built.variants[variant].metrics["test_accuracy"]
        assert quick_figure >= committed.variants[variant].metrics["test_accuracy"] - TOLERANCE, variant
    assert built.peers["peer_minirocket"].metrics["test_accuracy"] == pytest.approx(
        committed.peers["peer_minirocket"].metrics["test_accuracy"], abs=0.05
    )
    assert summary["variants"]["edge_int8"]["macs"] < summary["variants"]["edge_unpruned"]["macs"]
    assert built.variants["edge_int8"].artifacts[0].bytes < 1_000_000


@pytest.mark.train
def test_quick_build_writes_manifests_and_cards(quick_build: tuple[Path, dict[str, Any]]) -> None:
    directory, _ = quick_build
    for name in (f"{TASK}_edge_int8", f"{TASK}_cloud_fp32"):
        manifest = ModelManifest.model_validate_json((directory / f"{name}.manifest.json").read_text())
        assert manifest.input.shape == [None, 6, 100]
        assert manifest.output.labels == ["badminton", "running", "standing", "walking"]
    edge = ModelManifest.model_validate_json((directory / f"{TASK}_edge_int8.manifest.json").read_text())
    assert edge.quantization.scheme == "qdq-int8-static"
    assert edge.distilled_from == f"{TASK}_cloud_fp32"
    assert (directory / f"{TASK}.md").read_text().startswith(f"# Model card: `{TASK}`")
