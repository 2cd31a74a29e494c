from __future__ import annotations

import pytest

from edge_agent.settings import AgentSettings


@pytest.fixture
def settings() -> AgentSettings:
    return AgentSettings(site="plant-1", devices=["+"], max_batch=8, max_wait_ms=1.0)
