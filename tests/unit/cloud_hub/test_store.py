from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from cloud_hub.errors import StoreError
from cloud_hub.store import DeviceStatus, EventKind, Store
from tests.unit.cloud_hub import factories

T0 = 1_750_000_000.0  # a fixed instant, so that time filters are exact


async def test_escalation_is_stored_once(store: Store) -> None:
    esc = factories.escalation(timestamp=T0)
    verdict = factories.verdict_for(esc)

    assert await store.record_escalation(esc, verdict) is True
    assert await store.record_escalation(esc, factories.verdict_for(esc, label="summer")) is False

    page = await store.list_events(kind=EventKind.ESCALATION)
    assert page.total == 1
    event = page.items[0]
    assert event.message_id == esc.message_id
    assert event.verdict_label == "winter", "the second call must not overwrite the first verdict"
    assert event.agrees is True
    assert event.edge_label == "winter"
    assert event.reasons == ["low_confidence"]
    assert event.detail["window"]["values"] == esc.window.values
    assert event.occurred_at == datetime.fromtimestamp(T0, UTC)


async def test_stored_verdict_round_trips(store: Store) -> None:
    esc = factories.escalation()
    verdict = factories.verdict_for(esc, label="summer")
    await store.record_escalation(esc, verdict)

    assert await store.stored_verdict(esc.message_id) == verdict
    assert await store.stored_verdict("never-seen") is None


async def test_verdict_must_answer_the_escalation(store: Store) -> None:
    esc = factories.escalation()
    other = factories.verdict_for(factories.escalation())
    with pytest.raises(ValueError, match="does not answer"):
        await store.record_escalation(esc, other)


async def test_birth_registers_an_online_device(store: Store) -> None:
    assert await store.record_birth(factories.birth(timestamp=T0, fw="2.1.0")) is True

    device = await store.get_device("dev-1")
    assert device is not None
    assert device.status is DeviceStatus.ONLINE
    assert device.site == "site-1"
    assert device.firmware_version == "2.1.0"
    assert device.streams == [{"name": "power", "sensor": "power", "unit": "kW", "sample_rate_hz": 1.0}]
    assert device.first_seen == device.last_seen == datetime.fromtimestamp(T0, UTC)


async def test_repeated_birth_changes_nothing(store: Store) -> None:
    birth = factories.birth(timestamp=T0)
    assert await store.record_birth(birth) is True
    assert await store.record_birth(birth) is False
    assert (await store.list_events(kind=EventKind.BIRTH)).total == 1


async def test_death_marks_offline_and_an_older_birth_does_not_revive(store: Store) -> None:
    await store.record_birth(factories.birth(timestamp=T0))
    assert await store.record_death(factories.death(timestamp=T0 + 60, reason="lost"), site="site-1") is True

    device = await store.get_device("dev-1")
    assert device is not None
    assert device.status is DeviceStatus.OFFLINE
    assert device.last_death_reason == "lost"

    # A retained birth from before the death, delivered again (a hub restart), is older news.
    await store.record_birth(factories.birth(timestamp=T0 - 10))
    device = await store.get_device("dev-1")
    assert device is not None
    assert device.status is DeviceStatus.OFFLINE
    assert device.last_seen == datetime.fromtimestamp(T0 + 60, UTC)
    assert device.first_seen == datetime.fromtimestamp(T0 - 10, UTC)

    await store.record_birth(factories.birth(timestamp=T0 + 120))
    device = await store.get_device("dev-1")
    assert device is not None
    assert device.status is DeviceStatus.ONLINE


async def test_health_keeps_the_latest_report(store: Store) -> None:
    await store.record_health(factories.health(timestamp=T0 + 10, uptime_s=10), site="site-1")
    await store.record_health(factories.health(timestamp=T0 + 5, uptime_s=5), site="site-1")

    device = await store.get_device("dev-1")
    assert device is not None
    assert device.status is DeviceStatus.ONLINE, "a device that reports health is online"
    assert device.last_health is not None
    assert device.last_health["uptime_s"] == 10
    assert device.last_health["cpu_percent"] == 3.5
    assert device.last_health_at == datetime.fromtimestamp(T0 + 10, UTC)


async def test_escalation_from_an_unknown_device_registers_it(store: Store) -> None:
    esc = factories.escalation(device="stranger", site="site-9", timestamp=T0)
    await store.record_escalation(esc, factories.verdict_for(esc))

    device = await store.get_device("stranger")
    assert device is not None
    assert device.status is DeviceStatus.UNKNOWN
    assert device.site == "site-9"


