"""`edgefleet chain verify ROUND` and `edgefleet chain status`, run as users run them, against a chain
served over JSON-RPC on loopback (the in-process EVM of this test, through ChainReadServer).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_hub.notary.chain import Web3Notary
from cloud_hub.notary.ledger import JsonLinesRoundLedger
from cloud_hub.notary.rpc import ChainReadServer
from cloud_hub.notary.service import notarize_round
from tests.services import free_port
from tests.unit.cloud_hub.notary.support import digest, records

REPO = Path(__file__).resolve().parents[4]


def edgefleet(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import sys; from edgefleet.cli import app; sys.argv[0] = 'edgefleet'; app()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200", **env},
        check=False,
        timeout=120,
    )


@pytest.fixture
def chain(chain_notary: Web3Notary, tmp_path: Path) -> Iterator[tuple[JsonLinesRoundLedger, dict[str, str]]]:
    ledger = JsonLinesRoundLedger(tmp_path / "notary")
    notarize_round(chain_notary, ledger, 1, records(6), digest("model 1"))
    notarize_round(chain_notary, ledger, 2, records(3, salt="r2"), digest("model 2"))
    ledger.record_round(3, records(2), digest("model 3"))  # recorded, never committed
    with ChainReadServer(chain_notary) as server:
        yield (
            ledger,
            {
                "EDGEFLEET_CHAIN_URL": server.url,
                "EDGEFLEET_CHAIN_CONTRACT_ADDRESS": chain_notary.address,
                "EDGEFLEET_CHAIN_LEDGER_DIR": str(ledger.directory),
            },
        )


def test_verify_passes_then_fails_once_a_stored_leaf_is_tampered_with(
    chain: tuple[JsonLinesRoundLedger, dict[str, str]],
) -> None:
    ledger, env = chain
    result = edgefleet("chain", "verify", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert "round 1: 6 leaves" in result.stdout and "match the chain" in result.stdout

    path = ledger.path(1)
    lines = path.read_text().splitlines()
    leaf = json.loads(lines[2])
    leaf["signature"] = leaf["signature"][:-2] + ("00" if leaf["signature"][-2:] != "00" else "01")
    path.write_text("\n".join([*lines[:2], json.dumps(leaf), *lines[3:]]) + "\n")
    result = edgefleet("chain", "verify", "1", env=env)
    assert result.returncode == 1
    assert "differs from the chain's" in result.stderr

    result = edgefleet("chain", "verify", "3", env=env)
    assert result.returncode == 1
    assert "round 3 is not committed" in result.stderr


def test_status_lists_recorded_rounds(chain: tuple[JsonLinesRoundLedger, dict[str, str]]) -> None:
    _ledger, env = chain
    result = edgefleet("chain", "status", env=env)
    assert result.returncode == 0, result.stderr
    assert "2 committed; 3 recorded" in result.stdout
    assert "round 2: committed in block" in result.stdout
    assert "round 3: not committed" in result.stdout


def test_verify_without_a_chain_or_with_a_dead_one(tmp_path: Path) -> None:
    result = edgefleet("chain", "verify", "1", env={"EDGEFLEET_CHAIN_URL": ""})
    assert result.returncode == 2
    assert "set [chain] url and contract_address" in result.stderr
    dead = {
        "EDGEFLEET_CHAIN_URL": f"http://127.0.0.1:{free_port()}",
        "EDGEFLEET_CHAIN_CONTRACT_ADDRESS": "0x" + "12" * 20,
        "EDGEFLEET_CHAIN_TIMEOUT_S": "2",
        "EDGEFLEET_CHAIN_LEDGER_DIR": str(tmp_path),
    }
    result = edgefleet("chain", "verify", "1", env=dead)
    assert result.returncode == 4
    assert "did not answer" in result.stderr
