"""Alembic: empty → head on SQLite and on PostgreSQL, and the migrated schema is the models' schema."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from cloud_hub.migrate import head_revision
from cloud_hub.store import Base, Store
from tests.services import POSTGRES_URL, missing, postgres_reachable

TABLES = {
    "agreement_stats",
    "alembic_version",
    "api_tokens",
    "audit_log",
    "devices",
    "drift_alerts",
    "drift_references",
    "events",
    "models",
    "retraining_triggers",
    "rollout_transitions",
    "rollouts",
}


def differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(context, Base.metadata))


def revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def check_migrates_from_empty(store: Store) -> None:
    async with store.engine.connect() as connection:
        assert set(await connection.run_sync(lambda sync: inspect(sync).get_table_names())) == set()
    await store.init_schema()
    await store.init_schema()  # a second start finds the schema at head and changes nothing
    async with store.engine.connect() as connection:
        assert set(await connection.run_sync(lambda sync: inspect(sync).get_table_names())) == TABLES
        assert await connection.run_sync(revision) == head_revision()
        assert await connection.run_sync(differences) == []


async def test_sqlite_empty_to_head_matches_the_models(tmp_path: Path) -> None:
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}") as store:
        await check_migrates_from_empty(store)


@pytest.fixture
async def postgres_store() -> AsyncIterator[Store]:
    if not postgres_reachable():
        missing("PostgreSQL at 127.0.0.1:5432")
    schema = f"hub_migrate_{secrets.token_hex(6)}"
    admin = create_async_engine(POSTGRES_URL)
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        store = Store.open(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
        try:
            yield store
        finally:
            await store.close()
            async with admin.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        await admin.dispose()


@pytest.mark.integration
async def test_postgres_empty_to_head_matches_the_models(postgres_store: Store) -> None:
    await check_migrates_from_empty(postgres_store)
