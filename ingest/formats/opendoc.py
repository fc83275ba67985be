"""OpenDocument text (ODT): `content.xml` read directly through defusedxml (odfpy would add a dependency
for what is one XML walk). Kept: headings (`text:h` with its outline level) as the heading path,
paragraphs, list items ("- "), tables as labelled rows, footnotes and endnotes (a section at the end).
An encrypted package (its manifest declares `encryption-data`) is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CorruptDocument, EncryptedDocument
from ..models import ExtractedDocument
from .base import MAX_TABLE_COLUMNS, MAX_TABLE_ROWS, MAX_XML_DEPTH, SafeZip, TextBuilder, parse_xml, table_lines
from .base import local as _local
from .base import too_deep as _too_deep

TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"


class _Reader:
    def __init__(self, name: str) -> None:
        self.name = name
        self.out = TextBuilder()
        self.path: list[tuple[int, str]] = []
        self.notes: list[str] = []
        self.title = ""

    def blocks(self, parent: Any, depth: int, item: bool = False) -> None:
        if depth > MAX_XML_DEPTH:
            raise _too_deep(self.name)
        for child in parent:
            tag = child.tag
            if tag == f"{TEXT}h":
                text = self.inline(child, depth)
                if text:
                    level = int(child.get(f"{TEXT}outline-level") or "1")
                    self.path = [(lvl, h) for lvl, h in self.path if lvl < level] + [(level, text)]
                    self.out.section(heading=" > ".join(h for _, h in self.path))
                    self.title = self.title or text
                    self.out.add(text)
            elif tag == f"{TEXT}p":
                text = self.inline(child, depth)
                self.out.add(f"- {text}" if item and text else text)
            elif tag == f"{TEXT}list":
                for list_item in child:
                    self.blocks(list_item, depth + 1, item=True)
            elif tag == f"{TABLE}table":
                for line in table_lines(self.table(child, depth)):
                    self.out.add(line)
            elif tag in (f"{TEXT}section", f"{TEXT}list-header", f"{TABLE}table-header-rows"):
                self.blocks(child, depth + 1, item)

    def inline(self, element: Any, depth: int) -> str:
        pieces: list[str] = [element.text or ""]
        self._inline_children(element, pieces, depth)
        return "".join(pieces).strip()

    def _inline_children(self, element: Any, out: list[str], depth: int) -> None:
        if depth > MAX_XML_DEPTH:
            raise _too_deep(self.name)
        for child in element:
            tag = child.tag
            if tag == f"{TEXT}s":
                out.append(" " * min(int(child.get(f"{TEXT}c") or "1"), 100))
            elif tag == f"{TEXT}tab":
                out.append("\t")
            elif tag == f"{TEXT}line-break":
                out.append("\n")
            elif tag == f"{TEXT}note":
                body = child.find(f"{TEXT}note-body")
                if body is not None:
                    note = " ".join(self.inline(p, depth + 1) for p in body.iter(f"{TEXT}p"))
                    citation = child.find(f"{TEXT}note-citation")
                    mark = (citation.text or "").strip() if citation is not None else ""
                    self.notes.append(f"[{mark}] {note}" if mark else note)
            elif _local(tag) in ("annotation", "tracked-changes", "bookmark", "soft-page-break"):
                pass
            else:
                out.append(child.text or "")
                self._inline_children(child, out, depth + 1)
            out.append(child.tail or "")

    def table(self, table: Any, depth: int) -> list[list[str]]:
        rows: list[list[str]] = []
        for row in table.iter(f"{TABLE}table-row"):
            if len(rows) >= MAX_TABLE_ROWS:
                self.out.warnings.append(f"tables: only the first {MAX_TABLE_ROWS} rows are read")
                break
            cells: list[str] = []
            for cell in row:
                if _local(cell.tag) not in ("table-cell", "covered-table-cell"):
                    continue
                text = " ".join(self.inline(p, depth + 1) for p in cell.iter(f"{TEXT}p")).strip()
                repeat = int(cell.get(f"{TABLE}number-columns-repeated") or "1")
                cells.extend([text] * min(repeat if text else 1, MAX_TABLE_COLUMNS - len(cells)))
                if len(cells) >= MAX_TABLE_COLUMNS:
                    break
            rows.append(cells)
        return rows


def load_odt(data: bytes, name: str) -> ExtractedDocument:
    archive = SafeZip(data, name, kind="ODT")
    manifest = archive.read_optional("META-INF/manifest.xml")
    if manifest and b"encryption-data" in manifest:
        raise EncryptedDocument(f"{name}: the ODT file is password-protected; ragkb cannot read it")
    content = archive.read_optional("content.xml")
    if content is None:
        raise CorruptDocument(f"{name}: not an OpenDocument text (no content.xml part)")
    root = parse_xml(content, name, "content.xml")
    body = root.find(f"{OFFICE}body/{OFFICE}text")
    if body is None:
        raise CorruptDocument(f"{name}: content.xml holds no text body (is it a spreadsheet or a drawing?)")
    reader = _Reader(name)
    reader.blocks(body, 0)
    if reader.notes:
        reader.out.section(heading="Notes")
        for note in reader.notes:
            reader.out.add(note)
    title = ""
    meta = archive.read_optional("meta.xml")
    if meta:
        for element in parse_xml(meta, name, "meta.xml").iter():
            if _local(element.tag) == "title" and (element.text or "").strip():
                title = str(element.text).strip()
                break
    return reader.out.build(name, title=title or reader.title or Path(name).stem, kind="odt")
