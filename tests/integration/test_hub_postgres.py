"""The Store on a real PostgreSQL, in a schema of its own that is dropped afterwards."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cloud_hub.store import DeviceStatus, EventKind, Store
from tests.services import POSTGRES_URL, missing, postgres_reachable
from tests.unit.cloud_hub import factories

pytestmark = pytest.mark.integration

T0 = 1_750_000_000.0


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
    assert tables == {"devices", "events"}


async def test_escalation_insert_is_idempotent(store: Store) -> None:
    esc = factories.escalation(timestamp=T0)
    verdict = factories.verdict_for(esc)
    assert await store.record_escalation(esc, verdict) is True
    assert await store.record_escalation(esc, factories.verdict_for(esc, label="summer")) is False
    assert await store.stored_verdict(esc.message_id) == verdict
    page = await store.list_events(kind=EventKind.ESCALATION)
    assert page.total == 1
    assert page.items[0].occurred_at == datetime.fromtimestamp(T0, UTC)


async def test_concurrent_copies_are_stored_once(store: Store) -> None:
    esc = factories.escalation()
    results = await asyncio.gather(*(store.record_escalation(esc, factories.verdict_for(esc)) for _ in range(8)))
    assert sorted(results) == [False] * 7 + [True]

    # A new device met by several messages at once is created once, without a key collision.
    others = [factories.escalation(device="newcomer", timestamp=T0 + index) for index in range(8)]
    await asyncio.gather(*(store.record_escalation(other, factories.verdict_for(other)) for other in others))
    device = await store.get_device("newcomer")
    assert device is not None
    assert device.last_seen == datetime.fromtimestamp(T0 + 7, UTC)
    assert (await store.list_events(device="newcomer")).total == 8


async def test_device_upsert(store: Store) -> None:
    await store.record_birth(factories.birth(timestamp=T0, fw="1.0"))
    await store.record_health(factories.health(timestamp=T0 + 5), site="site-1")
    await store.record_death(factories.death(timestamp=T0 + 10, reason="power cut"), site="site-1")
    await store.record_birth(factories.birth(timestamp=T0 - 100))  # older news: changes no status

    device = await store.get_device("dev-1")
    assert device is not None
    assert device.status is DeviceStatus.OFFLINE
    assert device.last_death_reason == "power cut"
    assert device.firmware_version == "1.0"
    assert device.last_health is not None and device.last_health["messages_sent"] == 7

    await store.record_birth(factories.birth(timestamp=T0 + 20, fw="1.1"))
    device = await store.get_device("dev-1")
    assert device is not None
    assert (device.status, device.firmware_version) == (DeviceStatus.ONLINE, "1.1")


async def test_listing_and_stats(store: Store) -> None:
    for index, site in enumerate(["north", "north", "south"]):
        await store.record_birth(factories.birth(device=f"dev-{index}", site=site, timestamp=T0 + index))
    esc = factories.escalation(device="dev-0", site="north", timestamp=T0 + 30)
    await store.record_escalation(esc, factories.verdict_for(esc, label="summer"))
    await store.record_error(factories.error_event(device="dev-2", timestamp=T0 + 40), site="south")

    north = await store.list_devices(site="north")
    assert [device.device_id for device in north.items] == ["dev-0", "dev-1"]
    assert north.total == 2
    events = await store.list_events(since=datetime.fromtimestamp(T0 + 1, UTC), limit=2)
    assert events.total == 4
    assert [event.kind for event in events.items] == [EventKind.ERROR, EventKind.ESCALATION]

    stats = await store.stats()
    assert stats.devices == 3
    assert stats.events_by_kind == {"birth": 3, "escalation": 1, "error": 1}
    assert (stats.verdicts_agreeing, stats.verdicts_disagreeing) == (0, 1)
