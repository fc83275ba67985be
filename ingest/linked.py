"""Documents carried inside other documents (an e-mail's attachments), stored as documents of their own.

An attachment is a document like any other (its own chunks, version, original and citations), linked to
the message that carries it:

- its source is the message's source with `#attachment/NAME` after it (`upload://mail.eml#attachment/
  report.docx`; a nested message's attachment adds another), and so is how it is shown (`display_source`),
  so a citation to it names the message;
- its chunks carry `parent_id` (the message's document id) and `parent` (how the message is shown), and
  the documents listing shows both.

The message decides for its attachments: they are written in the same batch as the message, an unchanged
message is skipped with them, a changed one replaces them (an attachment gone from it is deleted), and
deleting or pruning the message deletes them (`Ingestor.remove`). A reindex rebuilds the messages, which
bring their attachments along. Nothing here touches the store: these are the rules as functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .models import DocumentInfo, ExtractedDocument

ATTACHMENT_MARK = "#attachment/"


def attachment_of(parent: str, name: str) -> str:
    """The source (or name, or display source) of attachment `name` of the document `parent`."""
    return f"{parent}{ATTACHMENT_MARK}{name}"


@dataclass(frozen=True, slots=True)
class Carried:
    """One attachment to store, with where it sits: the message that carries it (maybe itself carried)."""

    name: str  # `mail.eml#attachment/report.docx`: how reports and warnings name it
    source: str
    display_source: str
    parent_source: str
    parent_display: str
    data: bytes
    document: ExtractedDocument


def carried(name: str, source: str, display_source: str, document: ExtractedDocument) -> Iterator[Carried]:
    """The attachments of a document and of its attached messages, parents before their attachments (the
    depth is the loader's to bound: `ingest/formats/mail.py` MAX_NESTING)."""
    for attachment in document.attachments:
        inner = Carried(
            name=attachment_of(name, attachment.name),
            source=attachment_of(source, attachment.name),
            display_source=attachment_of(display_source, attachment.name),
            parent_source=source,
            parent_display=display_source,
            data=attachment.data,
            document=attachment.document,
        )
        yield inner
        yield from carried(inner.name, inner.source, inner.display_source, attachment.document)


def with_attachments_text(document: ExtractedDocument) -> str:
    """A document's text followed by that of everything it carries (what ingesting it stores, in all)."""
    return "\n\n".join([document.text, *(with_attachments_text(a.document) for a in document.attachments)])


def descendants(documents: Iterable[DocumentInfo], document_id: str) -> list[DocumentInfo]:
    """The stored attachments of a document, and theirs, deepest first (so a delete that stops half-way
    leaves the message, and deleting it again finishes the job)."""
    children: dict[str, list[DocumentInfo]] = {}
    for document in documents:
        if document.parent_id:
            children.setdefault(document.parent_id, []).append(document)
    found: list[DocumentInfo] = []
    seen = {document_id}

    def walk(parent: str) -> None:
        for child in children.get(parent, []):
            if child.document_id not in seen:  # a cycle cannot be written, but a listing is not trusted
                seen.add(child.document_id)
                walk(child.document_id)
                found.append(child)

    walk(document_id)
    return found
