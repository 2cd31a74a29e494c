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
import math
from collections.abc import AsyncIterator, Callable, Sequence
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
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    bindparam,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import Select
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


class Scope(enum.StrEnum):
    """What an API token may do. ``admin`` ⊃ ``operator`` ⊃ ``read-only``; ``device`` acts as one device only."""

    ADMIN = "admin"
    OPERATOR = "operator"
    READ_ONLY = "read-only"
    DEVICE = "device"


class RolloutState(enum.StrEnum):
    """States of a staged rollout; see :mod:`cloud_hub.rollout` for the transitions."""

    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


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


# INTEGER on SQLite, so that the column is the rowid and autoincrements.
_ROW_ID = BigInteger().with_variant(Integer, "sqlite")


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
    device_group: Mapped[str] = mapped_column(
        String(64), index=True, comment="The group rollouts and drift detection address; the site unless registered."
    )
    registered_at: Mapped[datetime | None] = mapped_column(comment="When an operator registered it (POST /devices).")
    edge_model: Mapped[str | None] = mapped_column(String(64), comment="The edge model of its latest escalation.")
    edge_model_version: Mapped[str | None] = mapped_column(String(64))
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
        Index("ix_events_edge_version_occurred", "edge_model", "edge_model_version", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
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
    input_mean: Mapped[float | None] = mapped_column(comment="Mean of the escalated window (drift detection).")
    input_std: Mapped[float | None] = mapped_column(comment="Standard deviation of the escalated window.")
    reasons: Mapped[list[str]] = mapped_column(default=list)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    verdict_message: Mapped[dict[str, Any] | None] = mapped_column(
        comment="The verdict as sent (wire names), sent again when the escalation arrives again."
    )


class AgreementStat(Base):
    """How often the full model agreed with one edge model version, per device group (kept as verdicts are stored)."""

    __tablename__ = "agreement_stats"

    edge_model: Mapped[str] = mapped_column(String(64), primary_key=True)
    edge_model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_group: Mapped[str] = mapped_column(String(64), primary_key=True)
    judged: Mapped[int] = mapped_column(BigInteger)
    agreed: Mapped[int] = mapped_column(BigInteger)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]


class ApiToken(Base):
    """An API token, stored as the sha256 of its secret (see :mod:`cloud_hub.auth` for why sha256 suffices)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[Scope] = mapped_column(_enum_column(Scope))
    device_id: Mapped[str | None] = mapped_column(String(64), comment="The one device a device token acts as.")
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class AuditEntry(Base):
    """One privileged action: who (token), what (method and route), on what, and how it ended."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    token_id: Mapped[int | None]
    scope: Mapped[str | None] = mapped_column(String(16))
    device_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(512))
    status: Mapped[int]
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ModelVersion(Base):
    """A model artifact in the registry with its (verified) manifest and card."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_models_name_version"),)

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    task: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    manifest: Mapped[dict[str, Any]]
    card: Mapped[dict[str, Any] | None]
    artifact: Mapped[bytes] = mapped_column(LargeBinary)
    uploaded_at: Mapped[datetime]
    uploaded_by: Mapped[int | None] = mapped_column(comment="The API token that uploaded it.")
    anchor_contract: Mapped[str | None] = mapped_column(
        String(42), comment="The notary contract the sha256 is anchored on; null: not anchored."
    )
    anchor_tx: Mapped[str | None] = mapped_column(
        String(66), comment="The anchoring transaction; null when it was anchored by an earlier attempt."
    )
    anchor_block: Mapped[int | None] = mapped_column(BigInteger)


class Rollout(Base):
    """A staged rollout of one model version to one device group."""

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_group_state", "device_group", "state"),)

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    incumbent_version: Mapped[str | None] = mapped_column(String(64))
    device_group: Mapped[str] = mapped_column(String(64))
    canary_percent: Mapped[float] = mapped_column(Float)
    min_samples: Mapped[int]
    tolerance: Mapped[float] = mapped_column(Float)
    state: Mapped[RolloutState] = mapped_column(_enum_column(RolloutState))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RolloutTransition(Base):
    """One change of a rollout's state, with its reason and the figures behind it."""

    __tablename__ = "rollout_transitions"
    __table_args__ = (Index("ix_rollout_transitions_rollout", "rollout_id", "id"),)

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(_ROW_ID, ForeignKey("rollouts.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    from_state: Mapped[RolloutState | None] = mapped_column(_enum_column(RolloutState))
    to_state: Mapped[RolloutState] = mapped_column(_enum_column(RolloutState))
    reason: Mapped[str] = mapped_column(String(512))
    actor: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DriftReference(Base):
    """The reference sample of one metric, per device group and edge model version."""

    __tablename__ = "drift_references"
    __table_args__ = (
        UniqueConstraint("device_group", "model", "model_version", "metric", name="uq_drift_references_key"),
    )

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    device_group: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32), comment="'first_observations' or 'manifest'.")
    sample: Mapped[list[float]] = mapped_column(JSON)
    created_at: Mapped[datetime]


