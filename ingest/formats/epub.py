"""EPUB: the container read directly (ebooklib is AGPL-licensed and would add lxml parsing of its own):
`META-INF/container.xml` names the package document, whose spine gives the chapters in reading order; each
chapter's XHTML goes through the HTML loader, so chapters become sections headed by their own headings (or
the chapter's title). A book with `META-INF/encryption.xml` (DRM or obfuscated content) is refused.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from ..errors import CorruptDocument, EncryptedDocument
from ..models import ExtractedDocument
from .base import SafeZip, TextBuilder, parse_xml
from .base import local as _local

MAX_CHAPTERS = 5_000


def load_epub(data: bytes, name: str) -> ExtractedDocument:
    from ..loaders import html_document

    archive = SafeZip(data, name, kind="EPUB")
    encryption = archive.read_optional("META-INF/encryption.xml")
    if encryption and b"EncryptedData" in encryption:
        raise EncryptedDocument(f"{name}: the EPUB is encrypted (DRM); ragkb cannot read it")
    container = archive.read_optional("META-INF/container.xml")
    if container is None:
        raise CorruptDocument(f"{name}: not an EPUB (no META-INF/container.xml)")
    root = parse_xml(container, name, "container.xml")
    rootfile = next((el.get("full-path") for el in root.iter() if _local(el.tag) == "rootfile"), None)
    if not rootfile or rootfile not in archive.names:
        raise CorruptDocument(f"{name}: the EPUB's container names no package document that exists")
    package = parse_xml(archive.read(rootfile), name, rootfile)
    base = posixpath.dirname(rootfile)
    manifest: dict[str, tuple[str, str]] = {}
    spine: list[str] = []
    title = ""
    for element in package.iter():
        tag = _local(element.tag)
        if tag == "item" and element.get("id") and element.get("href"):
            manifest[str(element.get("id"))] = (str(element.get("href")), str(element.get("media-type") or ""))
        elif tag == "itemref" and element.get("idref"):
            spine.append(str(element.get("idref")))
        elif tag == "title" and not title and (element.text or "").strip():
            title = str(element.text).strip()
    out = TextBuilder()
    for number, idref in enumerate(spine[:MAX_CHAPTERS], start=1):
        href, media = manifest.get(idref, ("", ""))
        if "html" not in media and not href.endswith((".xhtml", ".html", ".htm")):
            continue
        member = posixpath.normpath(posixpath.join(base, href.split("#", 1)[0]))
        if member not in archive.names:
            out.warnings.append(f"chapter {number}: {href} is missing from the book")
            continue
        chapter = html_document(archive.read(member), f"{name}:{href}", kind="epub")
        if chapter is None:
            continue
        out.add_document(chapter, heading_prefix=chapter.title or f"Chapter {number}", keep_inner=True)
    return out.build(name, title=title or Path(name).stem, kind="epub")
