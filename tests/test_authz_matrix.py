"""The authorisation matrix, generated from the app's own route table: every APIRoute method x path, for
every identity, on SQLite and on PostgreSQL. A route without an entry in `CASES` fails, so a new route
must be classified before it ships. Every body is also checked for absolute server paths and stack traces.

Identities: no key, an invalid key, a revoked key, a read key (every collection), a write key limited to
another collection, an admin key. The server runs with RAGKB_PROTECT_OPS, so /metrics and the docs are
admin-only here (tests/test_auth.py covers them open).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.answering.service import QueryService
from server.http.api import create_app
from server.state import Scope

from .conftest import ENGINES, fresh_database_url
from .helpers import reader_for

Access = Literal["public", "ops", "read", "write", "review", "admin"]
IDENTITIES = ["none", "invalid", "revoked", "read", "write_other", "admin"]
TARGET, OTHER = "alpha", "other"
_names = itertools.count()


@dataclass(frozen=True)
class Case:
    """How to call a route, what it needs, and what an allowed caller gets."""

    access: Access
    request: Callable[[], dict[str, Any]]
    ok: int = 200
    ok_code: str | None = None  # the error code of an allowed request that is answered with an error
    path: str | None = None  # the concrete path when the template has parameters
    collection: bool = False  # names TARGET: a key limited to OTHER gets 404 collection_not_found


def _json(body: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    return lambda: {"json": body}


def _none() -> dict[str, Any]:
    return {}


def _upload() -> dict[str, Any]:
    return {
        "files": [("files", ("matrix.md", b"# Matrix\n\nUploaded by the authorisation matrix.\n", "text/markdown"))]
    }


def _new_key() -> dict[str, Any]:
    return {"json": {"name": f"made-{next(_names)}", "scope": "read", "collections": [OTHER]}}


QUESTION = {"question": "How is the matrix collection organised?", "collection": TARGET}

CASES: dict[tuple[str, str], Case] = {
    ("GET", "/healthz"): Case("public", _none),
    ("GET", "/readyz"): Case("public", _none),
    ("GET", "/metrics"): Case("ops", _none),
    ("GET", "/openapi.json"): Case("ops", _none),
    ("GET", "/docs"): Case("ops", _none),
    ("GET", "/redoc"): Case("ops", _none),
    ("POST", "/v1/query"): Case("read", _json(QUESTION), collection=True),
    ("POST", "/v1/retrieve"): Case("read", _json(QUESTION), collection=True),
    ("GET", "/v1/collections"): Case("read", _none),
    ("GET", "/v1/collections/{name}/documents"): Case(
        "read", _none, path=f"/v1/collections/{TARGET}/documents", collection=True
    ),
    ("POST", "/v1/collections/{name}/documents"): Case(
        "write", _upload, path=f"/v1/collections/{TARGET}/documents", collection=True
    ),
    ("DELETE", "/v1/collections/{name}/documents/{document_id}"): Case(
        "write", _none, 404, "document_not_found", path=f"/v1/collections/{TARGET}/documents/nope", collection=True
    ),
    ("GET", "/v1/documents/{document_id}/file"): Case(
        "read", _none, 404, "document_not_found", path=f"/v1/documents/nope/file?collection={TARGET}", collection=True
    ),
    ("GET", "/v1/jobs/{job_id}"): Case("read", _none, 404, "queue_not_configured", path="/v1/jobs/abc"),
    ("POST", "/v1/feedback"): Case("read", _json({"request_id": "nope", "rating": "up"}), 404, "answer_not_found"),
    ("GET", "/v1/answers/{review_id}"): Case("read", _none, 404, "answer_not_found", path="/v1/answers/nope"),
    ("GET", "/v1/answers/{review_id}/events"): Case(
        "read", _none, 404, "answer_not_found", path="/v1/answers/nope/events"
    ),
    ("GET", "/v1/reviews"): Case("review", _none),
    ("GET", "/v1/reviews/{review_id}"): Case("review", _none, 404, "review_not_found", path="/v1/reviews/nope"),
    ("POST", "/v1/reviews/{review_id}/approve"): Case(
        "review", _json({}), 404, "review_not_found", path="/v1/reviews/nope/approve"
    ),
    ("POST", "/v1/reviews/{review_id}/reject"): Case(
        "review", _json({"retry": False}), 404, "review_not_found", path="/v1/reviews/nope/reject"
    ),
    ("GET", "/v1/curated"): Case("review", _none),
    ("GET", "/v1/curated/{curated_id}"): Case("review", _none, 404, "curated_not_found", path="/v1/curated/987654"),
    ("DELETE", "/v1/curated/{curated_id}"): Case("review", _none, 404, "curated_not_found", path="/v1/curated/987654"),
    ("GET", "/v1/collections/{name}/review-policy"): Case(
        "read", _none, path=f"/v1/collections/{TARGET}/review-policy", collection=True
    ),
    ("PUT", "/v1/collections/{name}/review-policy"): Case(
        "admin", _json({"review": "off"}), path=f"/v1/collections/{TARGET}/review-policy", collection=True
    ),
    ("POST", "/v1/collections/{name}/reindex"): Case(
        "admin",
        _json({"chunk_tokens": 16, "chunk_overlap": 99}),
        422,
        "invalid_reindex",
        path=f"/v1/collections/{TARGET}/reindex",
        collection=True,
    ),
    ("GET", "/v1/collections/{name}/reindex"): Case(
        "admin", _none, 404, "reindex_not_found", path=f"/v1/collections/{TARGET}/reindex", collection=True
    ),
    ("GET", "/"): Case("public", _none),  # the web page (server/web/): the pages are shells, the API checks keys
    ("GET", "/documents"): Case("public", _none),
    ("GET", "/review"): Case("public", _none),
    ("GET", "/signin"): Case("public", _none),
    ("GET", "/static/{name}"): Case("public", _none, path="/static/app.js"),
    ("GET", "/v1/whoami"): Case("read", _none),
    ("POST", "/v1/passages"): Case(
        "read", _json({"collection": TARGET, "citations": [{"n": 1, "chunk_id": "nope:v:0"}]}), collection=True
    ),
    ("GET", "/v1/ui/collections/{name}/documents"): Case(
        "read", _none, path=f"/v1/ui/collections/{TARGET}/documents", collection=True
    ),
    # the OpenAI door (its errors in OpenAI's shape, `code` inside `error`) and stored conversations
    ("GET", "/v1/models"): Case("read", _none),
    ("POST", "/v1/chat/completions"): Case(
        "read", _json({"model": f"ragkb:{OTHER}", "messages": [{"role": "user", "content": "What is elsewhere?"}]})
    ),
    ("POST", "/v1/conversations"): Case("read", _json({"collection": TARGET}), 201, collection=True),
    ("GET", "/v1/conversations/{conversation_id}"): Case(
        "read", _none, 404, "conversation_not_found", path="/v1/conversations/nope"
    ),
    ("DELETE", "/v1/conversations/{conversation_id}"): Case(
        "read", _none, 404, "conversation_not_found", path="/v1/conversations/nope"
    ),
    ("POST", "/v1/conversations/{conversation_id}/messages"): Case(
        "read", _json({"question": "And?"}), 404, "conversation_not_found", path="/v1/conversations/nope/messages"
    ),
    ("GET", "/v1/keys"): Case("admin", _none),
    ("POST", "/v1/keys"): Case("admin", _new_key, 201),
    ("DELETE", "/v1/keys/{name}"): Case("admin", _none, 404, "key_not_found", path="/v1/keys/nobody"),
    ("DELETE", "/v1/cache"): Case("admin", _none),
    ("GET", "/v1/audit"): Case("admin", _none),
}

SCOPE_OF = {"read": Scope.READ, "write": Scope.WRITE, "review": Scope.REVIEW, "admin": Scope.ADMIN}
HOLDS = {"read": Scope.READ, "write_other": Scope.WRITE, "admin": Scope.ADMIN}


def route_table() -> list[tuple[str, str]]:
    """Every (method, path) the app serves, from its route table (built without starting it). FastAPI 0.16x
    keeps included routers nested in `app.routes`; `iter_route_contexts` yields each route with its full path."""
    app = create_app(Settings(data_dir=Path("/nonexistent-matrix")))
    found = {
        (method, str(context.path))
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        for method in (context.methods or set()) - {"HEAD", "OPTIONS"}
    }
    return sorted(found)


ROUTES = route_table()


@dataclass(frozen=True)
class Expected:
    status: int
    code: str | None = None


def expected(case: Case, identity: str, *, protect_ops: bool = True) -> Expected:
    """The outcome table: who gets what, derived from the route's class and the identity."""
    if case.access == "public" or (case.access == "ops" and not protect_ops):
        return Expected(case.ok)
    if identity in ("none", "invalid", "revoked"):
        return Expected(401, "unauthorized")
    needed = Scope.ADMIN if case.access == "ops" else SCOPE_OF[case.access]
    if not HOLDS[identity].implies(needed):
        return Expected(403, "forbidden")
    if case.collection and identity == "write_other":
        return Expected(404, "collection_not_found")
    return Expected(case.ok, case.ok_code)


