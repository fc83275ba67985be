"""Builders for real test files (PDFs made with pypdf, never mocked)."""

from __future__ import annotations

import io
from pathlib import Path

from pypdf import PdfReader, PdfWriter

from ingest.pipeline import Ingestor
from server.reader import Reader


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
