"""The state database on both engines it supports: SQLite under data_dir and a real PostgreSQL
(127.0.0.1:5432, a fresh database per test). Migrations, URLs, and the audit trail."""

from __future__ import annotations

import json
import math
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from server import jsontext
from server.state import Audit, InvalidAudit, StateDB, StateError, StateUnavailable
from server.state.db import alembic_config, normalise_url
from server.state.models import Base
from server.state.reviews import ReviewStore

# -- URLs and settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u:p@db:5432/kb", "postgresql+psycopg"),
        ("postgres://u@db/kb", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db/kb", "postgresql+psycopg"),
        ("sqlite:////tmp/x.sqlite3", "sqlite+pysqlite"),
    ],
)
def test_urls_are_pinned_to_their_driver(given: str, driver: str) -> None:
    assert normalise_url(given).drivername == driver


@pytest.mark.parametrize("given", ["mysql://u@db/kb", "postgresql+asyncpg://u@db/kb", "not a url"])
def test_unsupported_urls_name_the_supported_ones(given: str) -> None:
    with pytest.raises(StateError, match=r"sqlite:///PATH or postgresql://"):
        normalise_url(given)


def test_default_is_a_sqlite_file_under_data_dir(tmp_path: Path) -> None:
    db = StateDB.from_settings(SimpleNamespace(data_dir=tmp_path / "kb"))
    try:
        db.migrate()
        assert db.dialect == "sqlite"
        assert (tmp_path / "kb" / "state.sqlite3").is_file()
    finally:
        db.dispose()


def test_database_url_setting_wins(tmp_path: Path) -> None:
    settings = SimpleNamespace(data_dir=tmp_path / "kb", database_url="postgresql://postgres@127.0.0.1:5432/test")
    db = StateDB.from_settings(settings)
    assert db.url.drivername == "postgresql+psycopg" and db.url.database == "test"
    db.dispose()


def test_unreachable_database_is_state_unavailable_without_the_password() -> None:
    db = StateDB("postgresql://postgres:hunter2@127.0.0.1:1/nothing")
    with pytest.raises(StateUnavailable, match=r"127\.0\.0\.1:1/nothing is unavailable") as caught:
        db.migrate()
    assert "hunter2" not in str(caught.value)
    db.dispose()


# -- migrations ----------------------------------------------------------------------------------


def test_migrations_run_from_empty_to_head_and_back(db_url: str) -> None:
    db = StateDB(db_url)
    try:
        assert db.current_revision() is None
        db.migrate()
        assert db.current_revision() == StateDB.head_revision() == "0003"
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {"api_keys", "audit_records", "alembic_version", "answers", "reviews", "curated_answers"} <= tables
        db.migrate()  # a second start-up finds nothing to do
        assert db.current_revision() == "0003"
        with db.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert not {"api_keys", "audit_records"} & set(sa.inspect(db.engine).get_table_names())
        db.migrate()
        assert db.current_revision() == "0003"
    finally:
        db.dispose()


def test_models_match_the_migrations(state_db: StateDB) -> None:
    """A model changed without a new revision shows up here as a difference."""
    with state_db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_processes_starting_together_migrate_once(db_url: str) -> None:
    """Several workers of `serve --workers N` migrate at the same moment; the lock lets one do it."""
    dbs = [StateDB(db_url) for _ in range(3)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(dbs))

    def start(db: StateDB) -> None:
        barrier.wait()
        try:
            db.migrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert all(db.current_revision() == StateDB.head_revision() for db in dbs)
    finally:
        for db in dbs:
            db.dispose()


# -- audit ---------------------------------------------------------------------------------------


def test_audit_records_and_lists_newest_first(state_db: StateDB) -> None:
    audit = Audit(state_db)
    first = audit.record("document.delete", "ci", collection="docs", document_id="abc123", request_id="req-1")
    second = audit.record("cache.clear", "ops", detail={"removed": 12, "why": ["test", "ü"]})
    assert first.at.tzinfo is not None and first.id < second.id
    events = audit.list()
    assert [e.action for e in events] == ["cache.clear", "document.delete"]
    assert events[0].detail == {"removed": 12, "why": ["test", "ü"]}
    assert events[1].as_dict() == {
        "id": first.id,
        "at": first.at.isoformat(),
        "action": "document.delete",
        "key_name": "ci",
        "collection": "docs",
        "document_id": "abc123",
        "request_id": "req-1",
        "detail": None,
    }


