"""Access control over HTTP and from the command line: open mode, keys over HTTP, rate limits, CORS, ops
protection, secure-by-default start rules, the audit trail of every write, and display sources."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor, display_source_for
from ingest.vectorstore import StoredChunk, fallback_display_source
from ragkb.cli import app as ragkb_app
from server.answering.reader import Reader
from server.answering.service import QueryService
from server.cli.query import is_loopback
from server.http.api import create_app
from server.http.auth import REQUIRE_KEYS_ENV
from server.state import KeyStore, Scope, StateDB

from .helpers import reader_for

COLLECTION = "authkb"


@pytest.fixture(scope="module")
def auth_kb(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Ingestor:
    root = tmp_path_factory.mktemp("auth")
    (root / "notes").mkdir()
    (root / "notes" / "keys.md").write_text("# Keys\n\nAPI keys carry a scope and a list of collections.\n")
    settings = Settings(data_dir=root / "kb", default_collection=COLLECTION)
    ingestor = Ingestor(settings, embedder=embedder)
    assert ingestor.ingest_paths([root / "notes"], collection=COLLECTION).added == 1
    return ingestor


@contextmanager
def serving(ingestor: Ingestor, tmp_path: Path, **overrides: Any) -> Iterator[TestClient]:
    """A fresh app over the shared store, with its own state database and the given settings."""
    values: dict[str, Any] = {"database_url": f"sqlite:///{tmp_path / 'state.sqlite3'}", **overrides}
    settings = ingestor.settings.model_copy(update=values)
    service = QueryService(settings, reader=reader_for(ingestor))
    with TestClient(create_app(settings, service)) as client:
        yield client


def keys_of(client: TestClient) -> KeyStore:
    keystore: KeyStore = client.app.state.components.keys  # type: ignore[attr-defined]
    return keystore


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- open mode, keys over HTTP --------------------------------------------------------------------


def test_open_until_the_first_key_then_closed(auth_kb: Ingestor, tmp_path: Path) -> None:
    with serving(auth_kb, tmp_path) as client:
        assert client.get("/v1/collections").status_code == 200  # no key exists: open (loopback demo)
        made = client.post("/v1/keys", json={"name": "boss", "scope": "admin", "collections": None})
        assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
        token = made.json()["token"]
        assert token.startswith("rk_") and made.json()["scope"] == "admin"
        refused = client.get("/v1/collections")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["code"] == "unauthorized" and "Authorization: Bearer" in refused.json()["error"]
        listed = client.get("/v1/keys", headers=bearer(token))
        assert listed.status_code == 200 and token not in listed.text
        assert [k["name"] for k in listed.json()] == ["boss"] and listed.json()[0]["hint"] == token[:7]
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200  # RAGKB_PROTECT_OPS is off
        assert client.get("/openapi.json").status_code == 200


def test_keys_over_http_validate_and_revoke_at_once(auth_kb: Ingestor, tmp_path: Path) -> None:
    with serving(auth_kb, tmp_path) as client:
        admin = bearer(keys_of(client).create("root", Scope.ADMIN, None)[1])
        made = client.post("/v1/keys", json={"name": "r1", "scope": "read", "collections": [COLLECTION]}, headers=admin)
        reader = bearer(made.json()["token"])
        assert client.post("/v1/retrieve", json={"question": "scope"}, headers=reader).status_code == 200
        again = client.post("/v1/keys", json={"name": "r1", "scope": "read"}, headers=admin)
        assert again.status_code == 409 and again.json()["code"] == "duplicate_key"
        bad = client.post("/v1/keys", json={"name": "r2", "scope": "owner"}, headers=admin)
        assert bad.status_code == 422 and "read" in bad.text and "admin" in bad.text
        bad_name = client.post("/v1/keys", json={"name": "no spaces", "scope": "read"}, headers=admin)
        assert bad_name.status_code == 422 and bad_name.json()["code"] == "invalid_key"
        forbidden = client.delete("/v1/keys/r1", headers=reader)
        assert forbidden.status_code == 403 and forbidden.json()["code"] == "forbidden"
        assert "'read'" in forbidden.json()["error"] and "'admin'" in forbidden.json()["error"]
        assert client.delete("/v1/keys/r1", headers=admin).json()["name"] == "r1"
        assert client.post("/v1/retrieve", json={"question": "scope"}, headers=reader).status_code == 401
        missing = client.delete("/v1/keys/r1", headers=admin)
        assert missing.status_code == 404 and "existing keys: root" in missing.json()["error"]


def test_a_limited_key_cannot_probe_for_collections(auth_kb: Ingestor, tmp_path: Path) -> None:
    with serving(auth_kb, tmp_path) as client:
        limited = bearer(keys_of(client).create("lim", Scope.WRITE, ["elsewhere"])[1])
        hidden = client.get(f"/v1/collections/{COLLECTION}/documents", headers=limited)
        missing = client.get("/v1/collections/nothing-here/documents", headers=limited)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["error"] == f"collection '{COLLECTION}' does not exist (available: none yet)"
        assert missing.json()["error"] == "collection 'nothing-here' does not exist (available: none yet)"
        default = client.post("/v1/query", json={"question": "keys"}, headers=limited)  # the default collection
        assert default.status_code == 404 and default.json()["code"] == "collection_not_found"
        bad = client.get("/v1/collections/x/documents", headers=limited)
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_collection_name"


def test_server_bound_beyond_loopback_refuses_everyone_when_no_key_is_left(
    auth_kb: Ingestor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REQUIRE_KEYS_ENV, "1")
    with serving(auth_kb, tmp_path) as client:
        refused = client.get("/v1/collections")
        assert refused.status_code == 401 and "ragkb keys create" in refused.json()["error"]


# -- limits, CORS, ops ----------------------------------------------------------------------------


def test_rate_limit_per_key_with_retry_after(auth_kb: Ingestor, tmp_path: Path) -> None:
    with serving(auth_kb, tmp_path, rate_limit_burst=2, rate_limit_per_minute=6) as client:
        one = bearer(keys_of(client).create("one", Scope.READ, None)[1])
        two = bearer(keys_of(client).create("two", Scope.READ, None)[1])
        assert [client.get("/v1/collections", headers=one).status_code for _ in range(2)] == [200, 200]
        limited = client.get("/v1/collections", headers=one)
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 10  # 6 a minute: one token every 10 s
        assert client.get("/v1/collections", headers=two).status_code == 200  # buckets are per key
        assert client.get("/healthz").status_code == 200  # liveness is never limited


def test_open_mode_shares_one_anonymous_bucket(auth_kb: Ingestor, tmp_path: Path) -> None:
    with serving(auth_kb, tmp_path, rate_limit_burst=1, rate_limit_per_minute=1) as client:
        assert client.get("/v1/collections").status_code == 200
        limited = client.get("/v1/collections")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 59


def test_cors_is_off_by_default_and_on_for_configured_origins(auth_kb: Ingestor, tmp_path: Path) -> None:
    preflight = {"Origin": "https://kb.example", "Access-Control-Request-Method": "POST"}
    with serving(auth_kb, tmp_path) as client:
        response = client.get("/healthz", headers={"Origin": "https://kb.example"})
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-origin" not in client.options("/v1/query", headers=preflight).headers
    with serving(auth_kb, tmp_path, cors_origins=["https://kb.example"]) as client:
        response = client.get("/healthz", headers={"Origin": "https://kb.example"})
        assert response.headers["access-control-allow-origin"] == "https://kb.example"
        allowed = client.options("/v1/query", headers={**preflight, "Access-Control-Request-Headers": "authorization"})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://kb.example"
        other = client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_protect_ops_restricts_metrics_and_docs_to_admins(auth_kb: Ingestor, tmp_path: Path) -> None:
    with serving(auth_kb, tmp_path, protect_ops=True) as client:
        assert client.get("/metrics").status_code == 200  # no key exists yet: open
        admin = bearer(keys_of(client).create("root", Scope.ADMIN, None)[1])
        reader = bearer(keys_of(client).create("reader", Scope.READ, None)[1])
        for path in ("/metrics", "/docs", "/openapi.json"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers=reader).status_code == 403
            assert client.get(path, headers=admin).status_code == 200
        schema = client.get("/openapi.json", headers=admin).json()
        assert schema["components"]["securitySchemes"]["apiKey"] == {
            "type": "http",
            "scheme": "bearer",
            "description": schema["components"]["securitySchemes"]["apiKey"]["description"],
        }
        assert schema["paths"]["/v1/query"]["post"]["security"] == [{"apiKey": []}]
        assert "security" not in schema["paths"]["/healthz"]["get"]


def test_error_bodies_never_carry_stack_traces(auth_kb: Ingestor, tmp_path: Path) -> None:
    with serving(auth_kb, tmp_path) as client:
        admin = bearer(keys_of(client).create("root", Scope.ADMIN, None)[1])
        parts = client.app.state.components  # type: ignore[attr-defined]
        parts.keys.list = lambda: 1 / 0  # an error nobody expected, inside a route
        response = client.get("/v1/keys", headers=admin)
        assert response.status_code == 500 and response.json()["code"] == "internal"
        assert "Traceback" not in response.text and "ZeroDivisionError" not in response.text


def test_state_database_down_is_503(auth_kb: Ingestor, tmp_path: Path) -> None:
    with serving(auth_kb, tmp_path) as client:
        parts = client.app.state.components  # type: ignore[attr-defined]
        keys = KeyStore(StateDB("postgresql://postgres:secret@127.0.0.1:1/none"))
        parts.keys = keys
        response = client.get("/v1/collections")
        assert response.status_code == 503 and response.json()["code"] == "state_unavailable"
        assert "secret" not in response.text
        keys.db.dispose()


# -- the audit trail ------------------------------------------------------------------------------


def test_every_write_is_audited(auth_kb: Ingestor, tmp_path: Path) -> None:
    with serving(auth_kb, tmp_path) as client:
        admin = bearer(keys_of(client).create("root", Scope.ADMIN, None)[1])
        writer = bearer(client.post("/v1/keys", json={"name": "w", "scope": "write"}, headers=admin).json()["token"])
        rid = {"X-Request-ID": "audit-1"}
        files = [
            ("files", ("a.md", b"# A\n\nFirst version of a.\n", "text/markdown")),
            ("files", ("empty.txt", b"", "text/plain")),
        ]
        uploaded = client.post(f"/v1/collections/{COLLECTION}/documents", files=files, headers={**writer, **rid})
        assert uploaded.status_code == 200 and uploaded.json()["added"] == 1 and uploaded.json()["failed"] == 1
        document_id = uploaded.json()["documents"][0]["document_id"]
        files = [("files", ("a.md", b"# A\n\nSecond version of a.\n", "text/markdown"))]
        assert client.post(f"/v1/collections/{COLLECTION}/documents", files=files, headers=writer).status_code == 200
        deleted = client.delete(f"/v1/collections/{COLLECTION}/documents/{document_id}", headers=writer)
        assert deleted.status_code == 200 and deleted.json()["source"] == "upload://a.md"
        assert client.delete("/v1/cache", headers=admin).status_code == 200
        assert client.delete("/v1/keys/w", headers=admin).status_code == 200
        events = client.get("/v1/audit", headers=admin, params={"limit": 50}).json()
        seen = [(e["action"], e["key_name"], e["collection"]) for e in reversed(events)]
        assert seen == [
            ("key.create", "root", None),
            ("document.add", "w", COLLECTION),
            ("document.fail", "w", COLLECTION),
            ("document.update", "w", COLLECTION),
            ("document.delete", "w", COLLECTION),
            ("cache.clear", "root", None),
            ("key.revoke", "root", None),
        ]
        by_action = {e["action"]: e for e in events}
        assert by_action["document.add"]["request_id"] == "audit-1" == by_action["document.fail"]["request_id"]
        assert by_action["document.add"]["document_id"] == by_action["document.delete"]["document_id"]
        assert "empty.txt" in by_action["document.fail"]["detail"]["error"]
        assert by_action["key.create"]["detail"] == {"key": "w", "scope": "write", "collections": None}
        assert all(datetime.fromisoformat(e["at"]) > datetime.now(UTC) - timedelta(minutes=5) for e in events)
        only = client.get("/v1/audit", headers=admin, params={"action": "document.add"}).json()
        assert [e["action"] for e in only] == ["document.add"]
        future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        assert client.get("/v1/audit", headers=admin, params={"since": future}).json() == []
        assert len(client.get("/v1/audit", headers=admin, params={"limit": 2}).json()) == 2
        assert client.get("/v1/audit", headers=admin, params={"limit": 0}).status_code == 422


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(ragkb_app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_cache_clear_and_key_changes_are_audited(cli_env: Path) -> None:
    assert _invoke("keys", "create", "--name", "ops", "--scope", "read", "--all")[0] == 0
    assert _invoke("keys", "revoke", "ops")[0] == 0
    code, out, _ = _invoke("cache", "clear")
    assert code == 0 and "removed 0 cache entries" in out
    code, out, _ = _invoke("audit", "--json")
    events = json.loads(out)
    assert [(e["action"], e["key_name"]) for e in events] == [("cache.clear", None), ("key.revoke", None),
                                                              ("key.create", None)]  # fmt: skip
    assert events[0]["detail"] == {"removed": 0, "via": "cli"}


# -- secure by default (`ragkb serve`) ------------------------------------------------------------


@pytest.fixture
def no_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """`uvicorn.run` recorded instead of run, so a test sees whether `serve` would have bound a port; the
    logging `serve` configures is put back afterwards."""
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setenv(REQUIRE_KEYS_ENV, "")  # recorded, so whatever `serve` sets is undone afterwards
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield calls
    root.handlers[:] = handlers
    root.setLevel(level)


def _serve(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(ragkb_app, ["serve", "--port", "1", *args])
    return result.exit_code, result.stdout + result.stderr


def test_serve_beyond_loopback_refuses_without_a_key(cli_env: Path, no_uvicorn: list[dict[str, Any]]) -> None:
    code, output = _serve("--host", "0.0.0.0")
    assert code == 2 and "refusing to serve on 0.0.0.0" in output and "--insecure" in output
    assert no_uvicorn == [] and not (cli_env / "serve.lock").exists()  # it exits before binding or locking


def test_serve_insecure_warns_at_every_start(cli_env: Path, no_uvicorn: list[dict[str, Any]]) -> None:
    for _ in range(2):
        code, output = _serve("--host", "0.0.0.0", "--insecure")
        assert code == 0 and "WITHOUT authentication (--insecure)" in output
    assert [call["host"] for call in no_uvicorn] == ["0.0.0.0", "0.0.0.0"]


def test_serve_with_a_key_or_on_loopback(cli_env: Path, no_uvicorn: list[dict[str, Any]]) -> None:
    code, output = _serve("--host", "127.0.0.1")
    assert code == 0 and "serving openly on loopback" in output
    assert os.environ.get(REQUIRE_KEYS_ENV) == ""
    assert _invoke("keys", "create", "--name", "root", "--scope", "admin", "--all")[0] == 0
    code, output = _serve("--host", "0.0.0.0")
    assert code == 0 and "openly" not in output and "WITHOUT" not in output

    assert os.environ.get(REQUIRE_KEYS_ENV) == "1"  # workers refuse everyone should every key be revoked
    assert len(no_uvicorn) == 2


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("kb.example.org", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# -- display sources ------------------------------------------------------------------------------


def test_display_source_never_shows_an_absolute_path(tmp_path: Path) -> None:
    docs = tmp_path / "handbook"
    assert display_source_for(docs / "a" / "b.md", [docs]) == "handbook/a/b.md"
    assert display_source_for(tmp_path / "x.pdf", [docs]) == "x.pdf"
    assert fallback_display_source("/srv/kb/old.md") == "old.md"
    assert fallback_display_source("upload://report.pdf") == "upload://report.pdf"
    old = StoredChunk("a:v:0", "", {"source": "/srv/kb/old.md"})  # stored before display_source existed
    assert old.provenance().display_source == "old.md"
    new = StoredChunk("b:v:0", "", {"source": "/srv/kb/new.md", "display_source": "kb/new.md"})
    assert new.provenance().display_source == "kb/new.md"


def test_cli_ingestion_stores_display_sources(auth_kb: Ingestor) -> None:
    reader = reader_for(auth_kb)
    [doc] = reader.documents(COLLECTION)[:1] or [None]
    assert doc is not None and Path(doc.source).is_absolute()  # the identity stays the absolute path
    chunks = reader.store.chunks(reader.collection(COLLECTION), [f"{doc.document_id}:{doc.version}:0"])
    assert chunks[0].metadata["display_source"] == "notes/keys.md"


def test_documents_listing_over_http_shows_display_sources(auth_kb: Ingestor, tmp_path: Path) -> None:
    with serving(auth_kb, tmp_path) as client:
        response = client.get(f"/v1/collections/{COLLECTION}/documents")
        assert response.status_code == 200, response.text
        docs = response.json()
        assert "notes/keys.md" in {d["source"] for d in docs}
        assert str(tmp_path.parent) not in json.dumps(docs) and "/tmp/" not in json.dumps(docs)


def test_other_authorization_schemes_are_401(auth_kb: Ingestor, tmp_path: Path) -> None:
    with serving(auth_kb, tmp_path) as client:
        keys_of(client).create("k", Scope.READ, None)
        response: httpx.Response = client.get("/v1/collections", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_clearing_a_cache_that_is_down_is_a_503(tmp_path: Path, embedder: Embedder) -> None:
    from server.answering.cache import AnswerCache, RedisBackend

    from .servers import free_port

    settings = Settings(data_dir=tmp_path / "kb")
    service = QueryService(
        settings,
        reader=Reader(settings, embedder=embedder),
        cache=AnswerCache(RedisBackend(f"redis://127.0.0.1:{free_port()}/0", ttl=60)),
    )
    with TestClient(create_app(settings, service)) as client:
        response = client.delete("/v1/cache")
    assert response.status_code == 503 and response.json()["code"] == "cache_unavailable"


def test_an_admin_key_cannot_be_limited_to_collections(tmp_path: Path) -> None:
    from server.state import InvalidKey

    db = StateDB(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    db.migrate()
    keys = KeyStore(db)
    with pytest.raises(InvalidKey, match="an admin key covers every collection"):
        keys.create("boss", Scope.ADMIN, ["alpha"])
    assert keys.create("boss", Scope.ADMIN, None)[0].collections is None
