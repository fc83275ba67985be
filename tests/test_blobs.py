"""Originals in the blob store: kept once by content, served back with their type, released on delete."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.blobs import BlobNotFound, LocalBlobStore, digest_of
from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from ingest.vectorstore import StoreUnavailable
from server.answering.service import QueryService
from server.http.api import create_app
from server.state import Scope

from .helpers import reader_for

NOTE = b"# Runbook\n\nRotate the TLS certificates every March.\n"
TWIN = b"Twin text about backups."


def test_blob_store_keeps_bytes_once_by_content(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    first = blobs.put(NOTE)
    assert first == digest_of(NOTE) and blobs.put(NOTE) == first
    assert list(blobs.digests()) == [first] and blobs.get(first) == NOTE
    assert not list((tmp_path / "blobs").rglob(".incoming-*")), "no temporary file is left behind"
    blobs.pin(first, "job-1")
    assert blobs.pinned(first)
    blobs.unpin(first, "job-1")
    assert not blobs.pinned(first)
    assert blobs.delete(first) and not blobs.exists(first)
    with pytest.raises(BlobNotFound, match="no original stored"):
        blobs.get(first)
    with pytest.raises(BlobNotFound, match="not a blob reference"):
        blobs.get("../../etc/passwd")


@pytest.mark.slow
def test_a_replaced_or_failed_document_leaves_no_unused_original(ingestor: Ingestor) -> None:
    first = NOTE
    second = NOTE + b"\nAlso rotate the SSH host keys.\n"
    assert ingestor.ingest_items([("runbook.md", "upload://runbook.md", first)], collection="runbooks").added == 1
    assert ingestor.ingest_items([("runbook.md", "upload://runbook.md", first)], collection="runbooks").unchanged == 1
    assert list(ingestor.blobs.digests()) == [digest_of(first)]

    assert ingestor.ingest_items([("runbook.md", "upload://runbook.md", second)], collection="runbooks").updated == 1
    assert list(ingestor.blobs.digests()) == [digest_of(second)], "the replaced version's original is released"

    copy = ingestor.ingest_items([("copy.md", "upload://copy.md", second)], collection="runbooks")
    assert copy.added == 1
    assert ingestor.ingest_items([("runbook.md", "upload://runbook.md", first)], collection="runbooks").updated == 1
    assert sorted(ingestor.blobs.digests()) == sorted([digest_of(first), digest_of(second)]), "still used by copy.md"

    broken = b"%PDF-1.7\nnot a PDF after all"
    failed = ingestor.ingest_items([("broken.pdf", "upload://broken.pdf", broken)], collection="runbooks")
    assert failed.failed and not ingestor.blobs.exists(digest_of(broken)), "a failed file keeps no original"
    twins = ingestor.ingest_items(
        [("a.md", "upload://a.md", TWIN), ("b.md", "upload://b.md", TWIN)],
        collection="runbooks",
        max_chunks=1,
    )
    assert (twins.added, twins.failed) == (1, 1)
    assert ingestor.blobs.exists(digest_of(TWIN)), "the written twin still has its original"


def test_an_original_is_pinned_until_its_document_is_written(ingestor: Ingestor) -> None:
    """Another request releasing the same bytes (its replaced version) while this ingest embeds them must not
    delete the original this ingest is about to reference."""
    seen: list[tuple[bool, bool]] = []

    def on_stage(stage: str, name: str, chunks: int) -> None:
        if stage == "embedding":
            released = ingestor.release_blob(digest_of(NOTE))  # what a concurrent replace would do
            seen.append((released, ingestor.blobs.pinned(digest_of(NOTE))))

    report = ingestor.ingest_items(
        [("runbook.md", "upload://runbook.md", NOTE)], collection="runbooks", on_stage=on_stage
    )
    assert report.added == 1 and seen == [(False, True)]
    assert ingestor.blobs.exists(digest_of(NOTE)) and not ingestor.blobs.pinned(digest_of(NOTE))


def test_a_store_that_cannot_answer_keeps_the_original_and_the_ingest(
    ingestor: Ingestor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Releasing the replaced version's original asks the store whether anything still uses it; when the
    store cannot answer, the new version stays written and reported, and the old original is kept."""
    assert ingestor.ingest_items([("runbook.md", "upload://runbook.md", NOTE)], collection="runbooks").added == 1

    def unreachable(digest: str) -> bool:
        raise StoreUnavailable("the vector store is unreachable (blob check): connection refused")

    monkeypatch.setattr(ingestor.store, "blob_in_use", unreachable)
    changed = NOTE + b"\nAnd the SSH host keys.\n"
    report = ingestor.ingest_items([("runbook.md", "upload://runbook.md", changed)], collection="runbooks")
    assert report.updated == 1 and not report.failed
    assert ingestor.blobs.exists(digest_of(NOTE)) and ingestor.blobs.exists(digest_of(changed))


