"""PowerPoint (PPTX) through python-pptx: one slide is one page (its number) headed by its title; the title,
text frames, tables (labelled rows), grouped shapes and the speaker notes ("Notes: ...") are kept; footers,
slide numbers and dates, and everything on masters and layouts, are dropped.

python-pptx parses with lxml with entity resolution off; the ZIP is checked by `SafeZip` first.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import CorruptDocument, EmptyDocument
from ..models import ExtractedDocument
from .base import MAX_TABLE_COLUMNS, MAX_TABLE_ROWS, MAX_XML_DEPTH, SafeZip, TextBuilder, table_lines, unreadable_as
from .base import too_deep as _too_deep

_FURNITURE = {"FOOTER", "SLIDE_NUMBER", "DATE", "HEADER"}


def load_pptx(data: bytes, name: str) -> ExtractedDocument:
    """The deck's slides; footers, numbers and dates only for a deck that has no other text at all."""
    SafeZip(data, name, kind="PPTX")  # limits and encryption, before python-pptx opens it
    try:
        return _load(data, name, furniture=False)
    except EmptyDocument:
        return _load(data, name, furniture=True)


def _load(data: bytes, name: str, *, furniture: bool) -> ExtractedDocument:
    from pptx import Presentation

    with unreadable_as(CorruptDocument, f"{name}: not a readable PowerPoint file"):
        deck = Presentation(io.BytesIO(data))
        out = TextBuilder()
        deck_title = str(deck.core_properties.title or "").strip()
        first_title = ""
        for number, slide in enumerate(deck.slides, start=1):
            title_shape = slide.shapes.title
            title = " ".join((title_shape.text_frame.text if title_shape is not None else "").split())
            first_title = first_title or title
            out.section(page=number, heading=title or f"Slide {number}")
            if title:
                out.add(title)
            for shape in _shapes(slide.shapes, 0, name, furniture):
                if title_shape is not None and shape.shape_id == title_shape.shape_id:
                    continue
                for block in _shape_text(shape):
                    out.add(block)
            if slide.has_notes_slide:
                notes = slide.notes_slide.notes_text_frame
                text = notes.text.strip() if notes is not None else ""
                if text:
                    out.add(f"Notes: {text}")
    return out.build(name, title=deck_title or first_title or Path(name).stem, kind="pptx")


def _shapes(shapes: Any, depth: int, name: str, furniture: bool) -> Iterator[Any]:
    if depth > MAX_XML_DEPTH:
        raise _too_deep(name)
    for shape in shapes:
        if not furniture and shape.is_placeholder and getattr(shape.placeholder_format.type, "name", "") in _FURNITURE:
            continue
        if hasattr(shape, "shapes"):  # a group
            yield from _shapes(shape.shapes, depth + 1, name, furniture)
        else:
            yield shape


def _shape_text(shape: Any) -> list[str]:
    if getattr(shape, "has_table", False) and shape.has_table:
        rows = [
            [cell.text for cell in list(row.cells)[:MAX_TABLE_COLUMNS]]
            for row in list(shape.table.rows)[:MAX_TABLE_ROWS]
        ]
        return table_lines(rows)
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        return [paragraph.text for paragraph in shape.text_frame.paragraphs if paragraph.text.strip()]
    return []
