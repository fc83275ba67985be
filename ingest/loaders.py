"""File loaders: each turns one file's bytes into an `ExtractedDocument` with located sections.

A loader raises an `IngestError` subclass with a message a user can act on;
it never returns a document without text.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pypdf import PageObject, PdfReader
from pypdf.generic import DictionaryObject, PdfObject, StreamObject

from .config import get_settings
from .errors import (
    BinaryContent,
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    IngestError,
    UnsupportedFileType,
)
from .formats import FORMAT_LOADERS
from .formats.base import SNIFF_BYTES as _SNIFF_BYTES
from .formats.base import check_bytes as _check_bytes
from .formats.base import reason as _reason
from .formats.base import table_lines
from .formats.base import unreadable_as as _unreadable_as
from .formats.scans import ocr_pdf_pages
from .models import ExtractedDocument, Section
from .pdftables import document_tables, rewrite_page
from .pdftext import clean_pages

Loader = Callable[[bytes, str], ExtractedDocument]
logger = logging.getLogger(__name__)

# pypdf's warnings about odd-but-readable PDFs would flood the log on every page.
logging.getLogger("pypdf").setLevel(logging.ERROR)


def _decode_text(data: bytes, name: str) -> str:
    _check_bytes(data, name, kind="text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    controls = sum(1 for ch in text[:_SNIFF_BYTES] if ord(ch) < 32 and ch not in "\n\r\t\f")
    if controls > 0.05 * min(len(text), _SNIFF_BYTES):
        raise BinaryContent(f"{name}: the file holds binary data, not text ({controls} control characters)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _require_text(text: str, name: str) -> None:
    if not text.strip():
        raise EmptyDocument(f"{name}: no text found in the file")


def load_text(data: bytes, name: str) -> ExtractedDocument:
    text = _decode_text(data, name)
    _require_text(text, name)
    return ExtractedDocument(
        text=text, title=_first_line_title(text, name), sections=[Section(0, len(text))], kind="text"
    )


def _first_line_title(text: str, name: str) -> str:
    first = text.strip().split("\n", 1)[0].strip()
    return first[:120] if 0 < len(first) <= 120 else Path(name).stem


# A heading is one short line; anything longer is body text and never reaches the heading parser.
_MAX_HEADING_LINE = 10_000


def atx_heading(line: str) -> tuple[int, str] | None:
    """The level and text of a Markdown ATX heading line (`## Install ##`), or None.

    Written with str methods rather than a regular expression: the former `^(#{1,6})[ \\t]+(.+?)[ \\t#]*$`
    backtracked quadratically on a heading line full of spaces (60,000 of them took 25 s). A closing run
    of `#` only counts when a space precedes it, so `# C#` is the heading `C#`.
    """
    if len(line) > _MAX_HEADING_LINE or not line.startswith("#"):
        return None
    level = len(line) - len(line.lstrip("#"))
    rest = line[level:]
    if level > 6 or rest[:1] not in (" ", "\t"):
        return None
    text = rest.strip(" \t\n")
    closing = text.rstrip("#")
    if not closing or closing[-1] in " \t":
        text = closing.rstrip(" \t")
    return (level, text) if text else None


def _is_fence(line: str) -> bool:
    """A code fence line (three backticks or tildes, after optional indentation)."""
    return line.lstrip().startswith(("```", "~~~"))


def load_markdown(data: bytes, name: str) -> ExtractedDocument:
    """Markdown keeps its text as written; each section carries its heading path ("A > B > C").

    One pass over the lines, constant work per line, so a hostile file costs time linear in its size.
    """
    text = _decode_text(data, name)
    _require_text(text, name)
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    section_start = 0
    section_has_body = False
    current_heading: str | None = None
    title: str | None = None
    in_fence = False
    offset = 0
    for line in text.splitlines(keepends=True):
        if _is_fence(line):
            in_fence = not in_fence
        heading = None if in_fence else atx_heading(line.rstrip("\n"))
        if heading:
            level, heading_text = heading
            title = title or heading_text
            path = [(lvl, h) for lvl, h in path if lvl < level] + [(level, heading_text)]
            if section_has_body:
                sections.append(Section(section_start, offset, heading=current_heading))
                section_start, section_has_body = offset, False
            # else: a heading with no body of its own joins the section that follows it
            current_heading = " > ".join(h for _, h in path)
        elif line.strip():
            section_has_body = True
        offset += len(line)
    if text[section_start:].strip():
        sections.append(Section(section_start, len(text), heading=current_heading))
    return ExtractedDocument(
        text=text, title=title or _first_line_title(text, name), sections=sections, kind="markdown"
    )


_HTML_BLOCKS = ["p", "li", "pre", "blockquote", "td", "th", "dt", "dd", "figcaption", "caption"]
_HTML_HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]


def load_html(data: bytes, name: str) -> ExtractedDocument:
    """HTML through a real parser: scripts, styles and navigation chrome dropped, headings kept as paths."""
    _check_bytes(data, name, kind="HTML")
    with _unreadable_as(CorruptDocument, f"{name}: not a readable HTML file"):
        text, sections, title = html_text(data)
    _require_text(text, name)
    return ExtractedDocument(text=text, title=title or Path(name).stem, sections=sections, kind="html")


def html_document(data: bytes, name: str, *, kind: str) -> ExtractedDocument | None:
    """An HTML part of another format (an EPUB chapter, an e-mail body) as a document, or None if it has no text."""
    with _unreadable_as(CorruptDocument, f"{name}: not readable HTML"):
        text, sections, title = html_text(data)
    return ExtractedDocument(text=text, title=title, sections=sections, kind=kind) if text.strip() else None


def html_text(data: bytes) -> tuple[str, list[Section], str]:
    """The visible text of an HTML document in blocks, its heading sections and its title (or "")."""
    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():  # XHTML (EPUB chapters) is parsed as HTML on purpose
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(data, "lxml")
    for tag in soup(["script", "style", "noscript", "template", "svg", "nav", "iframe"]):
        tag.decompose()
    page_title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.head:
        soup.head.decompose()
    body = soup.body or soup

    parts: list[str] = []
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    heading: str | None = None
    offset = 0
    section_start = 0
    first_heading: str | None = None
    data_tables: dict[int, bool] = {}
    for element in body.find_all([*_HTML_HEADINGS, *_HTML_BLOCKS, "table"]):
        if element.name == "table":
            if not _is_data_table(element, data_tables):
                continue  # a layout table: its cells are read as blocks
            for line in table_lines(_table_rows(element)):  # one block per row, each with its header labels
                parts.append(line + "\n\n")
                offset += len(line) + 2
            continue
        if element.name not in _HTML_HEADINGS and element.find_parent(_HTML_BLOCKS):
            continue  # its text is already part of an enclosing block
        table = element.find_parent("table")
        if table is not None and _is_data_table(table, data_tables):
            continue  # read with its table's rows
        text = element.get_text(" ", strip=True) if element.name != "pre" else element.get_text()
        text = text.strip()
        if element.name in _HTML_HEADINGS:
            text = text.rstrip("¶ ")  # the permalink mark documentation generators put in headings
        if not text:
            continue
        if element.name in _HTML_HEADINGS:
            if offset > section_start:
                sections.append(Section(section_start, offset, heading=heading))
            level = int(element.name[1])
            path = [(lvl, h) for lvl, h in path if lvl < level] + [(level, text)]
            heading = " > ".join(h for _, h in path)
            first_heading = first_heading or text
            section_start = offset
        parts.append(text + "\n\n")
        offset += len(text) + 2
    if not parts:  # no block markup at all: fall back to the visible text
        loose = body.get_text("\n", strip=True)
        if loose:
            parts, offset = [loose + "\n"], len(loose) + 1
    if offset > section_start:
        sections.append(Section(section_start, offset, heading=heading))
    return "".join(parts), sections, page_title or first_heading or ""


def _is_data_table(table: Any, seen: dict[int, bool]) -> bool:
    """Whether a table holds data (read as rows labelled by its header row, like every other format's tables)
    rather than lay a page out: not inside another block, and no heading or table inside it."""
    key = id(table)
    if key not in seen:
        seen[key] = table.find_parent(_HTML_BLOCKS) is None and table.find([*_HTML_HEADINGS, "table"]) is None
    return seen[key]


def _table_rows(table: Any) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in table.find_all("tr"):
        cells = row.find_all(["td", "th"], recursive=False)
        rows.append([cell.get_text(" ", strip=True) for cell in cells])
    return rows


def load_pdf(data: bytes, name: str) -> ExtractedDocument:
    """PDF through pypdf, page by page, cleaned of page furniture (see `pdftext`); one section per page,
    with its 1-based page number, indexing the final text exactly.
    """
    _check_bytes(data, name, kind="PDF", binary_ok=True)
    reader = _open_pdf(data, name)
    with _unreadable_as(CorruptDocument, f"{name}: not a readable PDF"):
        page_count = len(reader.pages)  # walks the whole page tree: a crafted one fails here
    if not page_count:
        raise EmptyDocument(f"{name}: the PDF has no pages")
    raw, warnings = _extract_pages(reader, page_count)
    scans = ocr_pdf_pages(reader, [i for i, page in enumerate(raw) if page is not None and _few_chars(page)])
    raw = [scans.texts.get(index, page) for index, page in enumerate(raw)]
    warnings.extend(scans.warnings)
    cleaned = clean_pages([page or "" for page in raw])
    tables = document_tables(data, cleaned)  # table rows with their column headers (ingest/pdftables.py)
    cleaned = [rewrite_page(text, found) for text, found in zip(cleaned, tables, strict=True)]
    parts: list[str] = []
    sections: list[Section] = []
    offset = 0
    for number, (before, text) in enumerate(zip(raw, cleaned, strict=True), start=1):
        if not text:
            if before is not None:
                reason = "no extractable text (scanned image?)" if not before.strip() else "only page furniture"
                if not before.strip() and scans.unavailable:
                    reason = f"no text layer, and not OCRed: {scans.unavailable}"
                warnings.append(f"page {number}: {reason}")
            continue
        sections.append(
            Section(offset, offset + len(text), page=number, ocr_confidence=scans.confidences.get(number - 1))
        )
        parts.append(text + "\n\n")
        offset += len(text) + 2
    full = "".join(parts)
    if not full.strip():
        detail = (
            f"run OCR first: {scans.unavailable}"
            if scans.unavailable
            else (scans.warnings[0] if scans.warnings else "OCR found no text on them either")
        )
        raise EmptyDocument(
            f"{name}: no extractable text in {page_count} page(s); it looks like a scanned or image-only PDF ({detail})"
        )
    return ExtractedDocument(
        text=full, title=_pdf_title(reader) or Path(name).stem, sections=sections, kind="pdf", warnings=warnings
    )


def _few_chars(page_text: str) -> bool:
    """Whether a page's text layer is so thin (none, or a stray page number) that the page is a scan."""
    return len("".join(page_text.split())) < get_settings().ocr_min_chars


def _open_pdf(data: bytes, name: str) -> PdfReader:
    """A reader for the PDF, decrypted if it opens with the empty password; every failure is an `IngestError`."""
    with _unreadable_as(CorruptDocument, f"{name}: not a readable PDF"):
        reader = PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted
    if encrypted:
        with _unreadable_as(EncryptedDocument, f"{name}: the PDF is encrypted and cannot be opened"):
            opened = reader.decrypt("")
        if not opened:
            raise EncryptedDocument(f"{name}: the PDF is password-protected; ragkb cannot read it")
    return reader


def _extract_pages(reader: PdfReader, page_count: int) -> tuple[list[str | None], list[str]]:
    """Each page's raw text (None where extraction failed) and a warning per failed page.

    One damaged page should not lose the rest of the document, so a page's failure is a warning.
    """
    texts: list[str | None] = []
    warnings: list[str] = []
    for index in range(page_count):
        try:
            page = reader.pages[index]
            ignore_embedded_cff_encodings(page)
            texts.append(page.extract_text() or "")
        except MemoryError:
            raise
        except Exception as exc:
            texts.append(None)
            warnings.append(f"page {index + 1}: text extraction failed ({_reason(exc)})")
    return texts, warnings


def _pdf_title(reader: PdfReader) -> str:
    """The title from the document information, or "" when it is missing or unreadable."""
    try:
        metadata = reader.metadata
        return str(metadata.get("/Title") or "").strip() if metadata else ""
    except MemoryError:
        raise
    except Exception:  # a broken info dictionary costs the title, not the document
        return ""


# How deep form XObjects may nest inside each other before the font walk stops looking.
_MAX_RESOURCE_DEPTH = 8


def ignore_embedded_cff_encodings(page: PageObject) -> None:
    """Make pypdf read Type1 CFF fonts by their declared encoding, not the one embedded in the font program.

    With fontTools installed, pypdf decodes a Type1 font's embedded CFF program (`/FontFile3` of
    subtype `/Type1C`) for its encoding when the font has no `/ToUnicode` map. On the shared test PDFs
    that turns the Senate expenditures table into noise (`o(hô..i.p3xSTRxtT3x…`) and changes nothing
    else, so ragkb must behave the same whether or not fontTools happens to be installed.

    This used to be done by setting pypdf's private `_font.HAS_FONTTOOLS` at import time, which
    changed pypdf for the whole process. Instead, the reference to the font program is dropped from
    the font descriptors of this page's fonts, in this reader's copy of the document only: pypdf then
    takes the same path as without fontTools (the program is used for nothing else when extracting
    text). Without fontTools this changes nothing.
    """
    resources = page.get("/Resources")
    for font in _fonts(resources, depth=0, seen=set()):
        if font.get("/Subtype") not in ("/Type1", "/MMType1") or "/ToUnicode" in font:
            continue
        descriptor = _resolved(font.get("/FontDescriptor"))
        if isinstance(descriptor, DictionaryObject):
            program = _resolved(descriptor.get("/FontFile3"))
            if isinstance(program, StreamObject) and program.get("/Subtype") == "/Type1C":
                del descriptor["/FontFile3"]


def _fonts(resources: object, depth: int, seen: set[int]) -> Iterator[DictionaryObject]:
    """The font dictionaries of a resource dictionary and of the form XObjects it holds, each once."""
    resources = _resolved(resources)
    if not isinstance(resources, DictionaryObject) or id(resources) in seen or depth > _MAX_RESOURCE_DEPTH:
        return
    seen.add(id(resources))
    fonts = _resolved(resources.get("/Font"))
    if isinstance(fonts, DictionaryObject):
        for font in fonts.values():
            font = _resolved(font)
            if isinstance(font, DictionaryObject):
                yield font
    xobjects = _resolved(resources.get("/XObject"))
    if isinstance(xobjects, DictionaryObject):
        for xobject in xobjects.values():
            xobject = _resolved(xobject)
            if isinstance(xobject, StreamObject) and xobject.get("/Subtype") == "/Form":
                yield from _fonts(xobject.get("/Resources"), depth + 1, seen)


def _resolved(value: object) -> object:
    return value.get_object() if isinstance(value, PdfObject) else value


LOADERS: dict[str, Loader] = {
    ".pdf": load_pdf,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".txt": load_text,
    ".text": load_text,
    ".html": load_html,
    ".htm": load_html,
    **FORMAT_LOADERS,
}


def supported_extensions() -> list[str]:
    return sorted(LOADERS)


def loader_for(name: str) -> Loader:
    suffix = Path(name).suffix.lower()
    try:
        return LOADERS[suffix]
    except KeyError:
        shown = suffix or "(no extension)"
        raise UnsupportedFileType(
            f"{name}: unsupported file type {shown}; supported: {', '.join(supported_extensions())}"
        ) from None


def load_bytes(data: bytes, name: str) -> ExtractedDocument:
    """Load a document from its bytes, choosing the loader by the name's extension.

    Whatever goes wrong inside a loader on one file ends as an `IngestError` naming that file, so a
    batch goes on; an exception no loader anticipated is also logged with its traceback, since it may
    be a bug in ragkb rather than in the file.
    """
    loader = loader_for(name)
    try:
        return loader(data, name)
    except (IngestError, MemoryError):
        raise
    except Exception as exc:
        logger.warning("unexpected error loading %s", name, exc_info=True)
        raise CorruptDocument(f"{name}: could not be read ({_reason(exc)})") from exc
