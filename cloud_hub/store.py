"""Persistence of the device registry and the event log (SQLAlchemy 2, async).

SQLite (through aiosqlite, in WAL mode) is the embedded default; PostgreSQL (through asyncpg) is chosen
by URL. Every event is stored once, keyed by the message id of the message it came from: a repeated
message (at-least-once delivery, an outbox replayed after an outage, a second hub worker) is recognised
with the dialect's ``INSERT ... ON CONFLICT DO NOTHING`` and changes nothing.

Device state is applied newest-first: a message older than the one that set the device's status (a
retained birth delivered again after the device died, say) does not change the status.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    Dialect,
    Enum,
    Index,
    Integer,
    String,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import DateTime, TypeDecorator

from cloud_hub.errors import StoreError
from protocol.messages import DeviceBirth, DeviceDeath, DeviceHealth, ErrorEvent, Escalation, Message, Verdict

T = TypeVar("T")


class DeviceStatus(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"
    """Known only from messages sent on its behalf (escalations, errors), never from a birth or death."""


class EventKind(enum.StrEnum):
    ESCALATION = "escalation"
    ERROR = "error"
    BIRTH = "birth"
    DEATH = "death"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every dialect (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum_column(cls: type[enum.StrEnum]) -> Enum:
    # VARCHAR rather than a native PostgreSQL enum: adding a kind later needs no type migration.
    return Enum(cls, native_enum=False, length=16, values_callable=lambda kinds: [kind.value for kind in kinds])


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads it as a class attribute)
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[str]: JSON,
        list[dict[str, Any]]: JSON,
    }


class Device(Base):
    """A device the hub has heard of."""

    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[DeviceStatus] = mapped_column(_enum_column(DeviceStatus))
    status_since: Mapped[datetime | None] = mapped_column(
        comment="Timestamp of the message that set the status; older messages do not change it."
    )
    firmware_version: Mapped[str | None] = mapped_column(String(64))
    streams: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    last_health: Mapped[dict[str, Any] | None]
    last_health_at: Mapped[datetime | None]
    last_death_reason: Mapped[str | None] = mapped_column(String(256))


class Event(Base):
    """Something that happened to a device: an escalation and its verdict, an error, a birth or death."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_device_occurred", "device_id", "occurred_at"),
        Index("ix_events_site_occurred", "site", "occurred_at"),
        Index("ix_events_kind_occurred", "kind", "occurred_at"),
    )

    # INTEGER on SQLite, so that the column is the rowid and autoincrements.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True, comment="The idempotency key.")
    device_id: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(64))
    kind: Mapped[EventKind] = mapped_column(_enum_column(EventKind))
    stream: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(comment="The message's own timestamp.")
    received_at: Mapped[datetime]
    edge_model: Mapped[str | None] = mapped_column(String(64))
    edge_model_version: Mapped[str | None] = mapped_column(String(64))
    edge_label: Mapped[str | None] = mapped_column(String(64))
    edge_confidence: Mapped[float | None]
    edge_anomaly_score: Mapped[float | None]
    verdict_model: Mapped[str | None] = mapped_column(String(64))
    verdict_model_version: Mapped[str | None] = mapped_column(String(64))
    verdict_label: Mapped[str | None] = mapped_column(String(64))
    verdict_confidence: Mapped[float | None]
    verdict_anomaly_score: Mapped[float | None]
    agrees: Mapped[bool | None]
    reasons: Mapped[list[str]] = mapped_column(default=list)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    verdict_message: Mapped[dict[str, Any] | None] = mapped_column(
        comment="The verdict as sent (wire names), sent again when the escalation arrives again."
    )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing and the number of rows matching its filters."""

    items: list[T]
    total: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    devices: int
    devices_by_status: dict[str, int]
    events: int
    events_by_kind: dict[str, int]
    escalations: int
    """Escalations judged and stored (each once)."""
    verdicts_agreeing: int
    verdicts_disagreeing: int


def utc_now() -> datetime:
    return datetime.now(UTC)


def message_time(message: Message) -> datetime:
    """The message's timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(message.timestamp, UTC)


