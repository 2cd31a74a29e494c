from __future__ import annotations

import asyncio
import threading
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


@pytest.fixture(autouse=True)
async def aiosqlite_threads_finish() -> AsyncIterator[None]:
    """Let aiosqlite's worker threads finish before the test's event loop closes: a thread still
    answering a failed connection would otherwise report into a closed loop, in a later test."""
    yield
    for _ in range(100):
        if not any(thread.name.endswith("(_connection_worker_thread)") for thread in threading.enumerate()):
            return
        await asyncio.sleep(0.01)
