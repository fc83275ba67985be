"""The same pipeline against a real `chroma run` server (RAGKB_CHROMA_URL), started and stopped here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from ingest.store import ChromaStore
from ingest.vectorstore import StoreUnavailable

from .servers import ChromaServer, free_port


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ChromaServer(tmp_path_factory.mktemp("chroma-server")) as url:
        yield url


@pytest.mark.slow
def test_ingest_query_and_delete_through_a_chroma_server(
    chroma_server: str, tmp_path: Path, embedder: Embedder
) -> None:
    settings = Settings(chroma_url=chroma_server, data_dir=tmp_path / "unused")
    ingestor = Ingestor(settings, embedder=embedder)
    (tmp_path / "ops.md").write_text("# Ops\n\nThe nightly backup copies the data directory to S3.\n")
    (tmp_path / "faq.txt").write_text("Citations point at the chunks that were retrieved.\n")
    report = ingestor.ingest_paths([tmp_path / "ops.md", tmp_path / "faq.txt"], collection="remote")
    assert (report.added, report.failed) == (2, 0)
    assert not settings.chroma_path.exists(), "server mode must not create an embedded store"
    assert len(list((tmp_path / "unused" / "blobs" / "sha256").glob("*/*"))) == 2, "originals kept in the data dir"

    # a second client (another process in production) sees the same data
    other = ChromaStore(settings)
    collection = other.open("remote", model=embedder.identity, dimension=embedder.dimension, create=False)
    hits = other.query(collection, embedder.embed_query("where do backups go?"), k=2)
    assert hits[0].metadata["source"] == str((tmp_path / "ops.md").resolve())
    assert 0 < hits[0].score <= 1

    again = ingestor.ingest_paths([tmp_path / "ops.md", tmp_path / "faq.txt"], collection="remote")
    assert again.unchanged == 2
    _, removed = ingestor.delete("remote", str((tmp_path / "faq.txt").resolve()))
    assert removed == 1
    assert [d.source for d in other.documents(collection)] == [str((tmp_path / "ops.md").resolve())]


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="cannot reach the Chroma server"):
        ChromaStore(Settings(chroma_url=f"http://127.0.0.1:{free_port()}", data_dir=tmp_path))
