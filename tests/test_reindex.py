"""Reindex from kept originals: a client querying throughout sees no failure and one switch; the old version
is gone afterwards; the admin API, its audit record and progress; the CLI; clear refusals."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ingest.config import Settings, get_settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from ingest.reindex import Reindexer, ReindexError, reindex_settings
from ingest.vectorstore import parse_chunk_id
from ragkb.cli import app as cli_app
from server.answering.service import QueryService
from server.http.api import create_app

from .helpers import reader_for

QUESTION = {"question": "How often are the TLS certificates rotated?", "collection": "kbase", "top_k": 3}


@pytest.mark.slow
def test_reindex_while_a_client_queries_switches_once_without_a_failed_query(
    tmp_path: Path, embedder: Embedder, shared_pdfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "kb", rate_limit_burst=1_000_000)
    ingestor = Ingestor(settings, embedder=embedder)
    runbook = tmp_path / "runbook.md"
    runbook.write_text("# Runbook\n\n" + "Rotate the TLS certificates every March. " * 40 + "\n")
    assert ingestor.ingest_paths([shared_pdfs / "docling" / "multi_page.pdf", runbook], collection="kbase").added == 2
    old_versions = {d.version for d in ingestor.store.documents(ingestor.open_collection("kbase"))}
    old_chunks = ingestor.store.count(ingestor.open_collection("kbase"))
    service = QueryService(settings, reader=reader_for(ingestor))
    with TestClient(create_app(settings, service)) as client:
        seen: list[str] = []  # per answer: "old" or "new"
        failures: list[str] = []
        stop = threading.Event()

        def keep_querying() -> None:
            while not stop.is_set():
                reply = client.post("/v1/retrieve", json=QUESTION)
                if reply.status_code != 200:
                    failures.append(reply.text)
                    continue
                versions = {parse_chunk_id(c["chunk_id"]).version for c in reply.json()["chunks"]}
                seen.append("old" if versions <= old_versions else "new" if not versions & old_versions else "mixed")

        querying = threading.Thread(target=keep_querying)
        querying.start()
        try:
            while not seen:
                time.sleep(0.05)
            started = client.post("/v1/collections/kbase/reindex", json={"chunk_tokens": 64})
            assert started.status_code == 202, started.text
            assert client.post("/v1/collections/kbase/reindex", json={"chunk_tokens": 64}).status_code == 409
            deadline = time.monotonic() + 120
            while (state := client.get("/v1/collections/kbase/reindex").json())["status"] == "running":
                assert time.monotonic() < deadline, state
                time.sleep(0.1)
            time.sleep(0.5)
        finally:
            stop.set()
            querying.join()
        assert state["status"] == "done", state
        assert state["documents_done"] == 2 and state["chunks_after"] > state["chunks_before"] == old_chunks
        assert failures == [], failures[:3]
        switch = seen.index("new")
        assert "mixed" not in seen and seen[:switch] == ["old"] * switch and set(seen[switch:]) == {"new"}
        assert switch > 0, "the client was answered from the old version while the new one was built"

        names = [c.name for c in ingestor.store.client.list_collections()]  # type: ignore[attr-defined]
        assert "kbase" not in names and len([n for n in names if n.startswith("rkv-")]) == 1, names
        assert [c["name"] for c in client.get("/v1/collections").json()] == ["kbase"]
        docs = client.get("/v1/collections/kbase/documents").json()
        pdf = next(d for d in docs if d["source"].endswith("multi_page.pdf"))
        served = client.get(f"/v1/documents/{pdf['document_id']}/file?collection=kbase")
        assert served.content == (shared_pdfs / "docling" / "multi_page.pdf").read_bytes()
        audit = client.get("/v1/audit", params={"action": "collection.reindex"}).json()
        assert audit[0]["collection"] == "kbase" and audit[0]["detail"]["chunk_tokens"] == 64
        bad = client.post("/v1/collections/kbase/reindex", json={"chunk_tokens": 64, "chunk_overlap": 64})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_reindex"
        assert client.get("/v1/collections/nothere/reindex").status_code == 404

    # the CLI, on the same data dir, once the server is gone: a second version replaces the first
    monkeypatch.setenv("RAGKB_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["reindex", "--collection", "kbase", "--chunk-tokens", "128", "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    names = [c.name for c in ingestor.store.client.list_collections()]  # type: ignore[attr-defined]
    assert len([n for n in names if n.startswith("rkv-")]) == 1 and any(n.endswith("-2") for n in names)


def test_reindex_refuses_documents_without_originals_and_bad_settings(tmp_path: Path, embedder: Embedder) -> None:
    settings = Settings(data_dir=tmp_path / "kb")
    ingestor = Ingestor(settings, embedder=embedder)
    note = tmp_path / "old.md"
    note.write_text("# Old\n\nIngested before originals were kept.\n")
    ingestor.ingest_paths([note], collection="legacy")
    for digest in list(ingestor.blobs.digests()):
        ingestor.blobs.delete(digest)  # as if ingested by an older ragkb
    with pytest.raises(ReindexError, match=r"without a kept original .*old\.md"):
        Reindexer(settings, "legacy", store=ingestor.store, embedder=embedder).run()
    assert ingestor.store.count(ingestor.open_collection("legacy")) == 1, "the collection still serves"
    with pytest.raises(ReindexError, match="chunk_overlap"):
        reindex_settings(settings, chunk_tokens=32, chunk_overlap=40)
    assert reindex_settings(settings, chunk_tokens=16).chunk_overlap == 4