def test_pruned_documents_release_their_originals(ingestor: Ingestor, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "keep.md").write_bytes(NOTE)
    (folder / "gone.md").write_bytes(TWIN)
    assert ingestor.ingest_paths([folder], collection="runbooks").added == 2
    (folder / "gone.md").unlink()
    assert ingestor.ingest_paths([folder], collection="runbooks", prune=True).deleted == 1
    assert sorted(ingestor.blobs.digests()) == [digest_of(NOTE)]


@pytest.mark.slow
def test_cli_ingestion_keeps_originals_and_delete_releases_unused_ones(
    tmp_path: Path, ingestor: Ingestor, shared_pdfs: Path
) -> None:
    pdf = shared_pdfs / "docling" / "multi_page.pdf"
    copy = tmp_path / "copy.md"
    copy.write_bytes(NOTE)
    other = tmp_path / "same-bytes.md"
    other.write_bytes(NOTE)
    assert ingestor.ingest_paths([pdf, copy, other], collection="kbase").added == 3
    docs = {Path(d.source).name: d for d in ingestor.store.documents(ingestor.open_collection("kbase"))}
    assert docs["multi_page.pdf"].blob == digest_of(pdf.read_bytes())
    assert ingestor.blobs.get(docs["multi_page.pdf"].blob) == pdf.read_bytes()
    assert docs["copy.md"].blob == docs["same-bytes.md"].blob, "the same bytes are stored once"
    assert sorted(ingestor.blobs.digests()) == sorted({digest_of(pdf.read_bytes()), digest_of(NOTE)})

    ingestor.delete("kbase", docs["copy.md"].document_id)
    assert ingestor.blobs.exists(digest_of(NOTE)), "another document still uses it"
    ingestor.blobs.pin(digest_of(NOTE), "job-x")
    ingestor.delete("kbase", docs["same-bytes.md"].document_id)
    assert ingestor.blobs.exists(digest_of(NOTE)), "a queued job still needs it"
    ingestor.blobs.unpin(digest_of(NOTE), "job-x")
    assert ingestor.release_blob(digest_of(NOTE)) and not ingestor.blobs.exists(digest_of(NOTE))
    ingestor.delete("kbase", docs["multi_page.pdf"].document_id)
    assert list(ingestor.blobs.digests()) == []


@pytest.mark.slow
def test_document_file_is_served_inline_with_its_type_and_key_rules(
    tmp_path: Path, embedder: Embedder, shared_pdfs: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "kb", rate_limit_burst=1_000_000)
    ingestor = Ingestor(settings, embedder=embedder)
    pdf = (shared_pdfs / "docling" / "multi_page.pdf").read_bytes()
    service = QueryService(settings, reader=reader_for(ingestor))
    with TestClient(create_app(settings, service)) as client:
        files = [("files", ("manual.pdf", pdf, "application/pdf")), ("files", ("notes.md", NOTE, "text/markdown"))]
        assert client.post("/v1/collections/ops/documents", files=files).status_code == 200
        docs = {d["source"]: d["document_id"] for d in client.get("/v1/collections/ops/documents").json()}

        served = client.get(f"/v1/documents/{docs['upload://manual.pdf']}/file", params={"collection": "ops"})
        assert served.status_code == 200 and served.content == pdf
        assert served.headers["content-type"] == "application/pdf"
        assert (
            served.headers["content-disposition"].startswith("inline;")
            and "manual.pdf" in served.headers["content-disposition"]
        )
        note = client.get(f"/v1/documents/{docs['upload://notes.md']}/file?collection=ops")
        assert note.content == NOTE and note.headers["content-type"].startswith("text/markdown")

        unknown = client.get("/v1/documents/0123456789abcdef01234567/file?collection=ops")
        assert unknown.status_code == 404 and unknown.json()["code"] == "document_not_found"
        missing = client.get(f"/v1/documents/{docs['upload://notes.md']}/file")  # the default collection
        assert missing.status_code == 404 and missing.json()["code"] == "collection_not_found"
        bad = client.get(f"/v1/documents/{docs['upload://notes.md']}/file?collection=x")
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_collection_name"

        keys = client.app.state.components.keys  # type: ignore[attr-defined]
        other = keys.create("other-only", Scope.READ, ["other"])[1]
        admin = keys.create("root", Scope.ADMIN, None)[1]
        hidden = client.get(
            f"/v1/documents/{docs['upload://manual.pdf']}/file?collection=ops",
            headers={"Authorization": f"Bearer {other}"},
        )
        assert hidden.status_code == 404 and hidden.json()["code"] == "collection_not_found"
        assert client.get(f"/v1/documents/{docs['upload://manual.pdf']}/file?collection=ops").status_code == 401

        auth = {"Authorization": f"Bearer {admin}"}
        digest = digest_of(NOTE)
        assert client.delete(f"/v1/collections/ops/documents/{docs['upload://notes.md']}", headers=auth).is_success
        assert not ingestor.blobs.exists(digest), "deleting the only document that used it releases the original"
        ingestor.blobs.delete(digest_of(pdf))  # lost on disk: the route says so instead of failing
        lost = client.get(f"/v1/documents/{docs['upload://manual.pdf']}/file?collection=ops", headers=auth)
        assert lost.status_code == 404 and lost.json()["code"] == "original_not_found"
