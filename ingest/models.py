"""The data that flows through ingestion: extracted documents, their sections and the chunks made from them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Section:
    """A span of a document's extracted text that shares a page and a heading path.

    `start`/`end` are character offsets into `ExtractedDocument.text`.
    """

    start: int
    end: int
    page: int | None = None
    heading: str | None = None
    ocr_confidence: float | None = None  # mean Tesseract word confidence (0-100) when the text was OCRed


@dataclass(slots=True)
class ExtractedDocument:
    """What a loader returns: the document's whole text, split into located sections."""

    text: str
    title: str
    sections: list[Section]
    kind: str
    warnings: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


@dataclass(slots=True)
class Attachment:
    """A file carried inside a document (an e-mail's attachment), read by its own loader. The pipeline stores
    it as a document of its own, linked to the one that carries it (`ingest/linked.py`)."""

    name: str  # unique among its parent's attachments; the last part of its source
    data: bytes  # its original bytes (kept like any original, for reindex and serving)
    document: ExtractedDocument


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document small enough for the embedder's window, with its provenance."""

    text: str
    start: int
    end: int
    index: int
    page: int | None = None
    heading: str | None = None
    token_count: int = 0
    ocr_confidence: float | None = None

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """A stored document as listed by the store."""

    document_id: str
    source: str
    title: str
    chunk_count: int
    version: str
    kind: str
    display_source: str = ""  # what clients see (never an absolute server path); `source` is the identity
    blob: str = ""  # digest of the original in the blob store (`ingest/blobs.py`); "" if ingested before it
    parent_id: str = ""  # an attachment's: the document id of the message that carries it; "" for a file
    parent: str = ""  # an attachment's: how that message is shown (its display source)
