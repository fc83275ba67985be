"""E-mail attachments as documents of their own, linked to their message, through every door: the CLI (ingest,
re-ingest, a changed message, delete, --prune), reindex from kept originals, the upload API (listing, citations,
originals, delete) and the task engine's job runner. The messages are the shared Tika EML (two text
attachments) and one built here that carries real shared office files, a damaged one and that EML itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from ingest.tasks import Runtime
from ingest.vectorstore import document_id_for
from ragkb.cli import app as cli_app
from server.answering.service import QueryService
from server.http.api import create_app

from .helpers import reader_for
from .servers import emptied_queue

OFFICE = Path(__file__).resolve().parents[2] / "shared" / "office"
TIKA_EML = "testRFC822_multipart_attachments.eml"
QUEUE_URL = "redis://127.0.0.1:6379/5"  # this module's own database, emptied around the test that uses it
runner = CliRunner()


def _report_message(*, with_sheet: bool = True, body: str = "The quarterly figures are attached.") -> bytes:
    """A message carrying real office files: a Word document, a spreadsheet (optional), a damaged Word
    document (a warning, not a failure) and the shared Tika EML as an attached message."""
    message = EmailMessage(policy=default_policy)
    message["Subject"] = "Quarterly report"
    message["From"] = "Ana Duarte <ana@example.com>"
    message["To"] = "team@example.com"
    message["Date"] = "Mon, 02 Mar 2026 09:30:00 +0000"
    message.set_content(body)
    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    attached = [("testWORD.docx", docx), ("testWORD_truncated.docx", docx)]
    if with_sheet:
        attached.insert(1, ("testEXCEL.xlsx", xlsx))
    for name, kind in attached:
        main, sub = kind.split("/")
        message.add_attachment((OFFICE / name).read_bytes(), maintype=main, subtype=sub, filename=name)
    inner = EmailMessage(policy=default_policy)
    inner.set_content((OFFICE / TIKA_EML).read_bytes(), maintype="message", subtype="rfc822", cte="8bit")
    inner.add_header("Content-Disposition", "attachment", filename="forwarded.eml")
    message.attach(inner)
    return message.as_bytes()


def _cli(*args: str) -> tuple[int, Any]:
    result = runner.invoke(cli_app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None


def _names(documents: list[dict[str, Any]], root: str) -> dict[str, dict[str, Any]]:
    """Documents by their source below `root` (`report.eml#attachment/testWORD.docx`)."""
    return {str(d["source"]).removeprefix(root): d for d in documents}


@pytest.mark.slow
def test_cli_ingest_change_delete_prune_and_reindex(cli_env: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "report.eml").write_bytes(_report_message())
    (folder / TIKA_EML).write_bytes((OFFICE / TIKA_EML).read_bytes())
    root = str(folder.resolve()) + "/"

    code, report = _cli("ingest", str(folder), "-c", "mail")
    assert code == 0, report
    # two files; seven attachments: the Word document, the sheet, the forwarded message and its two text files,
    # and the Tika message's own two text files
    assert (report["added"], report["failed"], report["attachments"]) == (2, 0, 7), report
    assert any("testWORD_truncated.docx" in w for w in report["warnings"]), "the damaged attachment is a warning"
    code, listed = _cli("documents", "-c", "mail")
    docs = _names(listed, root)
    assert set(docs) == {
        "report.eml",
        "report.eml#attachment/testWORD.docx",
        "report.eml#attachment/testEXCEL.xlsx",
        "report.eml#attachment/forwarded.eml",
        "report.eml#attachment/forwarded.eml#attachment/Test TxtA.txt",
        "report.eml#attachment/forwarded.eml#attachment/Test TxtB.txt",
        TIKA_EML,
        f"{TIKA_EML}#attachment/Test TxtA.txt",
        f"{TIKA_EML}#attachment/Test TxtB.txt",
    }
    message = docs["report.eml"]
    assert message["parent_id"] == "" and message["kind"] == "email"
    word = docs["report.eml#attachment/testWORD.docx"]
    assert (word["parent_id"], word["parent"]) == (message["document_id"], "mail/report.eml")
    assert word["display_source"] == "mail/report.eml#attachment/testWORD.docx"
    assert word["title"] == "Sample Word Document" and word["kind"] == "docx"
    nested = docs["report.eml#attachment/forwarded.eml#attachment/Test TxtB.txt"]
    assert nested["parent_id"] == docs["report.eml#attachment/forwarded.eml"]["document_id"]

    code, again = _cli("ingest", str(folder), "-c", "mail")
    assert (code, again["unchanged"], again["attachments"], again["chunks_added"]) == (0, 2, 0, 0), again

    # the message changes: its body, and the sheet is no longer attached
    from prometheus_client import REGISTRY

    def counted(outcome: str) -> float:
        return REGISTRY.get_sample_value("ragkb_ingest_attachments_total", {"outcome": outcome}) or 0.0

    unchanged, dropped = counted("unchanged"), counted("dropped")
    (folder / "report.eml").write_bytes(_report_message(with_sheet=False, body="Figures attached, sheet to follow."))
    code, changed = _cli("ingest", str(folder), "-c", "mail")
    assert (code, changed["updated"], changed["unchanged"], changed["deleted"]) == (0, 1, 1, 1), changed
    assert changed["attachments"] == 0, "unchanged attachments are not embedded again"
    assert (counted("unchanged") - unchanged, counted("dropped") - dropped) == (4, 1)
    code, listed = _cli("documents", "-c", "mail")
    after = _names(listed, root)
    assert "report.eml#attachment/testEXCEL.xlsx" not in after and len(after) == 8
    assert after["report.eml#attachment/testWORD.docx"]["version"] == word["version"]
    data_dir = cli_env
    sheet_blob = docs["report.eml#attachment/testEXCEL.xlsx"]["blob"]
    assert not (data_dir / "blobs" / "sha256" / sheet_blob[:2] / sheet_blob).exists(), "the dropped original goes"

    # reindex from the kept originals: the messages bring their attachments back, linked as before
    result = runner.invoke(cli_app, ["reindex", "-c", "mail", "--chunk-tokens", "128"])
    assert result.exit_code == 0, result.stdout
    code, listed = _cli("documents", "-c", "mail")
    rebuilt = _names(listed, root)
    assert {k: (d["document_id"], d["parent_id"]) for k, d in rebuilt.items()} == {
        k: (d["document_id"], d["parent_id"]) for k, d in after.items()
    }

    # deleting the message deletes what it carries, and nothing else
    deleted = runner.invoke(cli_app, ["delete", message["document_id"], "-c", "mail", "--json"])
    assert deleted.exit_code == 0, deleted.stdout
    code, listed = _cli("documents", "-c", "mail")
    assert set(_names(listed, root)) == {TIKA_EML, f"{TIKA_EML}#attachment/Test TxtA.txt",
                                         f"{TIKA_EML}#attachment/Test TxtB.txt"}  # fmt: skip

    # a file gone from the folder takes its attachments with it under --prune
    (folder / TIKA_EML).unlink()
    code, pruned = _cli("ingest", str(folder), "-c", "mail", "--prune")
    assert pruned["deleted"] == 3, pruned
    code, listed = _cli("documents", "-c", "mail")
    kept = (
        "testWORD.docx",
        "forwarded.eml",
        "forwarded.eml#attachment/Test TxtA.txt",
        "forwarded.eml#attachment/Test TxtB.txt",
    )
    assert _names(listed, root).keys() == {"report.eml"} | {f"report.eml#attachment/{n}" for n in kept}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[tuple[TestClient, Ingestor]]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("mail-kb"), default_collection="mail")
    ingestor = Ingestor(settings, embedder=embedder)
    service = QueryService(settings, reader=reader_for(ingestor))
    with TestClient(create_app(settings, service)) as client:
        yield client, ingestor


@pytest.mark.slow
def test_upload_lists_cites_serves_and_deletes_attachments(api: tuple[TestClient, Ingestor]) -> None:
    client, ingestor = api
    files = [("files", ("report.eml", _report_message(), "message/rfc822"))]
    uploaded = client.post("/v1/collections/mail/documents", files=files)
    assert uploaded.status_code == 200, uploaded.text
    body = uploaded.json()
    assert (body["added"], body["attachments"], body["failed"]) == (1, 5, 0), body
    message_id = document_id_for("upload://report.eml")
    assert {d["parent_id"] for d in body["documents"] if "parent_id" in d} == {
        message_id,
        document_id_for("upload://report.eml#attachment/forwarded.eml"),
    }

    listed = {d["source"]: d for d in client.get("/v1/collections/mail/documents").json()}
    sheet = listed["upload://report.eml#attachment/testEXCEL.xlsx"]
    assert (sheet["parent_id"], sheet["parent"]) == (message_id, "upload://report.eml")
    assert listed["upload://report.eml"]["parent_id"] is None

    answer = client.post(
        "/v1/query",
        json={"question": "What is the square of 14?", "collection": "mail",
              "filters": {"source_glob": "upload://report.eml*"}},
    ).json()  # fmt: skip
    top = answer["citations"][0]
    assert top["source"] == "upload://report.eml#attachment/testEXCEL.xlsx", answer["citations"]
    assert (top["parent"], top["heading"]) == ("upload://report.eml", "Feuil1")
    assert top["snippet"].startswith("Sample Excel Worksheet")

    original = client.get(f"/v1/documents/{sheet['document_id']}/file", params={"collection": "mail"})
    assert original.status_code == 200 and original.content == (OFFICE / "testEXCEL.xlsx").read_bytes()

    again = client.post("/v1/collections/mail/documents", files=files).json()
    assert (again["unchanged"], again["attachments"], again["chunks_added"]) == (1, 0, 0), again

    deleted = client.delete(f"/v1/collections/mail/documents/{message_id}")
    assert deleted.status_code == 200, deleted.text
    total = sum(d["chunk_count"] for d in listed.values())
    assert deleted.json()["chunks_deleted"] == total
    assert client.get("/v1/collections/mail/documents").json() == []
    gone = client.get(f"/v1/documents/{sheet['document_id']}/file", params={"collection": "mail"})
    assert gone.status_code == 404 and gone.json()["code"]
    assert not list(ingestor.blobs.digests()), "every original (message and attachments) is released"


@pytest.fixture
def queue_url() -> Iterator[str]:
    with emptied_queue(QUEUE_URL) as url:
        yield url


@pytest.mark.slow
def test_a_queued_message_brings_its_attachments(queue_url: str, tmp_path: Path, embedder: Embedder) -> None:
    settings = Settings(data_dir=tmp_path / "kb", queue_url=queue_url)
    ingestor = Ingestor(settings, embedder=embedder)
    service = QueryService(settings, reader=reader_for(ingestor))
    files = [("files", (TIKA_EML, (OFFICE / TIKA_EML).read_bytes(), "message/rfc822"))]
    with TestClient(create_app(settings, service)) as client:
        queued = client.post("/v1/collections/mail/documents", files=files)
        assert queued.status_code == 202, queued.text
        [job] = queued.json()["jobs"]
        runtime = Runtime(settings)  # the worker's job runner, in this process (as tests/test_queue.py)
        runtime._ingestor = ingestor
        runtime.run(job["id"], retries=0)
        done = client.get(job["status_url"]).json()
        assert done["status"] == "done" and done["files_done"] == 1, done
        assert (done["report"]["added"], done["report"]["attachments"]) == (1, 2), done["report"]
        listed = {d["source"]: d for d in client.get("/v1/collections/mail/documents").json()}
        assert listed[f"upload://{TIKA_EML}#attachment/Test TxtB.txt"]["parent"] == f"upload://{TIKA_EML}"
