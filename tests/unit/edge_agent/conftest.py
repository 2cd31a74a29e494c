from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.settings import AgentSettings


@pytest.fixture
def settings(tmp_path: Path) -> AgentSettings:
    return AgentSettings(
        site="plant-1", devices=["+"], max_batch=8, max_wait_ms=1.0, outbox_path=tmp_path / "outbox.db"
    )
