"""The chunk store: Chroma, embedded on disk by default or a Chroma server when `RAGKB_CHROMA_URL` is set.

Write protocol (why reruns converge): a document version is identified by a
hash of its bytes, the chunking settings and the model. Chunk ids are
`<document_id>:<version>:<index>`, so writing the same version twice upserts
the same ids. Chunk 0 is written last and acts as the commit marker: when it
exists, every chunk of that version exists. Old versions are deleted only
after the new one is committed, so a crash at any point leaves either the old
version, or both (cleaned up on the next run), never a half-written document
that looks complete.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np

from .config import Settings
from .errors import CollectionNotFound, DocumentNotFound, EmbeddingModelError, InvalidCollectionName, RagkbError
from .models import Chunk, DocumentInfo

SCHEMA_VERSION = 1
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")


class StoreUnavailable(RagkbError):
    """The Chroma store cannot be reached."""


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A chunk as it comes back from the store, with its provenance and (for queries) its score."""

    chunk_id: str
    text: str
    metadata: dict[str, Any]
    score: float = 0.0

    @property
    def document_id(self) -> str:
        return str(self.metadata["document_id"])


@dataclass(frozen=True, slots=True)
class DocumentVersion:
    """One version of one document, ready to write: its chunks and their vectors, row for row."""

    document_id: str
    version: str
    base_metadata: dict[str, Any]
    chunks: Sequence[Chunk]
    embeddings: np.ndarray
    replaces_existing: bool = True


