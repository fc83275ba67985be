"""Which embedding backend a process runs when RAGKB_EMBED_BACKEND is `auto` (not yet the default; docs/speed.md).

A process has one embedder, and a collection can only be searched with the backend its vectors were made
with (its recorded identity says which; another one is refused as a model mismatch). So `auto` reads the
identities the store's collections recorded for the configured model:

- none (a new data dir, or only other models' collections): `onnx-int8`, the fast backend (docs/speed.md);
- otherwise the backend most of them were built with (ties go to `torch`), so a store built before
  `onnx-int8` became the default keeps opening with `torch`, and new collections there use `torch` too.

Moving such a store to `onnx-int8` is explicit: `RAGKB_EMBED_BACKEND=onnx-int8` and `ragkb reindex`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from .config import EMBED_BACKENDS, Settings
from .errors import CollectionNotFound
from .onnx_backend import RECIPE as INT8_RECIPE_VERSION
from .vectorstore import VectorStore

log = logging.getLogger("ragkb.embedder")

AUTO = "auto"
NEW_STORE_BACKEND = "onnx-int8"
# The int8 label names its recipe: vectors of another recipe are another model's (recipe 1, "onnx-int8",
# quantised every node; recipe 2, "onnx-int8-v2"; collections built with them are refused and reindexed,
# never mixed).
_LABELS = {"torch": None, "onnx": "onnx-fp32", "onnx-int8": f"onnx-int8-v{INT8_RECIPE_VERSION}"}


def backend_label(backend: str) -> str | None:
    """What a backend adds to the model identity: None for torch (fp32, the identity collections were
    always built with), the runtime and precision for the others."""
    return _LABELS[backend]


def backend_of(recorded: str, model_identity: str) -> str | None:
    """The backend a collection's recorded identity names, or None when it is another model's."""
    for backend in EMBED_BACKENDS:
        label = backend_label(backend)
        if recorded == (model_identity if label is None else f"{model_identity}@{label}"):
            return backend
    return None


def choose(recorded: Iterable[str | None], model_identity: str) -> tuple[str, str]:
    """The backend for `auto` given the identities a store's collections recorded, and why (for the log)."""
    counts = Counter(b for r in recorded if r is not None and (b := backend_of(r, model_identity)) is not None)
    if not counts:
        return NEW_STORE_BACKEND, "no collection of this model in the store yet"
    best = max(EMBED_BACKENDS, key=lambda b: (counts[b], -EMBED_BACKENDS.index(b)))
    kept = ", ".join(f"{counts[b]} {b}" for b in EMBED_BACKENDS if counts[b])
    return best, f"the store's collections of this model were built with it ({kept})"


def recorded_identities(store: VectorStore) -> list[str | None]:
    """The model identity every collection of the store recorded (None for one that recorded none)."""
    identities: list[str | None] = []
    for name in store.collection_names():
        try:
            identities.append(store.get(name).model)
        except CollectionNotFound:  # dropped between the listing and the read
            continue
    return identities


def resolve(settings: Settings, model_identity: str, store: VectorStore | None = None) -> str:
    """The backend this process runs: RAGKB_EMBED_BACKEND when it names one, else the `auto` choice above."""
    if settings.embed_backend != AUTO:
        return settings.embed_backend
    if store is None:
        from .store import open_store

        store = open_store(settings)
    backend, why = choose(recorded_identities(store), model_identity)
    log.info("RAGKB_EMBED_BACKEND=auto runs the %s backend: %s", backend, why)
    return backend
