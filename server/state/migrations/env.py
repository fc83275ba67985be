"""Alembic's entry point: migrates the connection `StateDB.migrate()` hands over, in its transaction."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from server.state.models import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection) or context.is_offline_mode():
    raise RuntimeError("state migrations run through server.state.db.StateDB.migrate(), with a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # migrations that work on SQLite too, which alters a table by copying it
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