@dataclass
class Matrix:
    client: TestClient
    tokens: dict[str, str | None]
    forbidden_text: list[str]
    bodies: list[tuple[str, str, str]] = field(default_factory=list)  # (identity, route, body)


@pytest.fixture(scope="module")
def matrix_kb(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> tuple[Settings, Ingestor, Path]:
    """Two small collections ingested from disk: TARGET from a directory, OTHER from a file given directly."""
    root = tmp_path_factory.mktemp("matrix")
    docs = root / "handbook"
    (docs / "sub").mkdir(parents=True)
    (docs / "guide.md").write_text("# Guide\n\nThe matrix collection is organised in guides and notes.\n")
    (docs / "sub" / "notes.txt").write_text("Notes: the matrix collection keeps its notes in a sub folder.\n")
    (root / "elsewhere.md").write_text("# Elsewhere\n\nThe other collection holds one page.\n")
    settings = Settings(
        data_dir=root / "kb", protect_ops=True, rate_limit_burst=1_000_000, rate_limit_per_minute=1_000_000
    )
    ingestor = Ingestor(settings, embedder=embedder)
    assert ingestor.ingest_paths([docs], collection=TARGET).added == 2
    assert ingestor.ingest_paths([root / "elsewhere.md"], collection=OTHER).added == 1
    return settings, ingestor, root


@pytest.fixture(scope="module", params=ENGINES)
def matrix(
    request: pytest.FixtureRequest,
    matrix_kb: tuple[Settings, Ingestor, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Matrix]:
    """One app per engine, with the five keys made through its own KeyStore (so revocation is immediate)."""
    base, ingestor, root = matrix_kb
    with fresh_database_url(request.param, tmp_path_factory.mktemp(f"state-{request.param}")) as url:
        settings = base.model_copy(update={"database_url": url})
        service = QueryService(settings, reader=reader_for(ingestor))
        with TestClient(create_app(settings, service)) as client:
            keys = client.app.state.components.keys  # type: ignore[attr-defined]
            tokens: dict[str, str | None] = {"none": None, "invalid": "rk_" + "x" * 43}
            tokens["revoked"] = keys.create("gone", Scope.READ, None)[1]
            keys.revoke("gone")
            tokens["read"] = keys.create("reader", Scope.READ, None)[1]
            tokens["write_other"] = keys.create("writer-other", Scope.WRITE, [OTHER])[1]
            tokens["admin"] = keys.create("root", Scope.ADMIN, None)[1]
            yield Matrix(client, tokens, forbidden_text=["/tmp/", str(root), "Traceback"])


def call(matrix: Matrix, method: str, path: str, identity: str) -> httpx.Response:
    case = CASES[(method, path)]
    token = matrix.tokens[identity]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = matrix.client.request(method, case.path or path, headers=headers, **case.request())
    matrix.bodies.append((identity, f"{method} {path}", response.text))
    return response


def test_every_route_is_classified() -> None:
    missing = [route for route in ROUTES if route not in CASES]
    stale = [route for route in CASES if route not in ROUTES]
    assert not missing, f"add these routes to CASES with the access they need: {missing}"
    assert not stale, f"CASES lists routes the app no longer has: {stale}"


@pytest.mark.parametrize("identity", IDENTITIES)
@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_matrix(matrix: Matrix, method: str, path: str, identity: str) -> None:
    case = CASES.get((method, path))
    assert case is not None, f"{method} {path} is not classified in CASES"
    want = expected(case, identity)
    response = call(matrix, method, path, identity)
    assert response.status_code == want.status, response.text
    if want.code is not None:
        assert _code(response.json()) == want.code
    if want.status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if want.status in (401, 403, 404) and response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        assert body["error"] and body["request_id"] == response.headers["x-request-id"]
    token = matrix.tokens[identity]
    assert token is None or token not in response.text, "a token is never echoed"
    if want.code == "collection_not_found":  # the "available" list names only what the key may see
        assert f"'{TARGET}' does not exist (available: {OTHER})" in response.json()["error"]


def _code(body: dict[str, Any]) -> str:
    """ragkb's error `code`; on the OpenAI door's routes it sits inside `error`."""
    return str(body["error"]["code"] if isinstance(body.get("error"), dict) else body["code"])


def test_listing_shows_only_visible_collections(matrix: Matrix) -> None:
    names = {c["name"] for c in call(matrix, "GET", "/v1/collections", "write_other").json()}
    assert names == {OTHER}
    assert {TARGET, OTHER} <= {c["name"] for c in call(matrix, "GET", "/v1/collections", "read").json()}


def test_documents_show_display_sources(matrix: Matrix) -> None:
    docs = call(matrix, "GET", "/v1/collections/{name}/documents", "read").json()
    assert {"handbook/guide.md", "handbook/sub/notes.txt"} <= {d["source"] for d in docs}


CHUNK_ROUTES = ("POST /v1/query", "POST /v1/retrieve")


def _leaks(matrix: Matrix, routes: tuple[str, ...] | None = None) -> list[tuple[str, str, str]]:
    return [
        (identity, route, text)
        for identity, route, body in matrix.bodies
        for text in matrix.forbidden_text
        if text in body and (routes is None or route in routes)
    ]


def test_no_absolute_paths_or_stack_traces_in_any_body(matrix: Matrix) -> None:
    """Run after the matrix (same module, same app): every body it saw."""
    assert len(matrix.bodies) >= len(ROUTES) * len(IDENTITIES)
    leaks = _leaks(matrix)
    assert not leaks, leaks[:3]


def test_citations_and_chunks_show_display_sources(matrix: Matrix) -> None:
    for route in CHUNK_ROUTES:
        method, path = route.split(" ")
        response = call(matrix, method, path, "read")
        assert response.status_code == 200
        assert not _leaks(matrix, (route,))
        chunks = response.json().get("chunks") or response.json()["citations"]
        shown = {c["source"] for c in chunks if not c["source"].startswith("upload://")}  # the matrix uploads too
        assert shown and shown <= {"handbook/guide.md", "handbook/sub/notes.txt"}
