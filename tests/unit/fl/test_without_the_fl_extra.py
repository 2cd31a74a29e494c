"""The hub runs without the ``fl`` extra: its API and settings must not import Flower at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[3]


def test_the_hub_api_imports_without_flower() -> None:
    code = (
        "import sys\n"
        "from tests.device_runtime import NotInstalled\n"
        "sys.meta_path.insert(0, NotInstalled(frozenset({'flwr'})))\n"
        "import cloud_hub.api, cloud_hub.fl.settings\n"
        "assert 'flwr' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
