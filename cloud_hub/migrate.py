"""Schema migrations with Alembic: the hub runs ``upgrade head`` at start.

The migration scripts ship inside the package (``cloud_hub/migrations``), so an installed hub can
migrate its database without a checkout or an ``alembic.ini``. On PostgreSQL an advisory lock keeps
several hub workers that start together from migrating at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud_hub.errors import StoreError

if TYPE_CHECKING:
    from cloud_hub.store import Store

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x6564_6765_6875_62  # "edgehub": the advisory lock of the hub's migrations


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration over the shipped scripts, bound to ``connection`` when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise StoreError("the hub's migration scripts are missing")
    return head


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    command.upgrade(alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database behind ``engine`` to the newest revision; :class:`StoreError` if that fails."""
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"could not migrate the schema: {str(getattr(exc, 'orig', exc)).splitlines()[0]}") from exc


async def current_revision(store: Store) -> str | None:
    """The revision the database behind ``store`` is at (``None`` before the first migration)."""

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    try:
        async with store.engine.connect() as connection:
            return await connection.run_sync(read)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"could not read the schema's revision: {exc}") from exc
