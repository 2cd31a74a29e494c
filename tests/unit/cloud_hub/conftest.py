from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_hub.adjudication import Judge
from cloud_hub.settings import HubSettings
from cloud_hub.store import Store
from tests.unit.cloud_hub.factories import write_tiny_model
from tests.unit.cloud_hub.hub import ApiHub, running_hub, sqlite_settings


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


@pytest.fixture
def hub_settings(tmp_path: Path) -> HubSettings:
    """Settings of the hub under API test; the PostgreSQL module overrides this fixture."""
    return sqlite_settings(tmp_path)


@pytest.fixture
async def hub(hub_settings: HubSettings) -> AsyncIterator[ApiHub]:
    async with running_hub(hub_settings) as running:
        yield running


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
async def judging_hub(
    hub_settings: HubSettings, tiny_manifest: Path, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> AsyncIterator[ApiHub]:
    """A hub with the tiny model loaded (judging HTTPS escalations) and ``signing_key`` trusted."""
    public = tmp_path / "trusted.pem"
    public.write_bytes(
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings = hub_settings.model_copy(update={"model_manifest": tiny_manifest, "trusted_model_keys": [public]})
    async with running_hub(settings, load_model=True) as running:
        yield running
