"""The state database: one engine for everything that is not chunks or cache (keys, audit, and later
feedback, reviews and curated answers), migrated to the newest schema by Alembic at start-up.

SQLite under `data_dir` is the embedded default; `RAGKB_DATABASE_URL=postgresql://...` shares one
database between server processes and hosts. The schema and every query are SQLAlchemy's, so both
engines run the same code; the only per-engine lines here are connection set-up (SQLite pragmas) and
the lock that keeps two processes from migrating at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from ingest.errors import RagkbError

from .. import jsontext

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
STATE_FILE = "state.sqlite3"
SUPPORTED_URLS = "sqlite:///PATH or postgresql://USER@HOST:PORT/DB"

# Any fixed 64-bit number: the PostgreSQL advisory lock that serialises start-up migrations.
_PG_MIGRATION_LOCK = int.from_bytes(hashlib.sha256(b"ragkb-state-migrations").digest()[:8], "big", signed=True)


class StateError(RagkbError):
    """The state database URL or schema is not usable; the message says how to fix it."""


class StateUnavailable(RagkbError):
    """The state database could not be reached (maps to 503 like the other backing services)."""


def normalise_url(url: str | URL) -> URL:
    """Parse a database URL and pin the driver: `postgresql://` and `postgres://` mean psycopg 3
    (`postgresql+psycopg://`), so users write the URL every other PostgreSQL tool accepts."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise StateError(f"invalid database URL {str(url)!r}: use {SUPPORTED_URLS}") from None
    driver = parsed.drivername
    if driver in ("postgresql", "postgres", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if driver in ("sqlite", "sqlite+pysqlite"):
        return parsed.set(drivername="sqlite+pysqlite")
    raise StateError(f"unsupported database URL scheme {driver!r}: use {SUPPORTED_URLS}")


def sqlite_url(path: Path) -> URL:
    return URL.create("sqlite+pysqlite", database=str(path))


class StateDB:
    """One engine and session factory per process; `migrate()` once at start-up, `dispose()` at exit."""

    def __init__(self, url: str | URL) -> None:
        self.url = normalise_url(url)
        self.engine = _create_engine(self.url)
        self.sessions: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Any) -> StateDB:
        """`settings.database_url` when set, else `<data_dir>/state.sqlite3`."""
        url: str | None = getattr(settings, "database_url", None)
        return cls(url or sqlite_url(Path(settings.data_dir) / STATE_FILE))

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for messages and logs."""
        return self.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back on an error.
        Connection failures become `StateUnavailable` naming the database."""
        try:
            with self.sessions.begin() as session:
                yield session
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A bare connection in one transaction, for the few hot reads where the ORM's overhead shows."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise self._unavailable(exc) from exc

    def migrate(self) -> None:
        """Bring the schema to the newest revision. Safe to call from several processes at once
        (`serve --workers N`): the first migrates under a lock, the others then find nothing to do."""
        try:
            with self._migration_lock(), self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
                command.upgrade(alembic_config(conn), "head")
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise self._unavailable(exc) from exc

    def current_revision(self) -> str | None:
        with self.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @staticmethod
    def head_revision() -> str | None:
        return ScriptDirectory.from_config(alembic_config()).get_current_head()

    def dispose(self) -> None:
        self.engine.dispose()

    def _unavailable(self, exc: Exception) -> StateUnavailable:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        return StateUnavailable(f"state database {self.display_url} is unavailable: {reason}")

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """SQLite has no advisory locks, so processes sharing the file take a lock file beside it."""
        database = self.url.database
        if self.dialect != "sqlite" or not database or database == ":memory:":
            yield
            return
        with FileLock(f"{database}.migrate.lock", timeout=60):
            yield


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration without an alembic.ini: the scripts sit inside the package, so
    migrations run the same from a checkout and from an installed wheel. `env.py` migrates the
    connection handed over here (in its transaction) rather than opening its own."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _create_engine(url: URL) -> Engine:
    # JSON columns written with orjson: an answer record's three JSON columns cost ~20 us with json.dumps,
    # most of a row's cost on the background writer (which shares the GIL with the requests)
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, json_serializer=jsontext.dumps)
    database = url.database
    if not database or database == ":memory:":
        # One shared connection, or every pooled connection would see its own empty database.
        engine = sa.create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}, json_serializer=jsontext.dumps
        )
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, json_serializer=jsontext.dumps
        )
    _sqlite_transactions(engine, wal=bool(database) and database != ":memory:")
    return engine


def _sqlite_transactions(engine: Engine, *, wal: bool) -> None:
    """Give SQLite real transactions: the sqlite3 module otherwise issues BEGIN only before DML, so
    a migration's DDL would commit piecemeal. WAL lets readers (every authenticated request) go on
    while a writer (an audit record) commits; foreign keys are off in SQLite unless asked for."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")