def create_engine(url: str, **options: Any) -> AsyncEngine:
    """An async engine for ``url``; for a SQLite file, creates its directory and turns on WAL."""
    try:
        parsed = make_url(url)
    except SQLAlchemyError as exc:
        raise StoreError(f"invalid database URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported database {backend!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://")
    if backend == "sqlite":
        _ensure_directory(parsed.database)
    try:
        engine = create_async_engine(parsed, **options)
    except (SQLAlchemyError, ImportError) as exc:
        shown = parsed.render_as_string(hide_password=True)
        raise StoreError(f"cannot open database {shown}: {exc} (the hub needs an async driver)") from exc
    if backend == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _ensure_directory(database: str | None) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the directory of database file {database}: {exc}") from exc


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL lets the API read while the ingest writes; NORMAL sync is safe with WAL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _reason(exc: BaseException) -> str:
    # A DBAPI error's first line says what went wrong; the SQL and parameters that follow are noise here.
    original = getattr(exc, "orig", None)
    message = str(original if original is not None else exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


class Store:
    """The hub's persistence: device registry and event log over an :class:`AsyncEngine`.

    Every method runs in its own transaction and raises :class:`StoreError` when the database fails.
    Rows come back detached and fully loaded.
    """

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utc_now) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise StoreError(f"unsupported database dialect {engine.dialect.name!r}")
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock

    @classmethod
    def open(cls, url: str, *, clock: Callable[[], datetime] = utc_now, **engine_options: Any) -> Store:
        """A store over a new engine for ``url`` (see :func:`create_engine`); :meth:`close` disposes of it."""
        return cls(create_engine(url, **engine_options), clock=clock)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @asynccontextmanager
    async def _transaction(self, action: str) -> AsyncIterator[AsyncSession]:
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"could not {action}: {_reason(exc)}") from exc

    async def init_schema(self) -> None:
        """Create the tables and indexes that do not exist yet (migrations come with Alembic later)."""
        try:
            async with self._engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"could not create the schema: {_reason(exc)}") from exc

    async def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers."""
        async with self._transaction("reach the database") as session:
            await session.execute(text("SELECT 1"))

    # Writing ----------------------------------------------------------------------------------------

    async def record_birth(self, birth: DeviceBirth) -> bool:
        """Register or update the device as online; ``False`` if this birth was recorded before."""
        at = message_time(birth)
        streams = [stream.model_dump(mode="json") for stream in birth.streams]
        async with self._transaction("record a birth") as session:
            detail = {"firmware_version": birth.firmware_version, "streams": streams}
            if not await self._insert_event(session, birth, kind=EventKind.BIRTH, site=birth.site, detail=detail):
                return False
            device = await self._touch_device(session, birth.device_id, site=birth.site, at=at)
            if device.status_since is None or at >= device.status_since:
                device.status = DeviceStatus.ONLINE
                device.status_since = at
                device.site = birth.site
                device.firmware_version = birth.firmware_version
                device.streams = streams
            return True

    async def record_death(self, death: DeviceDeath, *, site: str) -> bool:
        """Mark the device offline; ``False`` if this death was recorded before."""
        at = message_time(death)
        async with self._transaction("record a death") as session:
            detail = {"reason": death.reason}
            if not await self._insert_event(session, death, kind=EventKind.DEATH, site=site, detail=detail):
                return False
            device = await self._touch_device(session, death.device_id, site=site, at=at)
            if device.status_since is None or at >= device.status_since:
                device.status = DeviceStatus.OFFLINE
                device.status_since = at
                device.last_death_reason = death.reason
            return True

    async def record_health(self, health: DeviceHealth, *, site: str) -> None:
        """Keep the device's latest health report; a device that reports health is online."""
        at = message_time(health)
        report = health.model_dump(
            mode="json", exclude={"type", "schema_version", "message_id", "device_id", "timestamp"}
        )
        async with self._transaction("record health") as session:
            device = await self._touch_device(session, health.device_id, site=site, at=at)
            if device.last_health_at is None or at >= device.last_health_at:
                device.last_health = report
                device.last_health_at = at
            if device.status is not DeviceStatus.ONLINE and (device.status_since is None or at > device.status_since):
                device.status = DeviceStatus.ONLINE
                device.status_since = at

    async def record_escalation(self, escalation: Escalation, verdict: Verdict) -> bool:
        """Store an escalation with its verdict; ``False`` (and nothing changed) if it was stored before."""
        if verdict.escalation_id != escalation.message_id or verdict.device_id != escalation.device_id:
            raise ValueError("the verdict does not answer this escalation")
        edge, cloud = escalation.edge, verdict.cloud
        detail = {
            "window": escalation.window.model_dump(mode="json"),
            "priority": escalation.priority,
            "edge_probabilities": list(edge.probabilities),
            "verdict_probabilities": list(cloud.probabilities),
            "verdict_id": verdict.message_id,
        }
        columns = {
            "edge_model": edge.model,
            "edge_model_version": edge.model_version,
            "edge_label": edge.label,
            "edge_confidence": edge.confidence,
            "edge_anomaly_score": edge.anomaly_score,
            "verdict_model": cloud.model,
            "verdict_model_version": cloud.model_version,
            "verdict_label": cloud.label,
            "verdict_confidence": cloud.confidence,
            "verdict_anomaly_score": cloud.anomaly_score,
            "agrees": verdict.agrees_with_edge,
            "reasons": [reason.value for reason in escalation.reasons],
            "verdict_message": verdict.model_dump(mode="json", by_alias=True),
        }
        async with self._transaction("record an escalation") as session:
            inserted = await self._insert_event(
                session,
                escalation,
                kind=EventKind.ESCALATION,
                site=escalation.site,
                stream=escalation.window.stream,
                detail=detail,
                **columns,
            )
            if inserted:
                at = message_time(escalation)
                await self._touch_device(session, escalation.device_id, site=escalation.site, at=at)
            return inserted

    async def record_error(self, error: ErrorEvent, *, site: str) -> bool:
        """Store an error a device (or its agent) reported; ``False`` if it was stored before."""
        detail = {
            "code": error.code.value,
            "reason": error.reason,
            "topic": error.topic,
            "offending_id": error.offending_id,
            "excerpt": error.payload_excerpt,
        }
        async with self._transaction("record an error") as session:
            inserted = await self._insert_event(
                session, error, kind=EventKind.ERROR, site=site, stream=error.stream, detail=detail
            )
            if inserted:
                await self._touch_device(session, error.device_id, site=site, at=message_time(error))
            return inserted

    def _insert(self, model: type[Base]) -> sqlite.Insert | postgresql.Insert:
        if self.dialect == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)

    async def _insert_event(
        self,
        session: AsyncSession,
        message: Message,
        *,
        kind: EventKind,
        site: str,
        detail: dict[str, Any],
        stream: str | None = None,
        **columns: Any,
    ) -> bool:
        statement = (
            self._insert(Event)
            .values(
                message_id=message.message_id,
                device_id=message.device_id,
                site=site,
                kind=kind,
                stream=stream,
                occurred_at=message_time(message),
                received_at=self._clock(),
                detail=detail,
                **columns,
            )
            .on_conflict_do_nothing(index_elements=["message_id"])
            .returning(Event.id)
        )
        result = await session.execute(statement)
        return result.scalar_one_or_none() is not None

    async def _touch_device(self, session: AsyncSession, device_id: str, *, site: str, at: datetime) -> Device:
        """The device's row, locked for update, created if unknown; ``last_seen`` moved forward to ``at``."""
        # Insert-if-absent first, so that two workers meeting a new device at once do not collide.
        await session.execute(
            self._insert(Device)
            .values(
                device_id=device_id,
                site=site,
                status=DeviceStatus.UNKNOWN,
                first_seen=at,
                last_seen=at,
                streams=[],
            )
            .on_conflict_do_nothing(index_elements=["device_id"])
        )
        device = await session.get(Device, device_id, with_for_update=True, populate_existing=True)
        if device is None:  # pragma: no cover - the row was inserted or existed a statement ago
            raise StoreError(f"device {device_id!r} vanished while being updated")
        if at > device.last_seen:
            device.last_seen = at
            device.site = site
        device.first_seen = min(device.first_seen, at)
        return device

    # Reading ----------------------------------------------------------------------------------------

    async def stored_verdict(self, escalation_id: str) -> Verdict | None:
        """The verdict stored with escalation ``escalation_id``, or ``None`` if it was never stored."""
        async with self._transaction("read a verdict") as session:
            stored = await session.scalar(
                select(Event.verdict_message).where(
                    Event.message_id == escalation_id, Event.kind == EventKind.ESCALATION
                )
            )
        if stored is None:
            return None
        try:
            return Verdict.model_validate(stored)
        except ValidationError as exc:
            raise StoreError(f"the stored verdict of escalation {escalation_id!r} is unreadable: {exc}") from exc

    async def get_device(self, device_id: str) -> Device | None:
        async with self._transaction("read a device") as session:
            return await session.get(Device, device_id)

    async def list_devices(self, *, site: str | None = None, limit: int = 100, offset: int = 0) -> Page[Device]:
        """Devices ordered by id, optionally of one site."""
        conditions = [Device.site == site] if site is not None else []
        async with self._transaction("list devices") as session:
            rows = await session.scalars(
                select(Device).where(*conditions).order_by(Device.device_id).limit(limit).offset(offset)
            )
            total = await session.scalar(select(func.count()).select_from(Device).where(*conditions))
            return Page(items=list(rows), total=total or 0)

    async def list_events(
        self,
        *,
        device: str | None = None,
        site: str | None = None,
        kind: EventKind | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page[Event]:
        """Events newest first (by the time they occurred); ``since`` is inclusive, ``until`` exclusive."""
        conditions: list[ColumnElement[bool]] = []
        if device is not None:
            conditions.append(Event.device_id == device)
        if site is not None:
            conditions.append(Event.site == site)
        if kind is not None:
            conditions.append(Event.kind == kind)
        if since is not None:
            conditions.append(Event.occurred_at >= since)
        if until is not None:
            conditions.append(Event.occurred_at < until)
        async with self._transaction("list events") as session:
            rows = await session.scalars(
                select(Event)
                .where(*conditions)
                .order_by(Event.occurred_at.desc(), Event.id.desc())
                .limit(limit)
                .offset(offset)
            )
            total = await session.scalar(select(func.count()).select_from(Event).where(*conditions))
            return Page(items=list(rows), total=total or 0)

    async def stats(self) -> StoreStats:
        async with self._transaction("compute statistics") as session:
            by_status = {
                str(status): count
                for status, count in await session.execute(select(Device.status, func.count()).group_by(Device.status))
            }
            by_kind = {
                str(kind): count
                for kind, count in await session.execute(select(Event.kind, func.count()).group_by(Event.kind))
            }
            agreement = {
                agrees: count
                for agrees, count in await session.execute(
                    select(Event.agrees, func.count())
                    .where(Event.kind == EventKind.ESCALATION, Event.agrees.is_not(None))
                    .group_by(Event.agrees)
                )
            }
        return StoreStats(
            devices=sum(by_status.values()),
            devices_by_status=by_status,
            events=sum(by_kind.values()),
            events_by_kind=by_kind,
            escalations=by_kind.get(EventKind.ESCALATION.value, 0),
            verdicts_agreeing=agreement.get(True, 0),
            verdicts_disagreeing=agreement.get(False, 0),
        )
