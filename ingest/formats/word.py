"""Word (DOCX): the WordprocessingML parts read directly, through defusedxml.

python-docx was the obvious choice, but it reads neither footnotes, endnotes nor text boxes, which the
issue asks for; the parts are plain XML, so reading them here keeps every piece and one safe parser.
Kept: headings as the heading path, paragraphs, list items ("- "), tables as labelled rows, text boxes,
footnotes and endnotes (a section each at the end). Dropped: page headers and footers, comments, field
codes, deleted revisions, and the fallback copy of each drawing (`mc:Fallback`, which repeats text boxes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import CorruptDocument, IngestError
from ..models import ExtractedDocument
from .base import MAX_TABLE_COLUMNS, MAX_TABLE_ROWS, MAX_XML_DEPTH, SafeZip, TextBuilder, parse_xml, table_lines
from .base import local as _local
from .base import too_deep as _too_deep

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)


class _Styles:
    """Paragraph style ids to heading levels (from the style's name or outline level) and the title style."""

    def __init__(self, root: Any | None) -> None:
        self.levels: dict[str, int] = {}
        self.titles: set[str] = set()
        if root is None:
            return
        for style in root.iter(f"{W}style"):
            style_id = style.get(f"{W}styleId") or ""
            name_el = style.find(f"{W}name")
            style_name = (name_el.get(f"{W}val") if name_el is not None else "") or ""
            match = _HEADING_STYLE.match(style_name) or _HEADING_STYLE.match(style_id)
            outline = style.find(f"{W}pPr/{W}outlineLvl")
            if match:
                self.levels[style_id] = int(match.group(1))
            elif outline is not None and (outline.get(f"{W}val") or "").isdigit():
                level = int(outline.get(f"{W}val") or "9") + 1
                if level <= 9:
                    self.levels[style_id] = level
            if style_name.lower() == "title" or style_id.lower() == "title":
                self.titles.add(style_id)


class _Reader:
    def __init__(self, name: str, styles: _Styles) -> None:
        self.name, self.styles = name, styles
        self.out = TextBuilder()
        self.path: list[tuple[int, str]] = []
        self.title = ""
        self.rows = 0

    def blocks(self, parent: Any, depth: int) -> None:
        """The block content of a body, cell, text box or note, in document order."""
        if depth > MAX_XML_DEPTH:
            raise _too_deep(self.name)
        for child in parent:
            tag = child.tag
            if tag == f"{W}p":
                self.paragraph(child, depth)
            elif tag == f"{W}tbl":
                for line in table_lines(self.table(child, depth)):
                    self.out.add(line)
            elif tag in (f"{W}sdt", f"{W}customXml", f"{W}smartTag"):
                content = child.find(f"{W}sdtContent")
                self.blocks(content if content is not None else child, depth + 1)

    def paragraph(self, p: Any, depth: int) -> None:
        pieces: list[str] = []
        boxes: list[Any] = []
        _inline(p, pieces, boxes, depth, self.name)
        text = "".join(pieces).strip()
        style_el = p.find(f"{W}pPr/{W}pStyle")
        style = (style_el.get(f"{W}val") if style_el is not None else "") or ""
        level = self.styles.levels.get(style)
        if level is None and (match := _HEADING_STYLE.match(style)):  # a style id used without styles.xml
            level = int(match.group(1))
        outline = p.find(f"{W}pPr/{W}outlineLvl")
        outline_value = (outline.get(f"{W}val") if outline is not None else "") or ""
        if level is None and outline_value.isdigit() and int(outline_value) < 9:
            level = int(outline_value) + 1
        if text and style in self.styles.titles:
            self.title = self.title or text
        if text and level is not None:
            self.path = [(lvl, h) for lvl, h in self.path if lvl < level] + [(level, text)]
            self.out.section(heading=" > ".join(h for _, h in self.path))
            self.title = self.title or text
            self.out.add(text)
        elif text:
            is_item = p.find(f"{W}pPr/{W}numPr") is not None
            self.out.add(f"- {text}" if is_item else text)
        for box in boxes:
            self.blocks(box, depth + 1)

    def table(self, tbl: Any, depth: int) -> list[list[str]]:
        rows: list[list[str]] = []
        for tr in tbl.findall(f"{W}tr"):
            self.rows += 1
            if self.rows > MAX_TABLE_ROWS:
                self.out.warnings.append(f"tables: only the first {MAX_TABLE_ROWS} rows are read")
                break
            cells = [self.cell_text(tc, depth + 1) for tc in tr.findall(f"{W}tc")[:MAX_TABLE_COLUMNS]]
            rows.append(cells)
        return rows

    def cell_text(self, tc: Any, depth: int) -> str:
        """A cell's paragraphs (and nested tables, flattened) as one line."""
        if depth > MAX_XML_DEPTH:
            raise _too_deep(self.name)
        parts: list[str] = []
        for child in tc:
            if child.tag == f"{W}p":
                pieces: list[str] = []
                _inline(child, pieces, [], depth, self.name)
                parts.append("".join(pieces))
            elif child.tag == f"{W}tbl":
                for row in child.findall(f"{W}tr"):
                    parts.extend(self.cell_text(cell, depth + 1) for cell in row.findall(f"{W}tc"))
        return " ".join(part.strip() for part in parts if part.strip())

    def notes(self, root: Any | None, kind: str) -> None:
        if root is None:
            return
        first = True
        for note in root:
            if _local(note.tag) not in ("footnote", "endnote") or note.get(f"{W}type") not in (None, "normal"):
                continue  # separators and continuation marks
            pieces: list[str] = []
            for p in note.iter(f"{W}p"):
                _inline(p, pieces, [], 0, self.name)
                pieces.append(" ")
            text = " ".join("".join(pieces).split())
            if text:
                if first:
                    self.out.section(heading=kind)
                    first = False
                self.out.add(f"[{note.get(f'{W}id')}] {text}")


def _inline(element: Any, out: list[str], boxes: list[Any], depth: int, name: str) -> None:
    """The text of a paragraph's runs; text boxes found on the way are put in `boxes` for later."""
    if depth > MAX_XML_DEPTH:
        raise _too_deep(name)
    for child in element:
        tag = child.tag
        if tag == f"{W}t":
            out.append(child.text or "")
        elif tag == f"{W}tab":
            out.append("\t")
        elif tag in (f"{W}br", f"{W}cr"):
            out.append("\n")
        elif tag == f"{W}noBreakHyphen":
            out.append("-")
        elif tag == f"{W}txbxContent":
            boxes.append(child)
        elif tag in (MC_FALLBACK, f"{W}del", f"{W}instrText", f"{W}delText", f"{W}pPr", f"{W}rPr"):
            continue
        else:
            _inline(child, out, boxes, depth + 1, name)


def _core_title(archive: SafeZip) -> str:
    data = archive.read_optional("docProps/core.xml")
    if not data:
        return ""
    root = parse_xml(data, archive.name, "docProps/core.xml")
    for element in root:
        if _local(element.tag) == "title" and (element.text or "").strip():
            return str(element.text).strip()
    return ""


def load_docx(data: bytes, name: str) -> ExtractedDocument:
    archive = SafeZip(data, name, kind="DOCX")
    main = archive.read_optional("word/document.xml")
    if main is None:
        raise CorruptDocument(f"{name}: not a Word document (no word/document.xml part)")
    try:  # styles only name the headings: a damaged styles part costs the heading paths, not the document
        styles_data = archive.read_optional("word/styles.xml")
        styles = _Styles(parse_xml(styles_data, name, "word/styles.xml") if styles_data else None)
        styles_problem = ""
    except IngestError as exc:
        styles, styles_problem = _Styles(None), f"headings from style names only: {exc}"
    reader = _Reader(name, styles)
    if styles_problem:
        reader.out.warnings.append(styles_problem)
    root = parse_xml(main, name, "word/document.xml")
    body = root.find(f"{W}body")
    reader.blocks(body if body is not None else root, 0)
    for part, kind in (("word/footnotes.xml", "Footnotes"), ("word/endnotes.xml", "Endnotes")):
        notes = archive.read_optional(part)
        reader.notes(parse_xml(notes, name, part) if notes else None, kind)
    title = _core_title(archive) or reader.title or Path(name).stem
    return reader.out.build(name, title=title, kind="docx")
