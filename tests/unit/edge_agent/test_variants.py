"""Choosing the faster edge variant on the device, and windows that do not fit a model's input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge_agent.errors import InferenceError
from edge_agent.model import load_fastest_variant, load_model, sibling_variants

COMMITTED = Path(__file__).resolve().parents[3] / "models" / "quantized"


def copy_task(directory: Path, task: str) -> None:
    for path in COMMITTED.glob(f"{task}_*"):
        shutil.copy(path, directory / path.name)


def test_the_fastest_edge_variant_is_timed_here_and_chosen(tmp_path: Path) -> None:
    copy_task(tmp_path, "italy_power")
    copy_task(tmp_path, "digits")  # another task in the same directory: never a candidate
    configured = tmp_path / "italy_power_edge_int8.manifest.json"
    assert [path.name for path in sibling_variants(configured)] == [
        "italy_power_edge_int8.manifest.json",
        "italy_power_edge_fp32.manifest.json",  # the cloud model is not an edge variant
    ]
    model, timings = load_fastest_variant(configured, repeats=20)
    assert [timing.name for timing in timings] == ["italy_power_edge_int8", "italy_power_edge_fp32"]
    assert all(timing.milliseconds is not None and timing.milliseconds > 0 for timing in timings)
    fastest = min(timings, key=lambda timing: timing.milliseconds or float("inf"))
    assert model.manifest.name == fastest.name
    assert model.infer([model.probe_window()])[0].label in model.manifest.output.labels


def test_a_variant_that_cannot_run_on_the_backend_is_left_out_with_its_reason(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    copy_task(tmp_path, "italy_power")
    model, timings = load_fastest_variant(tmp_path / "italy_power_edge_int8.manifest.json", backend="litert")
    assert model.manifest.name == "italy_power_edge_int8"
    assert timings[1].milliseconds is None
    assert "no export for the litert backend" in timings[1].reason


@pytest.mark.parametrize(
    ("task", "values"),
    [("italy_power", 24), ("basic_motions", 600), ("digits", 64), ("keywords", 16000), ("camera", 9216)],
)
def test_the_probe_window_fits_every_committed_model(task: str, values: int) -> None:
    model = load_model(COMMITTED / f"{task}_edge_int8.manifest.json")
    assert len(model.probe_window()) == values
    assert len(model.infer([model.probe_window()])) == 1


def test_a_window_that_does_not_fit_the_input_is_an_inference_error_not_a_crash() -> None:
    model = load_model(COMMITTED / "basic_motions_edge_int8.manifest.json")
    with pytest.raises(InferenceError, match="does not fit"):
        model.infer([[0.5] * 100])  # one channel's worth of a six-channel input
