"""Errors that name what went wrong with one input, so one bad file never stops the others."""

from __future__ import annotations


class RagkbError(Exception):
    """Base of every error ragkb raises on purpose."""


class IngestError(RagkbError):
    """A single file could not be ingested; the message says why in words a user can act on."""


class UnsupportedFileType(IngestError):
    pass


class EmptyDocument(IngestError):
    pass


class CorruptDocument(IngestError):
    pass


class EncryptedDocument(IngestError):
    pass


class FileTooLarge(IngestError):
    pass


class BinaryContent(IngestError):
    pass


class DuplicateSource(IngestError):
    """The same source (e.g. two uploads of one file name) twice in one batch."""


class EmbeddingModelError(RagkbError):
    """The embedding model could not be loaded or does not match the collection."""


class CollectionNotFound(RagkbError):
    def __init__(self, name: str, available: list[str]) -> None:
        options = ", ".join(sorted(available)) or "none yet"
        super().__init__(f"collection {name!r} does not exist (available: {options})")
        self.name = name


class DocumentNotFound(RagkbError):
    pass


class InvalidCollectionName(RagkbError):
    pass
