"""File loaders: each turns one file's bytes into an `ExtractedDocument` with located sections.

A loader raises an `IngestError` subclass with a message a user can act on;
it never returns a document without text.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from pathlib import Path

from .errors import (
    BinaryContent,
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    UnsupportedFileType,
)
from .models import ExtractedDocument, Section

Loader = Callable[[bytes, str], ExtractedDocument]

# pypdf's warnings about odd-but-readable PDFs would flood the log on every page.
logging.getLogger("pypdf").setLevel(logging.ERROR)


def _disable_pypdf_fonttools() -> None:
    """Keep pypdf from decoding CFF fonts with fontTools, whether or not fontTools is installed.

    Measured on the shared test PDFs: with fontTools, the Senate expenditures PDF comes out as
    garbage (`o(hô..i.p3xSTRxtT3x…`) while every other PDF extracts identically; without it all of
    them are clean. Fixing it here makes extraction independent of what else happens to be installed.
    """
    try:
        from pypdf.generic import _font

        _font.HAS_FONTTOOLS = False
    except (ImportError, AttributeError):  # a pypdf without the switch: nothing to do
        pass


_disable_pypdf_fonttools()


def _decode_text(data: bytes, name: str) -> str:
    if not data.strip():
        raise EmptyDocument(f"{name}: the file is empty")
    if b"\x00" in data[:8192]:
        raise BinaryContent(f"{name}: the file holds binary data, not text (NUL bytes found)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    controls = sum(1 for ch in text[:8192] if ord(ch) < 32 and ch not in "\n\r\t\f")
    if controls > 0.05 * min(len(text), 8192):
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


_ATX_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _has_body(block: str) -> bool:
    return any(line.strip() and not _ATX_HEADING.match(line) for line in block.splitlines())


def load_markdown(data: bytes, name: str) -> ExtractedDocument:
    """Markdown keeps its text as written; each section carries its heading path ("A > B > C")."""
    text = _decode_text(data, name)
    _require_text(text, name)
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    section_start = 0
    current_heading: str | None = None
    title: str | None = None
    in_fence = False
    offset = 0
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _ATX_HEADING.match(line.rstrip("\n"))
        if match:
            level, heading = len(match.group(1)), match.group(2).strip()
            title = title or heading
            path = [(lvl, h) for lvl, h in path if lvl < level] + [(level, heading)]
            if _has_body(text[section_start:offset]):
                sections.append(Section(section_start, offset, heading=current_heading))
                section_start = offset
            # else: a heading with no body of its own joins the section that follows it
            current_heading = " > ".join(h for _, h in path)
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
    from bs4 import BeautifulSoup

    if not data.strip():
        raise EmptyDocument(f"{name}: the file is empty")
    if b"\x00" in data[:8192]:
        raise BinaryContent(f"{name}: the file holds binary data, not HTML (NUL bytes found)")
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
    for element in body.find_all(_HTML_HEADINGS + _HTML_BLOCKS):
        if element.name not in _HTML_HEADINGS and element.find_parent(_HTML_BLOCKS):
            continue  # its text is already part of an enclosing block
        text = element.get_text(" ", strip=True) if element.name != "pre" else element.get_text()
        text = text.strip()
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
    full = "".join(parts)
    _require_text(full, name)
    if offset > section_start:
        sections.append(Section(section_start, offset, heading=heading))
    return ExtractedDocument(
        text=full, title=page_title or first_heading or Path(name).stem, sections=sections, kind="html"
    )


def load_pdf(data: bytes, name: str) -> ExtractedDocument:
    """PDF through pypdf, page by page; page numbers (1-based) are kept on every section."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if not data.strip():
        raise EmptyDocument(f"{name}: the file is empty")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception as exc:
                raise EncryptedDocument(f"{name}: the PDF is encrypted and cannot be opened ({exc})") from exc
            if not opened:
                raise EncryptedDocument(f"{name}: the PDF is password-protected; ragkb cannot read it")
        pages = list(reader.pages)
    except EncryptedDocument:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, AssertionError) as exc:
        raise CorruptDocument(f"{name}: not a readable PDF ({exc})") from exc
    if not pages:
        raise EmptyDocument(f"{name}: the PDF has no pages")

    parts: list[str] = []
    sections: list[Section] = []
    warnings: list[str] = []
    offset = 0
    for number, page in enumerate(pages, start=1):
        try:
            text = (page.extract_text() or "").strip()
        except Exception as exc:  # one damaged page should not lose the rest of the document
            warnings.append(f"page {number}: text extraction failed ({exc})")
            continue
        if not text:
            warnings.append(f"page {number}: no extractable text (scanned image?)")
            continue
        sections.append(Section(offset, offset + len(text), page=number))
        parts.append(text + "\n\n")
        offset += len(text) + 2
    full = "".join(parts)
    if not full.strip():
        raise EmptyDocument(
            f"{name}: no extractable text in {len(pages)} page(s); it looks like a scanned or image-only "
            "PDF (run OCR first)"
        )
    title = ""
    try:
        metadata = reader.metadata
        title = str(metadata.get("/Title") or "").strip() if metadata else ""
    except Exception:
        title = ""
    return ExtractedDocument(
        text=full, title=title or Path(name).stem, sections=sections, kind="pdf", warnings=warnings
    )


LOADERS: dict[str, Loader] = {
    ".pdf": load_pdf,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".txt": load_text,
    ".text": load_text,
    ".html": load_html,
    ".htm": load_html,
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
    """Load a document from its bytes, choosing the loader by the name's extension."""
    return loader_for(name)(data, name)
