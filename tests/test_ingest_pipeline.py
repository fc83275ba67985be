"""Ingestion is idempotent by content: unchanged files cost nothing, changes replace, deletes leave nothing."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.errors import EmbeddingModelError
from ingest.loaders import load_bytes
from ingest.pipeline import Ingestor
from ingest.store import ChromaStore
from ingest.vectorstore import chunk_id, document_id_for


def _all_chunks(ingestor: Ingestor, collection: str) -> dict[str, Any]:
    target = ingestor.open_collection(collection)
    return {c.chunk_id: (dict(c.metadata), c.text) for page in ingestor.store.iter_chunks(target) for c in page}


@pytest.fixture
def kb(tmp_path: Path, shared_pdfs: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    shutil.copy(shared_pdfs / "docling" / "amt_handbook_sample.pdf", root)
    (root / "guide.md").write_text("# Guide\n\nragkb answers questions.\n\n## Install\n\nRun make run.\n")
    (root / "notes.txt").write_text("The worker restarts nightly. Backups run at noon.\n")
    return root


@pytest.mark.slow
def test_first_run_adds_every_file_with_provenance(ingestor: Ingestor, kb: Path) -> None:
    report = ingestor.ingest_paths([kb], collection="docs")
    assert (report.added, report.updated, report.unchanged, report.failed) == (3, 0, 0, 0)
    chunks = _all_chunks(ingestor, "docs")
    assert len(chunks) == report.chunks_added
    pdf_chunks = [m for m, _ in chunks.values() if m["kind"] == "pdf"]
    assert pdf_chunks and all(m["page"] == 1 for m in pdf_chunks)
    md = [m for m, _ in chunks.values() if m["kind"] == "markdown"]
    assert {m["heading"] for m in md} == {"Guide", "Guide > Install"}
    for meta, text in chunks.values():
        assert meta["document_id"] == document_id_for(meta["source"])
        assert meta["end"] - meta["start"] == len(text)
        assert meta["embed_model"] == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.slow
def test_unchanged_rerun_embeds_nothing(ingestor: Ingestor, kb: Path) -> None:
    ingestor.ingest_paths([kb], collection="docs")
    before = _all_chunks(ingestor, "docs")
    again = ingestor.ingest_paths([kb], collection="docs")
    assert (again.added, again.updated, again.unchanged, again.chunks_added) == (0, 0, 3, 0)
    assert _all_chunks(ingestor, "docs") == before


@pytest.mark.slow
def test_changed_file_replaces_its_chunks(ingestor: Ingestor, kb: Path) -> None:
    ingestor.ingest_paths([kb], collection="docs")
    notes = kb / "notes.txt"
    notes.write_text("Completely new content about the cache layer. " * 80)
    report = ingestor.ingest_paths([kb], collection="docs")
    assert (report.added, report.updated, report.unchanged) == (0, 1, 2)
    doc_id = document_id_for(str(notes.resolve()))
    mine = [(m, t) for m, t in _all_chunks(ingestor, "docs").values() if m["document_id"] == doc_id]
    assert len(mine) == report.chunks_added > 1
    assert len({m["doc_version"] for m, _ in mine}) == 1
    assert not any("restarts nightly" in t for _, t in mine)
    assert sorted(m["chunk_index"] for m, _ in mine) == list(range(len(mine)))


@pytest.mark.slow
def test_delete_removes_document_and_all_chunks(ingestor: Ingestor, kb: Path) -> None:
    ingestor.ingest_paths([kb], collection="docs")
    source = str((kb / "amt_handbook_sample.pdf").resolve())
    info, removed = ingestor.delete("docs", source)
    assert removed == info.chunk_count > 0
    remaining = _all_chunks(ingestor, "docs").values()
    assert all(m["source"] != source for m, _ in remaining)
    assert {d.source for d in ingestor.store.documents(ingestor.open_collection("docs"))} == {
        str((kb / "guide.md").resolve()),
        str((kb / "notes.txt").resolve()),
    }


@pytest.mark.slow
def test_interrupted_write_is_completed_by_the_next_run(ingestor: Ingestor, kb: Path) -> None:
    """A crash after some chunks but before the commit marker must not look like a finished document."""
    ingestor.ingest_paths([kb], collection="docs")
    notes = kb / "notes.txt"
    notes.write_text("Version two. " * 300)
    collection = ingestor.open_collection("docs")
    doc_id = document_id_for(str(notes.resolve()))
    version = ingestor.version_of(notes.read_bytes())
    extracted = load_bytes(notes.read_bytes(), "notes.txt")
    chunks = ingestor.chunker.chunk(extracted)
    vectors = ingestor.embedder.embed([c.text for c in chunks])
    # write every chunk but the marker (chunk 0), as a crash mid-write would leave it (raw Chroma on purpose)
    collection.native.upsert(
        ids=[chunk_id(doc_id, version, c.index) for c in chunks[1:]],
        embeddings=vectors[1:],
        documents=[c.text for c in chunks[1:]],
        metadatas=[
            {"document_id": doc_id, "doc_version": version, "chunk_index": c.index, "source": "x"} for c in chunks[1:]
        ],
    )
    report = ingestor.ingest_paths([kb], collection="docs")
    assert report.updated == 1
    mine = [m for m, _ in _all_chunks(ingestor, "docs").values() if m["document_id"] == doc_id]
    assert len(mine) == len(chunks)
    assert {m["doc_version"] for m in mine} == {version}


@pytest.mark.slow
def test_leftover_old_version_is_cleaned_up(ingestor: Ingestor, kb: Path) -> None:
    """Crash after committing the new version but before deleting the old one: the rerun converges."""
    ingestor.ingest_paths([kb], collection="docs")
    collection = ingestor.open_collection("docs")
    old = _all_chunks(ingestor, "docs")
    notes_id = document_id_for(str((kb / "notes.txt").resolve()))
    old_notes = {i: v for i, v in old.items() if v[0]["document_id"] == notes_id}
    (kb / "notes.txt").write_text("A newer note about backups and restores.\n")
    ingestor.ingest_paths([kb], collection="docs")
    # put the old version back, as if the delete had never happened
    ids = list(old_notes)
    assert ingestor.store.chunks(collection, ids) == []
    got = ingestor.embedder.embed([v[1] for v in old_notes.values()])
    collection.native.upsert(  # raw Chroma on purpose: a state only a crash leaves behind
        ids=ids,
        embeddings=got,
        documents=[v[1] for v in old_notes.values()],
        metadatas=[v[0] for v in old_notes.values()],
    )
    assert len(ingestor.store.committed_versions(collection)[notes_id]) == 2
    report = ingestor.ingest_paths([kb], collection="docs")
    assert report.unchanged == 3
    assert len(ingestor.store.committed_versions(collection)[notes_id]) == 1
    texts = [t for m, t in _all_chunks(ingestor, "docs").values() if m["document_id"] == notes_id]
    assert texts == ["A newer note about backups and restores."]


@pytest.mark.slow
def test_concurrent_runs_leave_no_duplicates(settings: Settings, embedder: Embedder, kb: Path) -> None:
    store = ChromaStore(settings)
    reports = []

    def run() -> None:
        one = Ingestor(settings, store=store, embedder=embedder)
        reports.append(one.ingest_paths([kb], collection="docs"))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.failed == 0 for r in reports)
    ingestor = Ingestor(settings, store=store, embedder=embedder)
    chunks = _all_chunks(ingestor, "docs")
    per_doc: dict[str, set[int]] = {}
    for meta, _ in chunks.values():
        assert meta["chunk_index"] not in per_doc.setdefault(meta["document_id"], set())
        per_doc[meta["document_id"]].add(meta["chunk_index"])
    assert len(per_doc) == 3


def test_collection_built_with_another_model_is_refused(ingestor: Ingestor, kb: Path) -> None:
    ingestor.store.open("legacy", model="intfloat/e5-small-v2", dimension=384, create=True)
    with pytest.raises(EmbeddingModelError) as info:
        ingestor.ingest_paths([kb], collection="legacy")
    message = str(info.value)
    assert "intfloat/e5-small-v2" in message and "sentence-transformers/all-MiniLM-L6-v2" in message


def test_collections_are_separate(ingestor: Ingestor, kb: Path) -> None:
    ingestor.ingest_paths([kb / "notes.txt"], collection="one")
    ingestor.ingest_paths([kb / "guide.md"], collection="two")
    counts = {c.name: c.chunks for c in ingestor.store.collections()}
    assert counts == {"one": 1, "two": 2}
    assert [d.title for d in ingestor.store.documents(ingestor.open_collection("two"))] == ["Guide"]


@pytest.mark.slow
def test_prune_deletes_documents_whose_files_are_gone(ingestor: Ingestor, kb: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("A document from elsewhere stays.\n")
    ingestor.ingest_paths([kb, outside], collection="docs")
    (kb / "notes.txt").unlink()
    kept = ingestor.ingest_paths([kb], collection="docs")  # without --prune nothing is deleted
    assert kept.deleted == 0 and len(ingestor.store.documents(ingestor.open_collection("docs"))) == 4
    pruned = ingestor.ingest_paths([kb], collection="docs", prune=True)
    assert (pruned.deleted, pruned.unchanged) == (1, 2)
    sources = {d.source for d in ingestor.store.documents(ingestor.open_collection("docs"))}
    assert str((kb / "notes.txt").resolve()) not in sources
    assert str(outside.resolve()) in sources, "only documents under the given directories are pruned"
    assert all(m["source"] in sources for m, _ in _all_chunks(ingestor, "docs").values())