async def test_error_events_are_stored_once(store: Store) -> None:
    error = factories.error_event(timestamp=T0)
    assert await store.record_error(error, site="site-1") is True
    assert await store.record_error(error, site="site-1") is False

    page = await store.list_events(kind=EventKind.ERROR)
    assert page.total == 1
    assert page.items[0].detail["code"] == "out_of_range"
    assert page.items[0].stream == "power"


async def test_event_filters_and_pagination(store: Store) -> None:
    for index in range(5):
        esc = factories.escalation(device="dev-a", site="north", timestamp=T0 + index)
        await store.record_escalation(esc, factories.verdict_for(esc))
    for index in range(3):
        esc = factories.escalation(device="dev-b", site="south", timestamp=T0 + 10 + index)
        await store.record_escalation(esc, factories.verdict_for(esc, label="summer"))
    await store.record_error(factories.error_event(device="dev-a", timestamp=T0 + 20), site="north")

    everything = await store.list_events()
    assert everything.total == 9
    times = [event.occurred_at for event in everything.items]
    assert times == sorted(times, reverse=True), "newest first"

    assert (await store.list_events(device="dev-a")).total == 6
    assert (await store.list_events(site="south")).total == 3
    assert (await store.list_events(site="north", kind=EventKind.ESCALATION)).total == 5

    start = datetime.fromtimestamp(T0 + 1, UTC)
    window = await store.list_events(
        device="dev-a", kind=EventKind.ESCALATION, since=start, until=start + timedelta(seconds=3)
    )
    assert [event.occurred_at for event in window.items] == [start + timedelta(seconds=s) for s in (2, 1, 0)]

    first = await store.list_events(device="dev-a", limit=4)
    second = await store.list_events(device="dev-a", limit=4, offset=4)
    assert first.total == second.total == 6
    assert len(first.items) == 4 and len(second.items) == 2
    assert {event.id for event in first.items}.isdisjoint(event.id for event in second.items)


async def test_device_listing(store: Store) -> None:
    for index, site in enumerate(["north", "north", "south"]):
        await store.record_birth(factories.birth(device=f"dev-{index}", site=site, timestamp=T0))

    page = await store.list_devices()
    assert [device.device_id for device in page.items] == ["dev-0", "dev-1", "dev-2"]
    assert page.total == 3
    north = await store.list_devices(site="north", limit=1, offset=1)
    assert [device.device_id for device in north.items] == ["dev-1"]
    assert north.total == 2
    assert await store.get_device("nobody") is None


async def test_stats(store: Store) -> None:
    await store.record_birth(factories.birth(device="dev-1", timestamp=T0))
    await store.record_death(factories.death(device="dev-2", timestamp=T0), site="site-1")
    agree = factories.escalation(edge_label="winter")
    disagree = factories.escalation(edge_label="summer")
    await store.record_escalation(agree, factories.verdict_for(agree, label="winter"))
    await store.record_escalation(disagree, factories.verdict_for(disagree, label="winter"))

    stats = await store.stats()
    assert stats.devices == 2
    assert stats.devices_by_status == {"online": 1, "offline": 1}
    assert stats.events_by_kind == {"birth": 1, "death": 1, "escalation": 2}
    assert stats.events == 4
    assert stats.escalations == 2
    assert stats.verdicts_agreeing == 1
    assert stats.verdicts_disagreeing == 1


async def test_sqlite_file_gets_its_directory_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "deeper" / "hub.db"
    async with Store.open(f"sqlite+aiosqlite:///{path}") as opened:
        await opened.init_schema()
        async with opened.engine.connect() as connection:
            mode = await connection.scalar(text("PRAGMA journal_mode"))
    assert path.exists()
    assert mode == "wal"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "invalid database URL"),
        ("mysql+aiomysql://db/hub", "unsupported database"),
        ("sqlite:///plain.db", "async driver"),
    ],
)
def test_bad_database_urls(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Store.open(url)


async def test_database_failures_become_store_errors(tmp_path: Path) -> None:
    (tmp_path / "a-directory.db").mkdir()
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 'a-directory.db'}") as broken:
        with pytest.raises(StoreError, match="could not migrate the schema"):
            await broken.init_schema()


async def test_concurrent_copies_are_stored_once(store: Store) -> None:
    esc = factories.escalation()
    results = await asyncio.gather(*(store.record_escalation(esc, factories.verdict_for(esc)) for _ in range(8)))
    assert sorted(results) == [False] * 7 + [True]

    others = [factories.escalation(device="newcomer", timestamp=T0 + index) for index in range(8)]
    await asyncio.gather(*(store.record_escalation(other, factories.verdict_for(other)) for other in others))
    device = await store.get_device("newcomer")
    assert device is not None
    assert device.last_seen == datetime.fromtimestamp(T0 + 7, UTC)
