from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud_hub.adjudication import Judge
from cloud_hub.store import Store
from tests.unit.cloud_hub.factories import write_tiny_model


@pytest.fixture
def tiny_manifest(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "model")


@pytest.fixture
def judge(tiny_manifest: Path) -> Judge:
    return Judge.load(tiny_manifest)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}") as opened:
        await opened.init_schema()
        yield opened
