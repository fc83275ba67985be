"""New formats end to end: uploaded through the HTTP API (real app, Chroma, model, Tesseract), then asked
through `/v1/query`; each answer cites the right Word section, slide, sheet or scanned page."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.loaders import supported_extensions
from ingest.pipeline import Ingestor
from server.answering.service import QueryService
from server.http.api import create_app

from .helpers import reader_for

SHARED = Path(__file__).resolve().parents[2] / "shared"
W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def _docx(body: str) -> bytes:
    """A minimal but complete WordprocessingML package (what Word itself needs to open it)."""
    types = (
        '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
        'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/'
        'document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main'
        '+xml"/></Types>'
    )
    rels = (
        '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
        '2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", types)
        archive.writestr("_rels/.rels", rels)
        archive.writestr("word/document.xml", f'<w:document xmlns:w="{W}"><w:body>{body}</w:body></w:document>')
    return buffer.getvalue()


def _p(text: str, style: str | None = None) -> str:
    props = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
    return f"<w:p>{props}<w:r><w:t>{text}</w:t></w:r></w:p>"


def _table(rows: list[list[str]]) -> str:
    cells = "".join("<w:tr>" + "".join(f"<w:tc>{_p(cell)}</w:tc>" for cell in row) + "</w:tr>" for row in rows)
    return f"<w:tbl>{cells}</w:tbl>"


def _handbook_docx() -> bytes:
    return _docx(
        _p("Team handbook", "Heading1")
        + _p("Welcome to the team. Read this before your first day.")
        + _p("Offices", "Heading2")
        + _p("Each project is run from one office.")
        + _table([["Project", "Office", "Lead"], ["Atlas", "Lisbon", "Ana Duarte"], ["Borealis", "Oslo", "Erik"]])
        + _p("Holidays", "Heading2")
        + _p("Holidays are booked in the HR portal two weeks ahead.")
    )


def _review_pptx() -> bytes:
    from pptx import Presentation

    deck = Presentation()
    topics = [
        ("Quarterly review", "Revenue and hiring for the quarter.", "Start with a thank-you to the sales team."),
        ("Budget", "Spending stayed within plan.", "The hiring freeze ends on the first of March."),
        ("Next steps", "Open the two new positions.", "Ask for questions at the end."),
    ]
    for title, body, notes in topics:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        slide.notes_slide.notes_text_frame.text = notes
    buffer = io.BytesIO()
    deck.save(buffer)
    return buffer.getvalue()


def _stock_xlsx() -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    staff = book.active
    staff.title = "Staff"
    staff.append(["Name", "Role", "Start year"])
    staff.append(["Ana Duarte", "Engineer", 2019])
    staff.append(["Erik Berg", "Designer", 2021])
    stock = book.create_sheet("Inventory")
    stock.append(["Item", "Location", "Count"])
    stock.append(["Pallet jack", "Warehouse 2", 5])
    stock.append(["Forklift", "Warehouse 7", 3])
    stock.append(["Ladder", "Warehouse 2", 12])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("formats-kb"), default_collection="team", max_upload_bytes=4_000_000
    )
    ingestor = Ingestor(settings, embedder=embedder)
    service = QueryService(settings, reader=reader_for(ingestor))
    with TestClient(create_app(settings, service)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def uploaded(client: TestClient) -> dict[str, Any]:
    files = [
        ("files", ("handbook.docx", _handbook_docx(), "application/octet-stream")),
        ("files", ("review.pptx", _review_pptx(), "application/octet-stream")),
        ("files", ("stock.xlsx", _stock_xlsx(), "application/octet-stream")),
        (
            "files",
            ("history.scanned.pdf", (SHARED / "scans" / "multi_page.scanned.pdf").read_bytes(), "application/pdf"),
        ),
        (
            "files",
            ("mail.eml", (SHARED / "office" / "testRFC822_multipart_attachments.eml").read_bytes(), "message/rfc822"),
        ),
    ]
    response = client.post("/v1/collections/team/documents", files=files)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    assert (report["added"], report["failed"]) == (5, 0), report
    return report


def _top_citation(client: TestClient, question: str, source: str) -> dict[str, Any]:
    data = client.post(
        "/v1/query", json={"question": question, "collection": "team", "filters": {"source_glob": f"*{source}"}}
    ).json()
    assert data["citations"], data
    citation: dict[str, Any] = data["citations"][0]
    return citation


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "source", "page", "heading"),
    [
        ("Which office runs the Atlas project?", "handbook.docx", None, "Team handbook > Offices"),
        ("When does the hiring freeze end?", "review.pptx", 2, "Budget"),
        ("Where is the forklift kept?", "stock.xlsx", None, "Inventory"),
        (
            "Which program lets authors manage large projects from novels to screenplays?",
            "history.scanned.pdf",
            4,
            None,
        ),
    ],
    ids=["word-table-cell", "slide-notes", "spreadsheet-row", "scanned-page"],
)
def test_answer_cites_the_right_place(
    client: TestClient, uploaded: dict[str, Any], question: str, source: str, page: int | None, heading: str | None
) -> None:
    citation = _top_citation(client, question, source)
    assert citation["source"] == f"upload://{source}"
    assert (citation["page"], citation["heading"]) == (page, heading), citation
    expected = {"handbook.docx": "Lisbon", "review.pptx": "first of March", "stock.xlsx": "Warehouse 7"}
    if source in expected:
        assert expected[source] in citation["snippet"]
    if source.endswith(".scanned.pdf"):
        assert citation["ocr_confidence"] is not None and citation["ocr_confidence"] > 80
    else:
        assert citation["ocr_confidence"] is None


@pytest.mark.slow
def test_attachment_is_cited_as_a_document_of_its_message(client: TestClient, uploaded: dict[str, Any]) -> None:
    assert uploaded["attachments"] == 2
    citation = _top_citation(client, "What is the TXTB file for?", "mail.eml#attachment/*")
    assert citation["source"] == "upload://mail.eml#attachment/Test TxtB.txt"
    assert citation["parent"] == "upload://mail.eml"


def test_upload_list_and_openapi_name_the_new_formats(client: TestClient) -> None:
    for suffix in (".docx", ".pptx", ".xlsx", ".csv", ".odt", ".rtf", ".epub", ".eml", ".msg", ".png", ".tiff"):
        assert suffix in supported_extensions()
    refused = client.post("/v1/collections/team/documents", files=[("files", ("a.exe", b"MZ", "x"))])
    assert refused.status_code == 415
    assert ".docx" in refused.text and ".msg" in refused.text
    schema = client.get("/openapi.json").json()
    citation = schema["components"]["schemas"]["Citation"]["properties"]
    assert "ocr_confidence" in citation


def test_upload_box_accepts_exactly_the_supported_types(client: TestClient) -> None:
    page = client.get("/documents").text
    accept = re.search(r'<input id="files"[^>]*accept="([^"]*)"', page)
    assert accept is not None, "the upload box names the types it takes"
    assert accept.group(1).split(",") == supported_extensions()


def _chunk_places(ingestor: Ingestor, collection: str) -> dict[str, set[tuple[Any, Any, bool]]]:
    target = ingestor.open_collection(collection)
    places: dict[str, set[tuple[Any, Any, bool]]] = {}
    for page in ingestor.store.iter_chunks(target):
        for chunk in page:
            meta = chunk.metadata
            where = (meta.get("page"), meta.get("heading"), meta.get("ocr_confidence") is not None)
            places.setdefault(Path(str(meta["source"])).name, set()).add(where)
    return places


@pytest.mark.slow
def test_folder_ingest_then_reindex_from_originals_keeps_every_place(tmp_path: Path, embedder: Embedder) -> None:
    folder = tmp_path / "team"
    folder.mkdir()
    (folder / "handbook.docx").write_bytes(_handbook_docx())
    (folder / "review.pptx").write_bytes(_review_pptx())
    (folder / "stock.xlsx").write_bytes(_stock_xlsx())
    (folder / "fox.png").write_bytes((SHARED / "office" / "testOCR_spacing.png").read_bytes())
    (folder / "mail.msg").write_bytes((SHARED / "office" / "testMSG.msg").read_bytes())
    (folder / "book.epub").write_bytes((SHARED / "office" / "testEPUB.epub").read_bytes())
    settings = Settings(data_dir=tmp_path / "kb")
    ingestor = Ingestor(settings, embedder=embedder)
    report = ingestor.ingest_paths([folder], collection="team")
    assert (report.added, report.failed, report.skipped) == (6, 0, 0), report
    before = _chunk_places(ingestor, "team")
    assert {(2, "Budget", False)} <= before["review.pptx"]
    assert (None, "Inventory", False) in before["stock.xlsx"] and (None, "Staff", False) in before["stock.xlsx"]
    assert before["fox.png"] == {(None, None, True)}
    assert (None, "Team handbook > Offices", False) in before["handbook.docx"]

    from ingest.reindex import Reindexer

    progress = Reindexer(settings, "team", store=ingestor.store, embedder=embedder, grace=0).run()
    assert progress.status == "done", progress
    assert _chunk_places(ingestor, "team") == before
