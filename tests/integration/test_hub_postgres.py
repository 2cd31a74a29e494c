"""The Store on a real PostgreSQL, in a schema of its own that is dropped afterwards.

Every backend-independent test of the SQLite store (tests/unit/cloud_hub/test_store.py) runs here
again, on PostgreSQL: they are imported below, and take this module's ``store`` fixture.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cloud_hub.store import Store
from tests.services import POSTGRES_URL, missing, postgres_reachable
from tests.unit.cloud_hub.test_store import (  # noqa: F401 - collected again here, on PostgreSQL
    test_birth_registers_an_online_device,
    test_concurrent_copies_are_stored_once,
    test_death_marks_offline_and_an_older_birth_does_not_revive,
    test_device_listing,
    test_error_events_are_stored_once,
    test_escalation_from_an_unknown_device_registers_it,
    test_escalation_is_stored_once,
    test_event_filters_and_pagination,
    test_health_keeps_the_latest_report,
    test_repeated_birth_changes_nothing,
    test_stats,
    test_stored_verdict_round_trips,
    test_verdict_must_answer_the_escalation,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    if not postgres_reachable():
        missing("PostgreSQL at 127.0.0.1:5432")
    schema = f"hub_test_{secrets.token_hex(6)}"
    admin = create_async_engine(POSTGRES_URL)
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        opened = Store.open(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
        try:
            await opened.init_schema()
            yield opened
        finally:
            await opened.close()
            async with admin.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        await admin.dispose()


async def test_tables_live_in_the_test_schema(store: Store) -> None:
    async with store.engine.connect() as connection:
        schema = await connection.scalar(text("SELECT current_schema()"))
        tables = set(
            (
                await connection.execute(
                    text("SELECT table_name FROM information_schema.tables WHERE table_schema = :schema"),
                    {"schema": schema},
                )
            ).scalars()
        )
    assert str(schema).startswith("hub_test_")
    assert {"devices", "events", "agreement_stats", "alembic_version"} <= tables
