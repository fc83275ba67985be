"""What every loader shares: the input checks, turning library exceptions into `IngestError`s, building
text with located sections, opening ZIP containers within limits and parsing XML without entity expansion.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..errors import BinaryContent, CorruptDocument, EmptyDocument, EncryptedDocument, FileTooLarge, IngestError
from ..models import ExtractedDocument, Section

# The first bytes looked at for NUL and control characters: enough to tell text from binary.
SNIFF_BYTES = 8192

# ZIP containers (DOCX, PPTX, XLSX, ODT, EPUB): what a real document needs, far below what a bomb unpacks to.
MAX_ZIP_MEMBERS = 10_000
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_COMPRESSION_RATIO = 200  # checked on members above RATIO_FLOOR bytes; XML compresses 5-30x
RATIO_FLOOR = 1024 * 1024

# How deep the element trees a loader walks may nest (Word's tables in tables, lists in lists).
MAX_XML_DEPTH = 200

# Table and spreadsheet bounds: rows per sheet, columns per row, characters per cell.
MAX_TABLE_ROWS = 50_000
MAX_TABLE_COLUMNS = 256
MAX_CELL_CHARS = 2_000

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


@contextmanager
def unreadable_as(error: type[IngestError], message: str) -> Iterator[None]:
    """Turn whatever a parsing library raises on hostile input into `error(message: reason)`.

    Parsing libraries raise a wide and changing set of exceptions on crafted files (`RecursionError`,
    `struct.error`, `KeyError`, ...); one of them escaping a loader aborts a whole batch, so everything
    becomes an `IngestError`, except `MemoryError` (the process is in trouble, not the file) and what is
    not an `Exception` at all (KeyboardInterrupt, SystemExit).
    """
    try:
        yield
    except (IngestError, MemoryError):
        raise
    except Exception as exc:
        raise error(f"{message} ({reason(exc)})") from exc


def reason(exc: BaseException) -> str:
    """An exception as a short reason for a message: a library may put a whole object's repr in one."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:199] + "…"


def check_bytes(data: bytes, name: str, *, kind: str, binary_ok: bool = False) -> None:
    """The checks every loader makes before parsing: the file is not empty and, for text formats, not binary.

    Empty or whitespace-only input is `EmptyDocument` for every type; callers rely on loaders for that.
    """
    if not data.strip():
        raise EmptyDocument(f"{name}: the file is empty")
    if not binary_ok and b"\x00" in data[:SNIFF_BYTES]:
        raise BinaryContent(f"{name}: the file holds binary data, not {kind} (NUL bytes found)")


def decode_text(data: bytes) -> str:
    """Text bytes as str: UTF-8 (with or without BOM), else Latin-1; newlines normalised."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def clip(text: str, limit: int = MAX_CELL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_row(headers: Sequence[str], values: Sequence[str]) -> str:
    """A table row as "Header: value; Header: value" (cells without a value left out; a column without a
    header labelled by its number), so a row retrieved alone still says what each value is."""
    pairs: list[str] = []
    for index, value in enumerate(values):
        value = " ".join(value.split())
        if not value:
            continue
        label = " ".join(headers[index].split()) if index < len(headers) else ""
        pairs.append(f"{label or f'Column {index + 1}'}: {clip(value)}")
    return "; ".join(pairs)


def table_lines(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of a table as lines: the first non-empty row is the header, each later row carries its labels.
    A table of one row (a layout table, a banner) is that row's cells."""
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return []
    if len(rows) == 1:
        return ["; ".join(clip(" ".join(cell.split())) for cell in rows[0] if cell.strip())]
    headers = list(rows[0])
    return [line for line in (format_row(headers, row) for row in rows[1:]) if line]


