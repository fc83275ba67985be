"""The Chroma backend of `VectorStore`: embedded on disk by default, a Chroma server when `RAGKB_CHROMA_URL` is set.

This is the only module that imports or speaks Chroma (its client, its `where`
syntax, its result dicts and its errors). Every public method converts a
connection failure into `StoreUnavailable`, so callers never see a transport
error of Chroma's. The write protocol is described in `ingest/vectorstore.py`.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np

from .config import Settings
from .errors import CollectionNotFound, DocumentNotFound, EmbeddingModelError, RagkbError
from .models import DocumentInfo
from .recent import Epoch, Recent
from .vectorstore import (
    POINTER_PREFIX,
    VERSION_PREFIX,
    Collection,
    CollectionSummary,
    DocumentVersion,
    Filters,
    StoredChunk,
    StoreUnavailable,
    VectorStore,
    chunk_id,
    chunk_metadata,
    fallback_display_source,
    validate_collection_name,
)

SCHEMA_VERSION = 1
_GENERATION = "ragkb_generation"
WRITES = Epoch()  # bumped by every write to a collection made in this process
_PENDING = "ragkb_write_pending"
_ALIAS_OF = "ragkb_alias_of"  # on a pointer collection: the collection name it serves
_CURRENT = "ragkb_current"  # on a pointer collection: the Chroma collection of the current version
_VERSION_OF = "ragkb_version_of"  # on a version collection: the collection name it is a version of
RESOLVE_TTL = 1.0  # seconds a process keeps what a collection name points to before looking again


@contextmanager
def _reachable(what: str) -> Iterator[None]:
    """Chroma's connection failures (httpx errors from a server, OS errors) become `StoreUnavailable`."""
    try:
        yield
    except (httpx.TransportError, ConnectionError) as exc:
        raise StoreUnavailable(f"the vector store is unreachable ({what}): {exc}") from exc


def _is_not_found(exc: Exception) -> bool:
    return "does not exist" in str(exc) or type(exc).__name__ == "NotFoundError"


def _connect(settings: Settings) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if settings.chroma_url:
        url = urlparse(settings.chroma_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise RagkbError(f"RAGKB_CHROMA_URL must look like http://host:port, got {settings.chroma_url!r}")
        try:
            return chromadb.HttpClient(
                host=url.hostname,
                port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https",
                settings=chroma_settings,
            )
        except Exception as exc:
            raise StoreUnavailable(f"cannot reach the Chroma server at {settings.chroma_url}: {exc}") from exc
    settings.chroma_path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(settings.chroma_path), settings=chroma_settings)