def test_audit_filters_by_action_key_since_and_limit(state_db: StateDB) -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    times = iter([now - timedelta(hours=2), now - timedelta(hours=1), now, now + timedelta(minutes=1)])
    audit = Audit(state_db, clock=lambda: next(times))
    audit.record("key.create", None, detail={"key": "ci"})
    audit.record("document.delete", "ci", collection="docs")
    audit.record("document.delete", "ops", collection="docs")
    audit.record("cache.clear", "ops")
    assert [e.action for e in audit.list(limit=2)] == ["cache.clear", "document.delete"]
    assert [e.key_name for e in audit.list(action="document.delete")] == ["ops", "ci"]
    assert [e.action for e in audit.list(key_name="ops")] == ["cache.clear", "document.delete"]
    assert [e.action for e in audit.list(since=now)] == ["cache.clear", "document.delete"]
    naive_utc = (now - timedelta(hours=1)).replace(tzinfo=None)
    assert len(audit.list(since=naive_utc)) == 3
    same_instant_elsewhere = now.astimezone(timezone(timedelta(hours=2)))
    assert len(audit.list(since=same_instant_elsewhere)) == 2
    assert audit.list(action="nothing.like.this") == []


BAD_RECORDS: list[tuple[str, dict[str, Any], str]] = [
    ("Delete Everything", {}, "invalid audit action"),
    ("x" * 65, {}, "invalid audit action"),
    ("document.delete", {"detail": {"when": datetime.now(UTC)}}, "JSON-serialisable"),
    ("document.delete", {"collection": "c" * 129}, "collection is longer than 128"),
]


def test_bad_audit_records_are_refused_clearly(state_db: StateDB) -> None:
    audit = Audit(state_db)
    for action, extra, message in BAD_RECORDS:
        with pytest.raises(InvalidAudit, match=message):
            audit.record(action, "ci", **extra)
    assert audit.list() == []


def test_audit_limit_is_bounded(state_db: StateDB) -> None:
    with pytest.raises(InvalidAudit, match="between 1 and 10000"):
        Audit(state_db).list(limit=0)


# -- JSON columns (orjson, server/jsontext.py) -------------------------------------------------------------------


def test_json_columns_read_back_what_was_written(state_db: StateDB) -> None:
    store = ReviewStore(state_db)
    citations: list[Any] = [{"n": 1, "snippet": "Café — “quoted” ✓", "score": 0.5, "page": None}]
    detail = {"passages": [{"n": 1, "text_hash": None}], "retriever": "hybrid", "big": 2**70}
    row = {
        "request_id": "req-json", "at": datetime.now(UTC), "key_name": None, "collection": "kb",
        "question": "Où est le café ?", "answer": "Au rez-de-chaussée [1].", "citations": citations,
        "chunk_ids": ["c1"], "prompt": "answer:1", "provider": "extractive", "model": "extractive",
        "confidence": 0.9, "origin": "generated", "abstained": False, "detail": detail,
    }  # fmt: skip
    store.record_answers([row, {**row, "answer": "a second row with the same id is ignored"}])
    stored = store.answer("req-json")
    assert stored is not None and stored.answer == "Au rez-de-chaussée [1]."
    assert stored.citations == citations and stored.chunk_ids == ["c1"]
    assert stored.detail == detail  # an integer past 64 bits is written by json.dumps instead


def test_json_text_is_json() -> None:
    value = {"a": [1, 2.5, None, True], "é": "ü ✓", 3: "an integer key"}
    assert json.loads(jsontext.dumps(value)) == {"a": [1, 2.5, None, True], "é": "ü ✓", "3": "an integer key"}
    assert json.loads(jsontext.dumps({"n": math.nan, "i": math.inf})) == {"n": None, "i": None}
    assert json.loads(jsontext.dumps({"big": 2**70})) == {"big": 2**70}