@dataclass
class TextBuilder:
    """Text built block by block ("\\n\\n" between blocks), cut into sections that index it exactly."""

    parts: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    offset: int = 0
    _start: int = 0
    _end: int = 0
    _page: int | None = None
    _heading: str | None = None
    _confidence: float | None = None

    def section(self, *, page: int | None = None, heading: str | None = None, confidence: float | None = None) -> None:
        """Start a new section here (the one before it closes if it has text)."""
        self._close()
        self._start = self._end = self.offset
        self._page, self._heading, self._confidence = page, heading, confidence

    def add(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        if self._end == self._start:
            self._start = self.offset
        self.parts.append(text + "\n\n")
        self._end = self.offset + len(text)
        self.offset += len(text) + 2

    def add_document(self, document: ExtractedDocument, *, heading_prefix: str, keep_inner: bool = False) -> None:
        """Another document's text (an attachment, a chapter) with its own sections, each headed
        "prefix > its heading" (or, with `keep_inner`, by its own heading where it has one)."""
        self._close()
        base = self.offset
        for section in document.sections:
            inner = section.heading
            heading = f"{heading_prefix} > {inner}" if inner and not keep_inner else (inner or heading_prefix)
            text = document.text[section.start : section.end]
            lead = len(text) - len(text.lstrip())
            stripped = text.strip()
            if not stripped:
                continue
            start = base + section.start + lead
            confidence = section.ocr_confidence
            self.sections.append(Section(start, start + len(stripped), section.page, heading, confidence))
        body = document.text if document.text.endswith("\n\n") else document.text.rstrip("\n") + "\n\n"
        self.parts.append(body)
        self.offset += len(body)
        self._start = self._end = self.offset
        self.warnings.extend(f"{heading_prefix}: {warning}" for warning in document.warnings)

    def _close(self) -> None:
        if self._end > self._start:
            self.sections.append(
                Section(self._start, self._end, page=self._page, heading=self._heading, ocr_confidence=self._confidence)
            )
        self._start = self._end = self.offset

    def build(self, name: str, *, title: str, kind: str) -> ExtractedDocument:
        self._close()
        text = "".join(self.parts)
        if not text.strip():
            raise EmptyDocument(f"{name}: no text found in the file")
        return ExtractedDocument(text=text, title=title, sections=self.sections, kind=kind, warnings=self.warnings)


class SafeZip:
    """A ZIP container opened within limits: member count, each member's and the total unpacked size, the
    compression ratio of large members; encrypted members refused. `zipfile` never reads past a member's
    declared size, so checking the declared sizes bounds what is read."""

    def __init__(self, data: bytes, name: str, *, kind: str) -> None:
        self.name, self.kind = name, kind
        check_bytes(data, name, kind=kind, binary_ok=True)
        if data.startswith(OLE_MAGIC):
            raise refuse_ole(data, name, kind)
        with unreadable_as(CorruptDocument, f"{name}: not a readable {kind} file"):
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            infos = self.zip.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise FileTooLarge(f"{name}: the {kind} archive holds {len(infos)} parts (limit {MAX_ZIP_MEMBERS})")
        total = 0
        for info in infos:
            if info.flag_bits & 0x1:
                raise EncryptedDocument(f"{name}: the {kind} file is password-protected; ragkb cannot read it")
            total += info.file_size
            too_big = info.file_size > MAX_MEMBER_BYTES or total > MAX_UNPACKED_BYTES
            ratio = info.file_size / max(info.compress_size, 1)
            if too_big or (info.file_size > RATIO_FLOOR and ratio > MAX_COMPRESSION_RATIO):
                raise FileTooLarge(
                    f"{name}: the {kind} file unpacks to more than ragkb reads ({info.filename!r}: "
                    f"{info.file_size} bytes, {ratio:.0f}x compressed; limits {MAX_MEMBER_BYTES} bytes a part, "
                    f"{MAX_UNPACKED_BYTES} in all, {MAX_COMPRESSION_RATIO}x); it may be a zip bomb"
                )
        self.names = {info.filename for info in infos}

    def read(self, member: str) -> bytes:
        with unreadable_as(CorruptDocument, f"{self.name}: damaged {self.kind} part {member!r}"):
            return self.zip.read(member)

    def read_optional(self, member: str) -> bytes | None:
        return self.read(member) if member in self.names else None


def refuse_ole(data: bytes, name: str, kind: str) -> IngestError:
    """The error for an OLE2 compound file where a ZIP container was expected: a password-protected Office
    file (Office wraps the encrypted package in OLE2), or a legacy binary file with a new extension."""
    if b"E\x00n\x00c\x00r\x00y\x00p\x00t\x00i\x00o\x00n\x00I\x00n\x00f\x00o" in data:
        return EncryptedDocument(f"{name}: the {kind} file is password-protected; ragkb cannot read it")
    return CorruptDocument(
        f"{name}: this is a legacy binary Office file (OLE2), not {kind}; save it as {kind} and ingest that"
    )


def parse_xml(data: bytes, name: str, part: str) -> Any:
    """An XML part as an ElementTree element, with DTDs, entity declarations and external references
    refused (defusedxml): no billion laughs, no external entities."""
    import defusedxml.ElementTree as safe_et
    from defusedxml import DefusedXmlException

    try:
        return safe_et.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise CorruptDocument(f"{name}: {part} declares XML entities, which ragkb refuses ({reason(exc)})") from exc
    except Exception as exc:
        raise CorruptDocument(f"{name}: {part} is not well-formed XML ({reason(exc)})") from exc


def too_deep(name: str) -> CorruptDocument:
    return CorruptDocument(f"{name}: the document nests deeper than {MAX_XML_DEPTH} levels; ragkb does not read it")


def local(tag: object) -> str:
    """An element's tag without its namespace."""
    text = str(tag)
    return text.rsplit("}", 1)[-1]