def _where(filters: Filters | None) -> dict[str, Any] | None:
    """ragkb's validated `Filters` in Chroma's `where` syntax (the source glob is applied after)."""
    if filters is None:
        return None
    clauses: list[dict[str, Any]] = [{key: value} for key, value in filters.where.items()]
    if filters.document_ids:
        clauses.append({"document_id": {"$in": list(filters.document_ids)}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _rows(found: dict[str, Any], *, texts: bool = True) -> list[StoredChunk]:
    documents = found.get("documents") if texts else None
    return [
        StoredChunk(cid, (documents[i] if documents else "") or "", dict(meta or {}))
        for i, (cid, meta) in enumerate(zip(found["ids"], found["metadatas"], strict=True))
    ]


def _name_key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]


def pointer_name(name: str) -> str:
    """The Chroma collection whose metadata names the current version of collection `name` (after a reindex)."""
    return f"{POINTER_PREFIX}{_name_key(name)}"


def version_name(name: str, number: int) -> str:
    """The Chroma collection holding version `number` of collection `name` (built by a reindex)."""
    return f"{VERSION_PREFIX}{_name_key(name)}-{number}"


class ChromaStore(VectorStore):
    """Documents and their chunks in Chroma collections, one collection per knowledge base.

    A knowledge base `name` is the Chroma collection `name` until its first reindex; from then on a small
    pointer collection (`pointer_name`) names the Chroma collection of its current version (`version_name`),
    and switching versions is one metadata write on the pointer. Handles carry the logical name; what a name
    points to is looked up again after RESOLVE_TTL seconds, so every process follows a switch within that.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        with _reachable("connect"):
            self.client = _connect(settings)
            self._max_batch = int(self.client.get_max_batch_size())
        self._natives: dict[str, tuple[float, Any]] = {}  # logical name -> (resolved at, Chroma collection)
        # a repeated question's fast path reads the generation without asking Chroma (ingest/recent.py)
        self._generations: Recent[str, str] = Recent(WRITES, settings.generation_cache_seconds)

    # -- collections -----------------------------------------------------------------

    def heartbeat(self) -> None:
        try:
            self.client.heartbeat()
        except Exception as exc:
            raise StoreUnavailable(f"the vector store is unreachable: {exc}") from exc

    def _get_native(self, physical: str) -> Any | None:
        try:
            return self.client.get_collection(physical, embedding_function=None)
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise

    def _resolve(self, name: str, *, fresh: bool = False) -> Any:
        """The Chroma collection that holds collection `name` now (`CollectionNotFound` if none)."""
        cached = self._natives.get(name)
        if cached is not None and not fresh and time.monotonic() - cached[0] < RESOLVE_TTL:
            return cached[1]
        with _reachable(f"open {name}"):
            pointer = self._get_native(pointer_name(name))
            physical = str((pointer.metadata or {}).get(_CURRENT, name)) if pointer is not None else name
            native = self._get_native(physical)
        if native is None:
            self._natives.pop(name, None)
            raise CollectionNotFound(name, self.collection_names())
        self._natives[name] = (time.monotonic(), native)
        return native

    def collection_names(self) -> list[str]:
        names: set[str] = set()
        with _reachable("list collections"):
            for native in self.client.list_collections():
                if native.name.startswith(POINTER_PREFIX):
                    alias = (native.metadata or {}).get(_ALIAS_OF)
                    if alias:
                        names.add(str(alias))
                elif not native.name.startswith(VERSION_PREFIX):
                    names.add(native.name)
        return sorted(names)

    def collections(self) -> list[CollectionSummary]:
        result = []
        with _reachable("list collections"):
            for name in self.collection_names():
                native = self._resolve(name, fresh=True)
                meta = native.metadata or {}
                documents = len(native.get(where={"chunk_index": 0}, include=[])["ids"])
                result.append(CollectionSummary(name, native.count(), documents, meta.get("ragkb_embed_model")))
        return result

    def get(self, name: str) -> Collection:
        validate_collection_name(name)
        return self._handle(self._resolve(name, fresh=True), name)  # fresh: callers read its metadata

    def open(self, name: str, *, model: str, dimension: int, create: bool) -> Collection:
        validate_collection_name(name)
        try:
            native = self._resolve(name)
        except CollectionNotFound:
            if not create:
                raise
            with _reachable(f"open {name}"):
                # Chroma's default embedding function would download a model: ragkb always passes vectors.
                native = self.client.get_or_create_collection(
                    name,
                    embedding_function=None,
                    configuration={"hnsw": {"space": "cosine"}},
                    metadata={"ragkb_embed_model": model, "ragkb_embed_dim": dimension, "ragkb_schema": 1},
                )
            self._natives[name] = (time.monotonic(), native)
        handle = self._handle(native, name)
        if handle.model is not None and (handle.model != model or handle.dimension != dimension):
            raise EmbeddingModelError(
                f"collection {name!r} was built with {handle.model} ({handle.dimension} dimensions); the configured "
                f"model is {model} ({dimension} dimensions). Use the same RAGKB_EMBED_MODEL, or another "
                "collection, or `ragkb reindex --model` it: vectors of different models are never mixed."
            )
        return handle

    @staticmethod
    def _handle(native: Any, name: str) -> Collection:
        meta = native.metadata or {}
        model, dimension = meta.get("ragkb_embed_model"), meta.get("ragkb_embed_dim")
        return Collection(
            name=name,
            model=str(model) if model is not None else None,
            dimension=int(dimension) if dimension is not None else None,
            native=native,
        )

    def drop(self, name: str) -> None:
        with _reachable(f"drop {name}"):
            if name not in self.collection_names():
                raise CollectionNotFound(name, self.collection_names())
            self._natives.pop(name, None)
            WRITES.bump()
            prefix = f"{VERSION_PREFIX}{_name_key(name)}-"
            for native in self.client.list_collections():
                if native.name in (name, pointer_name(name)) or native.name.startswith(prefix):
                    self.client.delete_collection(native.name)

    # -- versions (reindex) ----------------------------------------------------------

    def begin_version(self, name: str, *, model: str, dimension: int) -> Collection:
        """A new, empty version of collection `name` to build while `name` keeps serving the current one.
        Versions left behind by a rebuild that died are dropped first."""
        current = self._resolve(name, fresh=True).name
        prefix = f"{VERSION_PREFIX}{_name_key(name)}-"
        with _reachable(f"open {name}"):
            numbers = [0]
            for native in self.client.list_collections():
                if native.name.startswith(prefix):
                    numbers.append(int(native.name.rsplit("-", 1)[1]))
                    if native.name != current:
                        self.client.delete_collection(native.name)
            native = self.client.create_collection(
                version_name(name, max(numbers) + 1),
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={
                    "ragkb_embed_model": model,
                    "ragkb_embed_dim": dimension,
                    "ragkb_schema": 1,
                    _VERSION_OF: name,
                },
            )
        return self._handle(native, name)

    def switch_version(self, name: str, version: Collection) -> Collection:
        """Make `version` the one collection `name` serves, in one metadata write; returns the previous one
        (still there: drop it with `drop_version` once readers have moved, after RESOLVE_TTL)."""
        previous = self._handle(self._resolve(name, fresh=True), name)
        metadata = {_ALIAS_OF: name, _CURRENT: version.native.name}
        with _reachable(f"switch {name}"):
            pointer = self._get_native(pointer_name(name))
            if pointer is None:
                self.client.create_collection(pointer_name(name), embedding_function=None, metadata=metadata)
            else:
                pointer.modify(metadata=metadata)
        self._natives[name] = (time.monotonic(), version.native)
        WRITES.bump()
        return previous

    def drop_version(self, version: Collection) -> None:
        """Drop a version that no longer serves (never the current one)."""
        if self._resolve(version.name, fresh=True).name == version.native.name:
            raise RagkbError(f"refusing to drop the version collection {version.name!r} currently serves")
        with _reachable(f"drop a version of {version.name}"):
            self.client.delete_collection(version.native.name)

    # -- generation ------------------------------------------------------------------

    def _fresh_metadata(self, collection: Collection) -> dict[str, Any]:
        native = self._get_native(collection.native.name)
        if native is None:
            raise CollectionNotFound(collection.name, self.collection_names())
        return dict(native.metadata or {})

    def generation(self, name: str) -> str:
        """The collection's generation: this process's writes are seen at once, another process's within
        `generation_cache_seconds`."""
        validate_collection_name(name)
        return self._generations.get(name, lambda: self._read_generation(name))

    def cached_generation(self, name: str) -> str | None:
        kept, value = self._generations.peek(name, lambda: self._read_generation(name))
        return value if kept else None

    def _read_generation(self, name: str) -> str:
        with _reachable(f"read {name}"):
            native = self._get_native(self._resolve(name).name)
            if native is None:  # switched and dropped since it was resolved
                native = self._resolve(name, fresh=True)
            return str((native.metadata or {}).get(_GENERATION, "0"))

    def _begin_write(self, collection: Collection) -> str:
        """A new generation, marked pending with this writer's token, before any chunk changes."""
        metadata = self._fresh_metadata(collection)
        token = uuid.uuid4().hex
        metadata[_GENERATION] = metadata[_PENDING] = token
        WRITES.bump()
        self._native(collection).modify(metadata=metadata)
        return token

    def _end_write(self, collection: Collection, token: str) -> None:
        """Another new generation once the write is done. The pending mark is cleared only if it is still
        this writer's: a concurrent writer that began later keeps its own until it ends (or dies, and the
        next writer's `repair_generation` clears it)."""
        metadata = self._fresh_metadata(collection)
        metadata[_GENERATION] = uuid.uuid4().hex
        if metadata.get(_PENDING) == token:
            metadata[_PENDING] = ""
        self._native(collection).modify(metadata=metadata)
        WRITES.bump()

    def repair_generation(self, collection: Collection) -> None:
        with _reachable(f"read {collection.name}"):
            pending = self._fresh_metadata(collection).get(_PENDING)
            if pending:
                self._end_write(collection, str(pending))

    @staticmethod
    def _native(collection: Collection) -> Any:
        return collection.native

    def count(self, collection: Collection) -> int:
        with _reachable(f"count {collection.name}"):
            return int(self._native(collection).count())

    def committed_versions(self, collection: Collection) -> dict[str, set[str]]:
        with _reachable(f"read {collection.name}"):
            found = self._native(collection).get(where={"chunk_index": 0}, include=["metadatas"])
        versions: dict[str, set[str]] = {}
        for meta in found["metadatas"] or []:
            versions.setdefault(str(meta["document_id"]), set()).add(str(meta["doc_version"]))
        return versions

    def write_documents(self, collection: Collection, documents: Sequence[DocumentVersion]) -> None:
        """Write document versions in as few calls as possible, committing each with its chunk 0.

        The generation changes first (marked pending) and again when done, so a reader never keeps an
        index built from a half-written state, even if this process dies in between. All non-marker
        chunks go first, then every marker, then the old versions of updated documents are dropped.
        """
        rows: list[tuple[str, str, dict[str, Any], np.ndarray]] = []
        markers: list[tuple[str, str, dict[str, Any], np.ndarray]] = []
        for doc in documents:
            if not doc.chunks:
                raise ValueError(f"document {doc.document_id} has no chunks")
            for chunk, vector in zip(doc.chunks, doc.embeddings, strict=True):
                row = (
                    chunk_id(doc.document_id, doc.version, chunk.index),
                    chunk.text,
                    chunk_metadata(doc.base_metadata, doc, chunk),
                    vector,
                )
                (markers if chunk.index == 0 else rows).append(row)
        with _reachable(f"write {collection.name}"):
            token = self._begin_write(collection)
            self._upsert(collection, rows)
            self._upsert(collection, markers)  # markers last: they commit
            native = self._native(collection)
            for doc in documents:
                if doc.replaces_existing:
                    native.delete(
                        where={"$and": [{"document_id": doc.document_id}, {"doc_version": {"$ne": doc.version}}]}
                    )
            self._end_write(collection, token)

    def _upsert(self, collection: Collection, rows: list[tuple[str, str, dict[str, Any], np.ndarray]]) -> None:
        native = self._native(collection)
        for start in range(0, len(rows), self._max_batch):
            batch = rows[start : start + self._max_batch]
            native.upsert(
                ids=[r[0] for r in batch],
                documents=[r[1] for r in batch],
                metadatas=[r[2] for r in batch],
                embeddings=np.stack([r[3] for r in batch]),
            )

    def delete_stale_versions(self, collection: Collection, document_id: str, *, keep: str) -> None:
        with _reachable(f"write {collection.name}"):
            token = self._begin_write(collection)
            self._native(collection).delete(
                where={"$and": [{"document_id": document_id}, {"doc_version": {"$ne": keep}}]}
            )
            self._end_write(collection, token)

    def delete_document(self, collection: Collection, document_id: str) -> int:
        with _reachable(f"write {collection.name}"):
            native = self._native(collection)
            count = len(native.get(where={"document_id": document_id}, include=[])["ids"])
            if not count:
                raise DocumentNotFound(f"no document with id {document_id!r} in collection {collection.name!r}")
            token = self._begin_write(collection)
            native.delete(where={"document_id": document_id})
            self._end_write(collection, token)
        return count

    def documents(self, collection: Collection) -> list[DocumentInfo]:
        with _reachable(f"read {collection.name}"):
            found = self._native(collection).get(where={"chunk_index": 0}, include=["metadatas"])
        docs = [
            DocumentInfo(
                document_id=str(m["document_id"]),
                source=str(m.get("source", "")),
                title=str(m.get("title", "")),
                chunk_count=int(m.get("chunk_count", 0)),
                version=str(m.get("doc_version", "")),
                kind=str(m.get("kind", "")),
                display_source=str(m.get("display_source") or fallback_display_source(str(m.get("source", "")))),
                blob=str(m.get("blob", "")),
                parent_id=str(m.get("parent_id", "")),
                parent=str(m.get("parent", "")),
            )
            for m in found["metadatas"] or []
        ]
        return sorted(docs, key=lambda d: d.source)

    def blob_in_use(self, digest: str) -> bool:
        """Whether a document of any collection (every stored version of it) was built from this original."""
        with _reachable("read collections"):
            for native in self.client.list_collections():
                if native.get(where={"blob": digest}, include=[], limit=1)["ids"]:
                    return True
        return False

    def find_document(self, collection: Collection, id_or_source: str) -> DocumentInfo:
        for doc in self.documents(collection):
            if id_or_source in (doc.document_id, doc.source):
                return doc
        raise DocumentNotFound(
            f"no document {id_or_source!r} in collection {collection.name!r} (give a document id or its source)"
        )

    def chunks(self, collection: Collection, ids: Sequence[str]) -> list[StoredChunk]:
        if not ids:
            return []
        with _reachable(f"read {collection.name}"):
            return _rows(self._native(collection).get(ids=list(ids), include=["documents", "metadatas"]))

    def document_chunks(self, collection: Collection, document_id: str) -> list[StoredChunk]:
        with _reachable(f"read {collection.name}"):
            found = self._native(collection).get(where={"document_id": document_id}, include=["documents", "metadatas"])
        return sorted(_rows(found), key=lambda c: int(c.metadata.get("chunk_index", 0)))

    def iter_chunks(self, collection: Collection, *, page_size: int = 5000) -> Iterator[list[StoredChunk]]:
        total = self.count(collection)
        for offset in range(0, total, page_size):
            with _reachable(f"read {collection.name}"):
                page = self._native(collection).get(include=["documents", "metadatas"], limit=page_size, offset=offset)
            yield _rows(page)

    def matching_ids(self, collection: Collection, filters: Filters) -> set[str]:
        with _reachable(f"read {collection.name}"):
            found = self._native(collection).get(where=_where(filters), include=["metadatas"])
        return {
            cid
            for cid, meta in zip(found["ids"], found["metadatas"], strict=True)
            if filters.accepts_source(str((meta or {}).get("source", "")))
        }

    def query(
        self,
        collection: Collection,
        embedding: np.ndarray,
        *,
        k: int,
        filters: Filters | None = None,
        with_text: bool = True,
    ) -> list[StoredChunk]:
        """Without `with_text` only ids, scores and metadata come back (cheaper when most are discarded).
        A source glob is applied after the search, so more are fetched to still return `k`."""
        glob = filters is not None and filters.source_glob is not None
        fetch = max(k * 10, 100) if glob else k
        include = ["documents", "metadatas", "distances"] if with_text else ["metadatas", "distances"]
        with _reachable(f"query {collection.name}"):
            result = self._native(collection).query(
                query_embeddings=[embedding], n_results=fetch, where=_where(filters), include=include
            )
        texts = result["documents"][0] if with_text else [""] * len(result["ids"][0])
        hits = [
            StoredChunk(cid, text or "", dict(meta or {}), score=1.0 - float(distance))
            for cid, text, meta, distance in zip(
                result["ids"][0], texts, result["metadatas"][0], result["distances"][0], strict=True
            )
        ]
        if glob and filters is not None:
            hits = [h for h in hits if filters.accepts_source(str(h.metadata.get("source", "")))]
        return hits[:k]

    def nearest(
        self, collection: Collection, embedding: np.ndarray, *, k: int, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        """Ids and distances only: at ~10k chunks, reading 100 candidates' metadata costs more than the
        search itself. A source glob needs the metadata, so it goes through `query`."""
        if filters is not None and filters.source_glob is not None:
            hits = self.query(collection, embedding, k=k, filters=filters, with_text=False)
            return [(hit.chunk_id, hit.score) for hit in hits]
        with _reachable(f"query {collection.name}"):
            result = self._native(collection).query(
                query_embeddings=[embedding], n_results=k, where=_where(filters), include=["distances"]
            )
        return [
            (chunk_id, 1.0 - float(distance))
            for chunk_id, distance in zip(result["ids"][0], result["distances"][0], strict=True)
        ]


def open_store(settings: Settings) -> VectorStore:
    """The configured vector store (Chroma, embedded or a server; the one backend today)."""
    return ChromaStore(settings)
