"""Builders for real test files (PDFs made with pypdf, never mocked)."""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import Sequence
from pathlib import Path

from pypdf import PdfReader, PdfWriter

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.answering.reader import Reader
from server.answering.service import QueryService
from server.schemas import QueryResponse


def encrypted_pdf(source: Path, password: str = "s3cret") -> bytes:
    writer = PdfWriter()
    for page in PdfReader(source).pages:
        writer.add_page(page)
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def blank_pdf(pages: int = 2) -> bytes:
    """A well-formed PDF with pages but no text layer, like a scan without OCR."""
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=612, height=792)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def truncated_pdf(source: Path) -> bytes:
    data = source.read_bytes()
    return data[: len(data) // 3]


def reader_for(ingestor: Ingestor) -> Reader:
    """The read side over the same store and model as a write side (as one server process holds them)."""
    return Reader(ingestor.settings, store=ingestor.store, embedder=ingestor.embedder)


def raw_pdf(objects: list[bytes]) -> bytes:
    """A PDF file from object bodies (object n is objects[n - 1]; object 1 is the catalog), with a correct xref."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def page_tree_pdf(depth: int, text: str = "Deep page tree") -> bytes:
    """One page under `depth` nested /Pages nodes (pypdf refuses more than 100 levels)."""
    first_node, leaf = 2, 2 + depth
    content = b"BT /F1 12 Tf 72 720 Td (%s) Tj ET" % text.encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    for node in range(first_node, leaf):
        parent = b" /Parent %d 0 R" % (node - 1) if node > first_node else b""
        objects.append(b"<< /Type /Pages /Kids [%d 0 R] /Count 1%s >>" % (node + 1, parent))
    objects.append(
        b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
        b" /Resources << /Font << /F1 %d 0 R >> >> >>" % (leaf - 1, leaf + 1, leaf + 2)
    )
    objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return raw_pdf(objects)


# Page 2 of federal-register-2020-17221.pdf (the shared PDFs), as pypdf extracts it: the Ethiopian
# Airlines paragraph.
ACCIDENT = (
    "On March 10, 2019, only four months\n"
    "after the FAA issued Emergency AD\n"
    "2018–23–51, a second fatal accident\n"
    "occurred involving a 737 MAX airplane.\n"
    "Ethiopian Airlines Flight 302 crashed\n"
    "shortly after takeoff from Addis Ababa,\n"
    "Ethiopia, resulting in 157 fatalities.\n"
)


def pdf_collection(root: Path, data_dir: Path, embedder: Embedder, shared_pdfs: Path, names: Sequence[str]) -> Ingestor:
    """The shared PDFs `names` (copied into `root`) ingested into collection "pdfs" of a fresh store."""
    for name in names:
        shutil.copy(shared_pdfs / name, root)
    ingestor = Ingestor(Settings(data_dir=data_dir, default_collection="pdfs"), embedder=embedder)
    assert ingestor.ingest_paths([root], collection="pdfs").added == len(names)
    return ingestor


def answer_once(service: QueryService, question: str, collection: str = "pdfs") -> QueryResponse:
    """One answer from a fresh service, closed afterwards."""

    async def run() -> QueryResponse:
        try:
            return await service.answer(question, collection=collection)
        finally:
            await service.aclose()

    return asyncio.run(run())
