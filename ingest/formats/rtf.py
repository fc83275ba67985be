"""RTF through striprtf (a small, pure-Python converter with no dependencies): the text of the body, with
font tables, style sheets, pictures and other destinations dropped. One section; paragraphs kept."""

from __future__ import annotations

from pathlib import Path

from ..errors import CorruptDocument
from ..models import ExtractedDocument
from .base import TextBuilder, check_bytes, unreadable_as


def load_rtf(data: bytes, name: str) -> ExtractedDocument:
    check_bytes(data, name, kind="RTF")
    if not data.lstrip().startswith(b"{\\rtf"):
        raise CorruptDocument(f"{name}: not an RTF file (it does not start with {{\\rtf)")
    from striprtf.striprtf import rtf_to_text

    with unreadable_as(CorruptDocument, f"{name}: not a readable RTF file"):
        text = rtf_to_text(data.decode("latin-1"), errors="ignore")
    out = TextBuilder()
    out.section()
    title = ""
    for paragraph in text.replace("\r\n", "\n").split("\n"):
        if paragraph.strip():
            title = title or paragraph.strip()
            out.add(paragraph)
    return out.build(name, title=title if len(title) <= 120 else Path(name).stem, kind="rtf")