def document_id_for(source: str) -> str:
    """A document's stable id: the same source in a collection is always the same document."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:24]


def validate_collection_name(name: str) -> str:
    if not _COLLECTION_NAME.match(name) or ".." in name:
        raise InvalidCollectionName(
            f"invalid collection name {name!r}: use 3-63 characters of letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return name


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


class ChunkStore:
    """Documents and their chunks in Chroma collections, one collection per knowledge base."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = _connect(settings)
        self._max_batch = int(self.client.get_max_batch_size())
        self._collections: dict[str, Any] = {}

    # -- collections -----------------------------------------------------------------

    def collection_names(self) -> list[str]:
        return sorted(c.name if hasattr(c, "name") else str(c) for c in self.client.list_collections())

    def collections(self) -> list[tuple[str, int, dict[str, Any]]]:
        """(name, chunk count, metadata) for every collection."""
        result = []
        for name in self.collection_names():
            collection = self.client.get_collection(name, embedding_function=None)
            result.append((name, collection.count(), dict(collection.metadata or {})))
        return result

    def open(self, name: str, *, model: str, dimension: int, create: bool) -> Any:
        """Open (or create) a collection, refusing one that was built with a different model."""
        validate_collection_name(name)
        collection = self._collections.get(name)
        if collection is not None:
            self._check_model(collection, model, dimension)
            return collection
        if create:
            # Chroma's default embedding function would download a model: ragkb always passes vectors.
            collection = self.client.get_or_create_collection(
                name,
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={"ragkb_embed_model": model, "ragkb_embed_dim": dimension, "ragkb_schema": 1},
            )
        else:
            if name not in self.collection_names():
                raise CollectionNotFound(name, self.collection_names())
            collection = self.client.get_collection(name, embedding_function=None)
        self._check_model(collection, model, dimension)
        self._collections[name] = collection
        return collection

    @staticmethod
    def _check_model(collection: Any, model: str, dimension: int) -> None:
        name = collection.name
        meta = collection.metadata or {}
        stored_model, stored_dim = meta.get("ragkb_embed_model"), meta.get("ragkb_embed_dim")
        if stored_model is not None and (stored_model != model or int(stored_dim or 0) != dimension):
            raise EmbeddingModelError(
                f"collection {name!r} was built with {stored_model} ({stored_dim} dimensions); the configured "
                f"model is {model} ({dimension} dimensions). Use the same RAGKB_EMBED_MODEL, or another "
                "collection, or re-ingest into a new one: vectors of different models are never mixed."
            )

    def drop(self, name: str) -> None:
        if name not in self.collection_names():
            raise CollectionNotFound(name, self.collection_names())
        self._collections.pop(name, None)
        self.client.delete_collection(name)

    # -- documents -------------------------------------------------------------------

    def committed_versions(self, collection: Any) -> dict[str, set[str]]:
        """document id -> committed versions (more than one means an interrupted replace)."""
        found = collection.get(where={"chunk_index": 0}, include=["metadatas"])
        versions: dict[str, set[str]] = {}
        for meta in found["metadatas"] or []:
            versions.setdefault(str(meta["document_id"]), set()).add(str(meta["doc_version"]))
        return versions

    def write_documents(self, collection: Any, documents: Sequence[DocumentVersion]) -> None:
        """Write document versions in as few calls as possible, committing each with its chunk 0.

        All non-marker chunks of the batch go first, then every marker, then the old versions of the
        documents that were updated are dropped. New documents have no old version to look for.
        """
        ids: list[str] = []
        texts: list[str] = []
        metadatas: list[dict[str, Any]] = []
        vectors: list[np.ndarray] = []
        markers: list[int] = []
        for doc in documents:
            if not doc.chunks:
                raise ValueError(f"document {doc.document_id} has no chunks")
            for chunk, vector in zip(doc.chunks, doc.embeddings, strict=True):
                if chunk.index == 0:
                    markers.append(len(ids))
                ids.append(f"{doc.document_id}:{doc.version}:{chunk.index}")
                texts.append(chunk.text)
                vectors.append(vector)
                metadatas.append(
                    self._chunk_metadata(doc.base_metadata, doc.document_id, doc.version, len(doc.chunks), chunk)
                )
        marker_set = set(markers)
        order = [i for i in range(len(ids)) if i not in marker_set] + markers  # markers last: they commit
        for start in range(0, len(order), self._max_batch):
            batch = order[start : start + self._max_batch]
            collection.upsert(
                ids=[ids[i] for i in batch],
                embeddings=np.stack([vectors[i] for i in batch]),
                documents=[texts[i] for i in batch],
                metadatas=[metadatas[i] for i in batch],
            )
        for doc in documents:
            if doc.replaces_existing:
                collection.delete(
                    where={"$and": [{"document_id": doc.document_id}, {"doc_version": {"$ne": doc.version}}]}
                )
        self.bump_generation(collection)

    def bump_generation(self, collection: Any) -> None:
        """Mark the collection changed, so derived indexes (BM25) in every process know to rebuild."""
        metadata = dict(collection.metadata or {})
        metadata["ragkb_generation"] = uuid.uuid4().hex
        collection.modify(metadata=metadata)

    def generation(self, name: str) -> str:
        """The collection's current generation, read fresh from Chroma (another process may have written)."""
        validate_collection_name(name)
        try:
            collection = self.client.get_collection(name, embedding_function=None)
        except Exception as exc:
            if "does not exist" in str(exc) or type(exc).__name__ == "NotFoundError":
                self._collections.pop(name, None)
                raise CollectionNotFound(name, self.collection_names()) from None
            raise
        return str((collection.metadata or {}).get("ragkb_generation", "0"))

    @staticmethod
    def _chunk_metadata(
        base: dict[str, Any], document_id: str, version: str, count: int, chunk: Chunk
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            **base,
            "document_id": document_id,
            "doc_version": version,
            "chunk_index": chunk.index,
            "chunk_count": count,
            "start": chunk.start,
            "end": chunk.end,
            "token_count": chunk.token_count,
            "content_hash": chunk.content_hash,
        }
        if chunk.page is not None:
            meta["page"] = chunk.page
        if chunk.heading:
            meta["heading"] = chunk.heading
        return meta

    def delete_stale_versions(self, collection: Any, document_id: str, *, keep: str) -> None:
        collection.delete(where={"$and": [{"document_id": document_id}, {"doc_version": {"$ne": keep}}]})
        self.bump_generation(collection)

    def delete_document(self, collection: Any, document_id: str) -> int:
        existing = collection.get(where={"document_id": document_id}, include=[])
        count = len(existing["ids"])
        if not count:
            raise DocumentNotFound(f"no document with id {document_id!r} in collection {collection.name!r}")
        collection.delete(where={"document_id": document_id})
        self.bump_generation(collection)
        return count

    def documents(self, collection: Any) -> list[DocumentInfo]:
        found = collection.get(where={"chunk_index": 0}, include=["metadatas"])
        docs = [
            DocumentInfo(
                document_id=str(m["document_id"]),
                source=str(m.get("source", "")),
                title=str(m.get("title", "")),
                chunk_count=int(m.get("chunk_count", 0)),
                version=str(m.get("doc_version", "")),
                kind=str(m.get("kind", "")),
            )
            for m in found["metadatas"] or []
        ]
        return sorted(docs, key=lambda d: d.source)

    def find_document(self, collection: Any, id_or_source: str) -> DocumentInfo:
        for doc in self.documents(collection):
            if id_or_source in (doc.document_id, doc.source):
                return doc
        raise DocumentNotFound(
            f"no document {id_or_source!r} in collection {collection.name!r} (give a document id or its source)"
        )

    def chunks(self, collection: Any, ids: Iterable[str]) -> list[StoredChunk]:
        found = collection.get(ids=list(ids), include=["documents", "metadatas"])
        return [
            StoredChunk(chunk_id, text or "", dict(meta or {}))
            for chunk_id, text, meta in zip(found["ids"], found["documents"], found["metadatas"], strict=True)
        ]

    def query(
        self,
        collection: Any,
        embedding: np.ndarray,
        *,
        k: int,
        where: dict[str, Any] | None = None,
        with_text: bool = True,
    ) -> list[StoredChunk]:
        """Nearest chunks by cosine similarity (score = 1 - cosine distance). Without `with_text` only
        ids, scores and metadata come back, which is cheaper when most candidates are thrown away."""
        include = ["documents", "metadatas", "distances"] if with_text else ["metadatas", "distances"]
        result = collection.query(query_embeddings=[embedding], n_results=k, where=where or None, include=include)
        texts = result["documents"][0] if with_text else [""] * len(result["ids"][0])
        return [
            StoredChunk(chunk_id, text or "", dict(meta or {}), score=1.0 - float(distance))
            for chunk_id, text, meta, distance in zip(
                result["ids"][0], texts, result["metadatas"][0], result["distances"][0], strict=True
            )
        ]
