"""The state database for a command: opened from the current settings, migrated first (so every command
works before the server has ever started), and closed when the command is done."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ingest.cli import exit_with_error
from ingest.config import get_settings
from ingest.errors import RagkbError

from ..state import StateDB


@contextmanager
def open_state(failure: str = "{error}") -> Iterator[StateDB]:
    """The migrated state database. Every ragkb error in the block becomes `failure` (with `{error}` in it)
    as a message, and exit status 2."""
    db: StateDB | None = None
    try:
        db = StateDB.from_settings(get_settings())
        db.migrate()
        yield db
    except RagkbError as exc:
        raise exit_with_error(failure.format(error=exc)) from None
    finally:
        if db is not None:
            db.dispose()
