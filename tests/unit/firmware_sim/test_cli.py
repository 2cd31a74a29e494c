from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from firmware_sim.faults import FaultKind, read_ground_truth

REPO = Path(__file__).resolve().parents[3]


def edgefleet(*args: str) -> subprocess.CompletedProcess[str]:
    # In a subprocess: the command is what users run, and typer's test runner warns under this click.
    code = "import sys; from edgefleet.cli import app; sys.argv[0] = 'edgefleet'; app()"
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, env=env, check=False
    )


def test_sim_run_replays_a_shipped_scenario_without_a_broker(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    result = edgefleet("sim", "run", "fault_tour", "--mode", "memory", "--no-live", "--ground-truth", str(truth))
    assert result.returncode == 0, result.stderr
    assert "simulated_s=600.0" in result.stdout
    kinds = {record["kind"] for record in read_ground_truth(truth)}
    assert kinds == {kind.value for kind in FaultKind} | {"outage"}


def test_sim_faults_lists_the_catalogue_and_bad_input_is_a_usage_error() -> None:
    result = edgefleet("sim", "faults")
    assert result.returncode == 0
    assert all(kind.value in result.stdout for kind in FaultKind)
    result = edgefleet("sim", "run", "no-such-scenario", "--mode", "memory", "--no-live")
    assert result.returncode == 2
    assert "cannot read scenario" in result.stderr
