"""Alembic's environment for the hub: runs on the connection the hub hands over (see cloud_hub.migrate).

From the command line, ``alembic -x url=sqlite:///hub.db ...`` works too (a synchronous URL).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from cloud_hub.store import Base

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=Base.metadata,
        compare_type=True,
        render_as_batch=True,  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url is None:
        raise SystemExit("give the database as: alembic -x url=<synchronous SQLAlchemy URL> ...")
    engine = create_engine(url)
    with engine.begin() as opened:
        _run(opened)
    engine.dispose()
