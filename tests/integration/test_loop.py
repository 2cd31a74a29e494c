"""The whole loop, as `edgefleet demo` runs it: broker, hub on SQLite, simulated meters, edge agents
with the committed int8 model, escalations judged by the committed fp32 model, verdicts back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rich.console import Console

from edgefleet.demo import CLOUD_MANIFEST, EDGE_MANIFEST, DemoOptions, run_demo
from tests.services import missing

pytestmark = pytest.mark.integration

MODELS = Path(__file__).resolve().parents[2] / "models" / "quantized"


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
async def test_a_reading_travels_device_to_edge_to_hub_and_back(broker: str, tmp_path: Path) -> None:
    if broker == "mosquitto" and shutil.which("mosquitto") is None:
        missing("the mosquitto broker on PATH (apt-get install mosquitto)")
    for name in (EDGE_MANIFEST, CLOUD_MANIFEST):
        assert (MODELS / name).is_file(), f"committed model {name} is missing"
    console = Console(record=True, width=140)
    options = DemoOptions(
        duration_s=8.0,
        devices=3,
        rate_hz=24.0,
        broker=broker,  # type: ignore[arg-type]
        malformed_probability=0.02,
        workdir=tmp_path / "demo",
        live=False,
        models_dir=MODELS,
    )
    report = await run_demo(options, console=console)
    output = console.export_text()
    failed = [f"{check.name}: {check.detail}" for check in report.checks if not check.ok]
    assert report.ok, f"{failed}\n{output}"
    totals = report.totals
    assert totals["decisions"] >= 3 * 5
    assert totals["escalations"] >= 1
    assert totals["verdicts"] == totals["escalations"] == totals["stored_escalations"]
    assert totals["rejected"] >= totals["malformed"] > 0
    # The int8 model is right on most days the simulator replays (ItalyPowerDemand's test split).
    assert totals["correct"] / totals["scored"] > 0.85
    assert "Summary" in output
