"""What ragkb asks of a vector store, in ragkb's own types: the protocol a backend implements.

`ingest/store.py` implements it on Chroma and is the only module that imports or
speaks Chroma. A second backend (pgvector, Qdrant, ...) is one new module that
implements `VectorStore` and is chosen in `open_store`; nothing else changes,
because everything above the store sees only the types defined here:

- `Collection`: a typed handle on one collection (name, model, dimension), returned by `open`.
- `StoredChunk`: a chunk read back, with its provenance parsed in one place (`provenance`).
- `DocumentVersion`: one version of one document, ready to write.
- `Filters`: ragkb's metadata filters (document ids, a source glob, equality on known fields),
  validated here so that no caller can smuggle a backend's query operators through.
- chunk ids: `chunk_id` writes them and `parse_chunk_id` reads them, side by side.

Write protocol every backend keeps (why reruns converge): chunk ids are
`<document_id>:<version>:<index>`, so writing a version twice upserts the same
ids; chunk 0 is written last and is the commit marker; old versions are deleted
only after the new one is committed. The collection's *generation* changes
before and after every write or delete, so derived indexes (BM25, the answer
cache's fast path) can tell that the stored state may differ from what they saw,
even when a writer crashed half-way.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .errors import InvalidCollectionName, RagkbError
from .models import Chunk, DocumentInfo

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")

# Metadata fields a `Filters.where` may test for equality, with the type each holds.
FILTERABLE_FIELDS: dict[str, tuple[type, ...]] = {
    "document_id": (str,),
    "source": (str,),
    "title": (str,),
    "kind": (str,),
    "page": (int,),
    "heading": (str,),
    "chunk_index": (int,),
    "doc_version": (str,),
    "embed_model": (str,),
    "parent_id": (str,),
}
MAX_FILTER_IDS = 1000
MAX_WHERE_FIELDS = 16


class StoreUnavailable(RagkbError):
    """The vector store cannot be reached."""


class InvalidFilter(RagkbError):
    """A filter names a field or operator ragkb does not support (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class ChunkId:
    document_id: str
    version: str
    index: int


def chunk_id(document_id: str, version: str, index: int) -> str:
    """The stored id of a chunk: `<document_id>:<version>:<index>` (see `parse_chunk_id`)."""
    return f"{document_id}:{version}:{index}"


def parse_chunk_id(value: str) -> ChunkId:
    document_id, version, index = value.rsplit(":", 2)
    return ChunkId(document_id, version, int(index))


def document_of(value: str) -> str:
    """The document id of a chunk id, without a metadata lookup."""
    return value.split(":", 1)[0]


def document_id_for(source: str) -> str:
    """A document's stable id: the same source in a collection is always the same document."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:24]


# Store-internal collections (a collection's versions and the pointer to its current one, see `ingest/store.py`)
VERSION_PREFIX = "rkv-"
POINTER_PREFIX = "rkp-"


def validate_collection_name(name: str) -> str:
    if not _COLLECTION_NAME.match(name) or ".." in name:
        raise InvalidCollectionName(
            f"invalid collection name {name!r}: use 3-63 characters of letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    if name.startswith((VERSION_PREFIX, POINTER_PREFIX)):
        raise InvalidCollectionName(
            f"invalid collection name {name!r}: names starting with {VERSION_PREFIX!r} or {POINTER_PREFIX!r} are "
            "reserved for ragkb's collection versions"
        )
    return name


def fallback_display_source(source: str) -> str:
    """What to show for a source with no stored `display_source` (chunks ingested before it existed):
    an upload's `upload://name` as it is, a path as its file name (never an absolute server path)."""
    if "://" in source:
        return source
    return source.replace("\\", "/").rsplit("/", 1)[-1] or source


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a chunk comes from; parsed from stored metadata here and nowhere else. `source` is the
    document's identity (an absolute path for CLI ingestion); `display_source` is what clients see."""

    document_id: str
    source: str
    display_source: str
    title: str
    kind: str
    page: int | None
    heading: str | None
    start: int
    end: int
    ocr_confidence: float | None = None  # set when the chunk's text was recognised by OCR
    parent: str | None = None  # an attachment's: the display source of the message that carries it


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A chunk as it comes back from the store, with its provenance and (for queries) its score."""

    chunk_id: str
    text: str
    metadata: Mapping[str, Any]
    score: float = 0.0

    @property
    def document_id(self) -> str:
        return str(self.metadata.get("document_id") or document_of(self.chunk_id))

    @property
    def content_hash(self) -> str:
        return str(self.metadata.get("content_hash", ""))

    def provenance(self) -> Provenance:
        meta = self.metadata
        page, heading = meta.get("page"), meta.get("heading")
        source = str(meta.get("source", ""))
        return Provenance(
            document_id=self.document_id,
            source=source,
            display_source=str(meta.get("display_source") or fallback_display_source(source)),
            title=str(meta.get("title", "")),
            kind=str(meta.get("kind", "")),
            page=int(page) if page is not None else None,
            heading=str(heading) if heading else None,
            start=int(meta.get("start", 0)),
            end=int(meta.get("end", 0)),
            ocr_confidence=float(meta["ocr_confidence"]) if meta.get("ocr_confidence") is not None else None,
            parent=str(meta["parent"]) if meta.get("parent") else None,
        )

    def with_score(self, score: float) -> StoredChunk:
        return StoredChunk(self.chunk_id, self.text, self.metadata, score)

    def unit(self, grain: str) -> str:
        """The evidence unit this chunk belongs to: its document (`grain="document"`), or its page or heading
        section (`"section"`; a document with neither is one section). See `HybridRetriever`."""
        if grain == "document":
            return self.document_id
        where = self.provenance()
        if where.page is not None:
            return f"{where.document_id}#p{where.page}"
        return f"{where.document_id}#h{where.heading}" if where.heading else where.document_id


@dataclass(frozen=True, slots=True)
class DocumentVersion:
    """One version of one document, ready to write: its chunks and their vectors, row for row."""

    document_id: str
    version: str
    base_metadata: dict[str, Any]
    chunks: Sequence[Chunk]
    embeddings: np.ndarray
    replaces_existing: bool = True


def chunk_metadata(base: Mapping[str, Any], document: DocumentVersion, chunk: Chunk) -> dict[str, Any]:
    """The metadata stored with one chunk (the reverse of `StoredChunk.provenance`)."""
    meta: dict[str, Any] = {
        **base,
        "document_id": document.document_id,
        "doc_version": document.version,
        "chunk_index": chunk.index,
        "chunk_count": len(document.chunks),
        "start": chunk.start,
        "end": chunk.end,
        "token_count": chunk.token_count,
        "content_hash": chunk.content_hash,
    }
    if chunk.page is not None:
        meta["page"] = chunk.page
    if chunk.heading:
        meta["heading"] = chunk.heading
    if chunk.ocr_confidence is not None:
        meta["ocr_confidence"] = round(chunk.ocr_confidence, 1)
    return meta


@dataclass(frozen=True, slots=True)
class Filters:
    """Metadata filters: document ids, a glob on the source, and equality on known stored fields.

    Validated on construction: unknown fields, operators (`$...`), wrong value types and
    oversized lists are refused with an `InvalidFilter` that names what is allowed.
    """

    document_ids: tuple[str, ...] = ()
    source_glob: str | None = None
    where: Mapping[str, str | int | float | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "document_ids", tuple(self.document_ids))
        if len(self.document_ids) > MAX_FILTER_IDS:
            raise InvalidFilter(
                f"filters.document_ids has {len(self.document_ids):,} ids; the limit is {MAX_FILTER_IDS:,}"
            )
        if len(self.where) > MAX_WHERE_FIELDS:
            raise InvalidFilter(f"filters.where has {len(self.where)} fields; the limit is {MAX_WHERE_FIELDS}")
        allowed = ", ".join(sorted(FILTERABLE_FIELDS))
        for key, value in self.where.items():
            types = FILTERABLE_FIELDS.get(key)
            if types is None:
                raise InvalidFilter(f"filters.where: unknown field {key!r}; filterable fields: {allowed}")
            if isinstance(value, bool) or not isinstance(value, types):
                kind = " or ".join(t.__name__ for t in types)
                raise InvalidFilter(f"filters.where.{key} must be {kind}, got {value!r}")
        if self.source_glob is not None and len(self.source_glob) > 1000:
            raise InvalidFilter("filters.source_glob is longer than 1,000 characters")

    @property
    def empty(self) -> bool:
        return not (self.document_ids or self.source_glob or self.where)

    def accepts_source(self, source: str) -> bool:
        """The one test a store cannot push down: the source glob."""
        return self.source_glob is None or fnmatch.fnmatch(source, self.source_glob)

    def cache_token(self) -> str | None:
        """A stable text form for cache keys (None when there is no filter)."""
        if self.empty:
            return None
        return repr((sorted(self.document_ids), self.source_glob, sorted(self.where.items())))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (`from_dict` reads it back, validating again)."""
        return {"document_ids": list(self.document_ids), "source_glob": self.source_glob, "where": dict(self.where)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Filters:
        return cls(
            document_ids=tuple(raw.get("document_ids") or ()),
            source_glob=raw.get("source_glob"),
            where=dict(raw.get("where") or {}),
        )


@dataclass(frozen=True, slots=True)
class Collection:
    """A typed handle on one collection; only the store that returned it looks inside `native`."""

    name: str
    model: str | None
    dimension: int | None
    native: Any = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class CollectionSummary:
    name: str
    chunks: int
    documents: int
    model: str | None


class VectorStore(Protocol):
    """Documents and their chunks in named collections, one collection per knowledge base."""

    def heartbeat(self) -> None:
        """Raise `StoreUnavailable` when the store cannot be reached."""

    def collection_names(self) -> list[str]: ...

    def collections(self) -> list[CollectionSummary]: ...

    def open(self, name: str, *, model: str, dimension: int, create: bool) -> Collection:
        """Open (or create) a collection, refusing one built with another model (`EmbeddingModelError`)
        and an unknown one when not creating (`CollectionNotFound`)."""

    def get(self, name: str) -> Collection:
        """An existing collection as it is (no model check: for listing), or `CollectionNotFound`."""

    def drop(self, name: str) -> None: ...

    def generation(self, name: str) -> str:
        """The collection's current generation (this process's writes seen at once, another's within a
        moment: `generation_cache_seconds`)."""

    def cached_generation(self, name: str) -> str | None:
        """The generation if it is kept in memory (nothing is read), else None."""

    def repair_generation(self, collection: Collection) -> None:
        """Bump the generation if a writer died mid-write (its pending mark is still there)."""

    def count(self, collection: Collection) -> int: ...

    def committed_versions(self, collection: Collection) -> dict[str, set[str]]:
        """document id -> committed versions (more than one means an interrupted replace)."""

    def write_documents(self, collection: Collection, documents: Sequence[DocumentVersion]) -> None: ...

    def delete_stale_versions(self, collection: Collection, document_id: str, *, keep: str) -> None: ...

    def delete_document(self, collection: Collection, document_id: str) -> int: ...

    def documents(self, collection: Collection) -> list[DocumentInfo]: ...

    def find_document(self, collection: Collection, id_or_source: str) -> DocumentInfo: ...

    def blob_in_use(self, digest: str) -> bool:
        """Whether any document of any collection names this original (`ingest/blobs.py`) in its `blob`."""

    def begin_version(self, name: str, *, model: str, dimension: int) -> Collection:
        """A new, empty version of collection `name`, built while `name` keeps serving its current one."""

    def switch_version(self, name: str, version: Collection) -> Collection:
        """Serve `version` as collection `name` from now on (atomically); returns the previous version."""

    def drop_version(self, version: Collection) -> None:
        """Drop a version that no longer serves."""

    def chunks(self, collection: Collection, ids: Sequence[str]) -> list[StoredChunk]:
        """The chunks with these ids that still exist, in any order."""

    def document_chunks(self, collection: Collection, document_id: str) -> list[StoredChunk]: ...

    def iter_chunks(self, collection: Collection, *, page_size: int = 5000) -> Iterator[list[StoredChunk]]:
        """Every chunk, a page at a time (for rebuilding derived indexes)."""

    def matching_ids(self, collection: Collection, filters: Filters) -> set[str]:
        """Ids of the chunks a filter admits."""

    def query(
        self, collection: Collection, embedding: np.ndarray, *, k: int, filters: Filters | None, with_text: bool
    ) -> list[StoredChunk]:
        """Nearest chunks by cosine similarity, best first (score = 1 - cosine distance)."""

    def nearest(
        self, collection: Collection, embedding: np.ndarray, *, k: int, filters: Filters | None
    ) -> list[tuple[str, float]]:
        """(chunk id, score) of the nearest chunks, best first, reading neither text nor metadata (a fusion
        that keeps few of its candidates reads those of the kept ones afterwards)."""