class DriftAlert(Base):
    """A detected drift: the live distribution of a metric moved away from its reference."""

    __tablename__ = "drift_alerts"
    __table_args__ = (Index("ix_drift_alerts_key_at", "device_group", "model", "model_version", "at"),)

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    device_group: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(32))
    psi: Mapped[float] = mapped_column(Float)
    ks: Mapped[float] = mapped_column(Float)
    ks_p_value: Mapped[float] = mapped_column(Float)
    threshold_psi: Mapped[float] = mapped_column(Float)
    live_count: Mapped[int]
    reference_count: Mapped[int]
    live_last_id: Mapped[int] = mapped_column(_ROW_ID, comment="Newest event of the live window.")


class RetrainingTrigger(Base):
    """A request to retrain a model for a device group, left for the federated-learning coordinator."""

    __tablename__ = "retraining_triggers"
    __table_args__ = (Index("ix_retraining_triggers_open", "consumed_at", "id"),)

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    device_group: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(512))
    alert_id: Mapped[int | None] = mapped_column(_ROW_ID, ForeignKey("drift_alerts.id", ondelete="SET NULL"))
    consumed_at: Mapped[datetime | None]
    consumed_by: Mapped[str | None] = mapped_column(String(64))


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing and the number of rows matching its filters."""

    items: list[T]
    total: int


async def page_of(
    session: AsyncSession,
    query: Select[Any],
    entity: type[Any],
    conditions: Sequence[ColumnElement[bool]],
    *,
    limit: int,
    offset: int,
) -> Page[Any]:
    """The rows of ``query`` (ordered) matching ``conditions``, one page of them, and how many match in all."""
    rows = await session.scalars(query.where(*conditions).limit(limit).offset(offset))
    total = await session.scalar(select(func.count()).select_from(entity).where(*conditions))
    return Page(items=list(rows), total=total or 0)


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
    async def transaction(self, action: str) -> AsyncIterator[AsyncSession]:
        """A session in a transaction for the hub's services; database failures become :class:`StoreError`
        saying that the store could not do ``action``."""
        async with self._transaction(action) as session:
            yield session

    @asynccontextmanager
    async def _transaction(self, action: str) -> AsyncIterator[AsyncSession]:
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"could not {action}: {_reason(exc)}") from exc

    async def init_schema(self) -> None:
        """Bring the schema to the newest Alembic migration (``upgrade head``), from empty or from older."""
        from cloud_hub.migrate import upgrade  # Alembic is needed only at start-up

        await upgrade(self._engine)

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
        [inserted] = await self.record_escalations([(escalation, verdict)])
        return inserted

    async def record_escalations(self, judged: Sequence[tuple[Escalation, Verdict]]) -> list[bool]:
        """Store escalations with their verdicts in one transaction; per pair, ``False`` if stored before.

        One multi-row insert (``ON CONFLICT DO NOTHING``), one update per device, one upsert per
        agreement counter: the cost of a batch grows far slower than its size.
        """
        if not judged:
            return []
        rows = []
        for escalation, verdict in judged:
            if verdict.escalation_id != escalation.message_id or verdict.device_id != escalation.device_id:
                raise ValueError("the verdict does not answer this escalation")
            rows.append(self._escalation_row(escalation, verdict))
        async with self._transaction("record escalations") as session:
            connection = await session.connection()
            # executemany with RETURNING: one cached statement, sent as multi-row inserts.
            result = await connection.execute(
                self._insert(Event).on_conflict_do_nothing(index_elements=["message_id"]).returning(Event.message_id),
                rows,
            )
            inserted_ids = set(result.scalars())
            fresh: dict[str, tuple[Escalation, Verdict]] = {}
            for escalation, verdict in judged:
                if escalation.message_id in inserted_ids:
                    fresh.setdefault(escalation.message_id, (escalation, verdict))
            if fresh:
                groups = await self._touch_devices(connection, [escalation for escalation, _ in fresh.values()])
                await self._count_agreement(connection, list(fresh.values()), groups)
        outcome: list[bool] = []
        for escalation, _ in judged:
            outcome.append(escalation.message_id in inserted_ids)
            inserted_ids.discard(escalation.message_id)  # a copy later in the same batch was not stored
        return outcome

    async def _touch_devices(self, connection: AsyncConnection, escalations: list[Escalation]) -> dict[str, str]:
        """Create unknown devices and move ``last_seen`` (and the edge model) forward, a few statements for
        the whole batch; return each device's group."""
        latest: dict[str, Escalation] = {}
        earliest: dict[str, datetime] = {}
        for escalation in escalations:
            known = latest.get(escalation.device_id)
            if known is None or escalation.timestamp > known.timestamp:
                latest[escalation.device_id] = escalation
            at = message_time(escalation)
            earliest[escalation.device_id] = min(earliest.get(escalation.device_id, at), at)
        ids = sorted(latest)  # a fixed lock order, so that two workers cannot deadlock
        await connection.execute(
            self._insert(Device).on_conflict_do_nothing(index_elements=["device_id"]),
            [
                {
                    "device_id": device_id,
                    "site": latest[device_id].site,
                    "device_group": latest[device_id].site,
                    "status": DeviceStatus.UNKNOWN,
                    "first_seen": earliest[device_id],
                    "last_seen": earliest[device_id],
                    "streams": [],
                }
                for device_id in ids
            ],
        )
        query = (
            select(
                Device.device_id,
                Device.device_group,
                Device.site,
                Device.first_seen,
                Device.last_seen,
                Device.edge_model,
                Device.edge_model_version,
            )
            .where(Device.device_id.in_(ids))
            .order_by(Device.device_id)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update()
        current = {row.device_id: row for row in await connection.execute(query)}
        updates = []
        for device_id in ids:
            row, escalation = current[device_id], latest[device_id]
            at = message_time(escalation)
            newer = at > row.last_seen
            updates.append(
                {
                    "key": device_id,
                    "site": escalation.site if newer else row.site,
                    "first_seen": min(row.first_seen, earliest[device_id]),
                    "last_seen": at if newer else row.last_seen,
                    "edge_model": escalation.edge.model if at >= row.last_seen else row.edge_model,
                    "edge_model_version": escalation.edge.model_version
                    if at >= row.last_seen
                    else row.edge_model_version,
                }
            )
        await connection.execute(
            update(Device)
            .where(Device.device_id == bindparam("key"))
            .values(
                site=bindparam("site"),
                first_seen=bindparam("first_seen"),
                last_seen=bindparam("last_seen"),
                edge_model=bindparam("edge_model"),
                edge_model_version=bindparam("edge_model_version"),
            ),
            updates,
        )
        return {device_id: current[device_id].device_group for device_id in ids}

    async def _count_agreement(
        self, connection: AsyncConnection, judged: list[tuple[Escalation, Verdict]], groups: dict[str, str]
    ) -> None:
        counts: dict[tuple[str, str, str], list[Any]] = {}
        for escalation, verdict in judged:
            at = message_time(escalation)
            key = (escalation.edge.model, escalation.edge.model_version, groups[escalation.device_id])
            entry = counts.setdefault(key, [0, 0, at, at])
            entry[0] += 1
            entry[1] += int(verdict.agrees_with_edge)
            entry[2], entry[3] = min(entry[2], at), max(entry[3], at)
        statement = self._insert(AgreementStat)
        excluded = statement.excluded
        earliest = func.min if self.dialect == "sqlite" else func.least
        latest = func.max if self.dialect == "sqlite" else func.greatest
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=["edge_model", "edge_model_version", "device_group"],
                set_={
                    "judged": AgreementStat.judged + excluded.judged,
                    "agreed": AgreementStat.agreed + excluded.agreed,
                    "first_at": earliest(AgreementStat.first_at, excluded.first_at),
                    "last_at": latest(AgreementStat.last_at, excluded.last_at),
                },
            ),
            [
                {
                    "edge_model": model,
                    "edge_model_version": version,
                    "device_group": group,
                    "judged": judged_count,
                    "agreed": agreed,
                    "first_at": first,
                    "last_at": last,
                }
                for (model, version, group), (judged_count, agreed, first, last) in sorted(counts.items())
            ],
        )

    def _escalation_row(self, escalation: Escalation, verdict: Verdict) -> dict[str, Any]:
        edge, cloud = escalation.edge, verdict.cloud
        values = escalation.window.values
        mean = math.fsum(values) / len(values)
        std = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / len(values))
        return {
            "message_id": escalation.message_id,
            "device_id": escalation.device_id,
            "site": escalation.site,
            "kind": EventKind.ESCALATION,
            "stream": escalation.window.stream,
            "occurred_at": message_time(escalation),
            "received_at": self._clock(),
            "detail": {
                "window": escalation.window.model_dump(mode="json"),
                "priority": escalation.priority,
                "edge_probabilities": list(edge.probabilities),
                "verdict_probabilities": list(cloud.probabilities),
                "verdict_id": verdict.message_id,
            },
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
            "input_mean": mean,
            "input_std": std,
            "reasons": [reason.value for reason in escalation.reasons],
            "verdict_message": verdict.model_dump(mode="json", by_alias=True),
        }

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
                device_group=site,
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

    async def stored_verdicts(self, escalation_ids: Sequence[str]) -> dict[str, Verdict]:
        """The stored verdicts of those of ``escalation_ids`` that were stored, in one query."""
        if not escalation_ids:
            return {}
        async with self._transaction("read verdicts") as session:
            rows = await session.execute(
                select(Event.message_id, Event.verdict_message).where(
                    Event.message_id.in_(sorted(set(escalation_ids))), Event.kind == EventKind.ESCALATION
                )
            )
            stored = [(message_id, verdict) for message_id, verdict in rows if verdict is not None]
        try:
            return {message_id: Verdict.model_validate(verdict) for message_id, verdict in stored}
        except ValidationError as exc:
            raise StoreError(f"a stored verdict is unreadable: {exc}") from exc

    async def get_device(self, device_id: str) -> Device | None:
        async with self._transaction("read a device") as session:
            return await session.get(Device, device_id)

    async def register_device(self, device_id: str, *, site: str, device_group: str | None = None) -> Device:
        """Register a device ahead of (or after) its first message, in ``device_group`` (its site by default)."""
        now = self._clock()
        async with self._transaction("register a device") as session:
            await session.execute(
                self._insert(Device)
                .values(
                    device_id=device_id,
                    site=site,
                    device_group=device_group or site,
                    status=DeviceStatus.UNKNOWN,
                    first_seen=now,
                    last_seen=now,
                    streams=[],
                )
                .on_conflict_do_nothing(index_elements=["device_id"])
            )
            device = await session.get(Device, device_id, with_for_update=True, populate_existing=True)
            if device is None:  # pragma: no cover - the row was inserted or existed a statement ago
                raise StoreError(f"device {device_id!r} vanished while being registered")
            device.site = site
            device.device_group = device_group or site
            if device.registered_at is None:
                device.registered_at = now
            return device

    async def list_devices(
        self, *, site: str | None = None, group: str | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Device]:
        """Devices ordered by id, optionally of one site and one group."""
        conditions: list[ColumnElement[bool]] = []
        if site is not None:
            conditions.append(Device.site == site)
        if group is not None:
            conditions.append(Device.device_group == group)
        async with self._transaction("list devices") as session:
            query = select(Device).order_by(Device.device_id)
            return await page_of(session, query, Device, conditions, limit=limit, offset=offset)

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
            query = select(Event).order_by(Event.occurred_at.desc(), Event.id.desc())
            return await page_of(session, query, Event, conditions, limit=limit, offset=offset)

    async def agreement(
        self, *, model: str | None = None, version: str | None = None, group: str | None = None
    ) -> list[AgreementStat]:
        """Agreement counters per edge model version and device group."""
        conditions: list[ColumnElement[bool]] = []
        if model is not None:
            conditions.append(AgreementStat.edge_model == model)
        if version is not None:
            conditions.append(AgreementStat.edge_model_version == version)
        if group is not None:
            conditions.append(AgreementStat.device_group == group)
        async with self._transaction("read agreement statistics") as session:
            rows = await session.scalars(
                select(AgreementStat)
                .where(*conditions)
                .order_by(AgreementStat.edge_model, AgreementStat.edge_model_version, AgreementStat.device_group)
            )
            return list(rows)

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
