"""The dependency rules of the architecture, checked with the tests."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
FORBIDDEN_ON_DEVICE = ("torch", "fastapi", "starlette", "sqlalchemy", "web3", "uvicorn", "sktime", "pandas")


def test_import_contracts_hold() -> None:
    # In a subprocess: import-linter reconfigures logging in the process that runs it.
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())",
         "--config", str(REPO / "pyproject.toml")],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_the_edge_extra_brings_nothing_a_device_must_not_carry() -> None:
    requirements = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["edge"]
    names = {
        requirement.split("=")[0].split("[")[0].split(">")[0].split("<")[0].lower() for requirement in requirements
    }
    assert not names & set(FORBIDDEN_ON_DEVICE), names & set(FORBIDDEN_ON_DEVICE)


def test_running_the_agent_imports_no_hub_or_training_stack() -> None:
    code = (
        "import sys, edgefleet.cli, edge_agent.agent, edge_agent.model, edge_agent.transport;"
        f"bad = [m for m in {FORBIDDEN_ON_DEVICE!r} + ('cloud_hub', 'firmware_sim', 'models') if m in sys.modules];"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert result.returncode == 0, f"imported: {result.stdout.strip()} {result.stderr[-500:]}"
