"""API keys on SQLite and PostgreSQL: scopes, collections, create/list/revoke/authenticate, the cache
in front of authenticate, and the `keys` and `audit` commands."""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from ingest.errors import InvalidCollectionName
from server.cli.keys import audit_app, keys_app
from server.state import (
    DuplicateKeyName,
    Identity,
    InvalidKey,
    InvalidScope,
    KeyStore,
    Scope,
    StateDB,
    UnknownKey,
)
from server.state.models import ApiKey


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- scopes --------------------------------------------------------------------------------------

R, W, V, A = Scope.READ, Scope.WRITE, Scope.REVIEW, Scope.ADMIN
IMPLICATIONS = {  # holder -> what it may do
    R: {R},
    W: {R, W},
    V: {R, V},
    A: {R, W, V, A},
}


@pytest.mark.parametrize("holder", list(Scope))
@pytest.mark.parametrize("needed", list(Scope))
def test_scope_implication_matrix(holder: Scope, needed: Scope) -> None:
    assert holder.implies(needed) is (needed in IMPLICATIONS[holder])
    assert Identity("k", holder, None).allows(needed) is (needed in IMPLICATIONS[holder])


def test_unknown_scope_names_the_valid_ones() -> None:
    with pytest.raises(InvalidScope, match="unknown scope 'owner': use one of read, write, review, admin"):
        Scope.parse("owner")
    assert Scope.parse("write") is Scope.WRITE


def test_identity_collections() -> None:
    everywhere = Identity("all", Scope.READ, None)
    limited = Identity("docs", Scope.READ, frozenset({"docs", "faq"}))
    assert everywhere.can_see("anything")
    assert limited.can_see("docs") and not limited.can_see("hr")
    assert limited.visible(["hr", "faq", "docs"]) == ["faq", "docs"]


# -- the store -----------------------------------------------------------------------------------


def test_create_authenticate_list_revoke(state_db: StateDB) -> None:
    keys = KeyStore(state_db)
    assert keys.any_keys() is False and keys.list() == []
    record, token = keys.create("ci", "write", ["docs", "faq", "docs"])
    assert token.startswith("rk_") and len(token) >= 43
    assert record.name == "ci" and record.scope is Scope.WRITE and record.collections == ("docs", "faq")
    assert record.hint == token[:7]
    assert keys.any_keys() is True

    identity = keys.authenticate(token)
    assert identity == Identity("ci", Scope.WRITE, frozenset({"docs", "faq"}))
    assert identity.allows(Scope.READ) and not identity.allows(Scope.ADMIN)
    assert identity.can_see("faq") and not identity.can_see("hr")

    _, admin_token = keys.create("root", Scope.ADMIN, None)
    admin = keys.authenticate(admin_token)
    assert admin is not None and admin.collections is None and admin.can_see("hr")

    listed = keys.list()
    assert [r.name for r in listed] == ["ci", "root"]
    assert set(listed[0].as_dict()) == {"name", "scope", "collections", "hint", "created_at"}
    assert token not in repr(listed) and hashlib.sha256(token.encode()).hexdigest() not in repr(listed)

    assert keys.revoke("ci").name == "ci"
    assert keys.authenticate(token) is None  # at once in the process that revoked it
    assert [r.name for r in keys.list()] == ["root"]
    keys.revoke("root")
    assert keys.any_keys() is False


def test_only_the_sha256_of_the_token_is_stored(state_db: StateDB) -> None:
    _, token = KeyStore(state_db).create("ci", "read", None)
    with state_db.session() as session:
        row = session.scalars(sa.select(ApiKey)).one()
        stored = [str(getattr(row, column.key)) for column in ApiKey.__table__.columns]
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert not any(token in value for value in stored)


def test_duplicate_name_is_refused_by_name(state_db: StateDB) -> None:
    keys = KeyStore(state_db)
    keys.create("ci", "read", None)
    with pytest.raises(DuplicateKeyName, match="an API key named 'ci' already exists"):
        keys.create("ci", "admin", None)
    assert [(r.name, r.scope) for r in keys.list()] == [("ci", Scope.READ)]


def test_revoking_an_unknown_key_names_the_existing_ones(state_db: StateDB) -> None:
    keys = KeyStore(state_db)
    with pytest.raises(UnknownKey, match=r"no API key named 'ci' \(existing keys: none yet\)"):
        keys.revoke("ci")
    keys.create("ops", "admin", None)
    keys.create("bot", "read", ["docs"])
    with pytest.raises(UnknownKey, match=r"existing keys: bot, ops"):
        keys.revoke("ci")


INVALID_KEYS: list[tuple[str, list[str] | str | None, type[Exception], str]] = [
    ("", None, InvalidKey, "invalid key name"),
    ("has space", None, InvalidKey, "invalid key name"),
    ("x" * 65, None, InvalidKey, "invalid key name"),
    ("ci", [], InvalidKey, "needs at least one"),
    ("ci", "docs", InvalidKey, "list of names"),
    ("ci", ["docs", "../etc"], InvalidCollectionName, "invalid collection name '../etc'"),
]


def test_invalid_keys_are_refused(state_db: StateDB) -> None:
    keys = KeyStore(state_db)
    for name, collections, error, message in INVALID_KEYS:
        with pytest.raises(error, match=message):
            keys.create(name, "read", collections)
    assert keys.list() == []


def test_unknown_or_malformed_tokens_authenticate_as_nobody(state_db: StateDB) -> None:
    keys = KeyStore(state_db)
    keys.create("ci", "read", None)
    for token in ["", "Bearer x", "rk_", "rk_not-a-real-token", "sk_" + "a" * 43, "rk_" + "a" * 500]:
        assert keys.authenticate(token) is None, token


def test_revocation_elsewhere_takes_effect_within_the_cache_ttl(state_db: StateDB) -> None:
    """The server (one KeyStore) caches identities; the CLI (another KeyStore) revokes."""
    clock = FakeClock()
    server = KeyStore(state_db, cache_ttl=5.0, clock=clock)
    cli = KeyStore(state_db)
    _, token = cli.create("ci", "read", None)
    assert server.authenticate(token) is not None
    cli.revoke("ci")
    clock.now += 4.9
    assert server.authenticate(token) is not None  # still cached: the documented window
    clock.now += 0.2
    assert server.authenticate(token) is None


def test_any_keys_is_cached_for_the_ttl(state_db: StateDB) -> None:
    clock = FakeClock()
    server = KeyStore(state_db, cache_ttl=5.0, clock=clock)
    assert server.any_keys() is False
    KeyStore(state_db).create("ci", "read", None)
    assert server.any_keys() is False
    clock.now += 5.1
    assert server.any_keys() is True


def test_identity_cache_is_bounded(state_db: StateDB) -> None:
    keys = KeyStore(state_db, cache_size=2)
    tokens = [keys.create(f"k{i}", "read", None)[1] for i in range(4)]
    for token in tokens:
        assert keys.authenticate(token) is not None
    assert len(keys._identities) == 2


def test_authenticate_is_fast(state_db: StateDB) -> None:
    """The issue's budget: at most 1 ms per request on a cache hit. Measured p50s are printed (-s)."""
    _, token = KeyStore(state_db).create("ci", "read", ["docs"])
    cached, uncached = KeyStore(state_db), KeyStore(state_db, cache_ttl=0)
    p50 = {}
    for label, keys in (("cached", cached), ("uncached", uncached)):
        keys.authenticate(token)  # warm the pool
        samples = []
        for _ in range(200):
            start = time.perf_counter()
            assert keys.authenticate(token) is not None
            samples.append(time.perf_counter() - start)
        p50[label] = statistics.median(samples) * 1000
    print(f"\nauthenticate p50 on {state_db.dialect}: cached {p50['cached']:.4f} ms, uncached {p50['uncached']:.3f} ms")
    assert p50["cached"] < 1.0
    assert p50["uncached"] < 10.0


# -- the commands --------------------------------------------------------------------------------

runner = CliRunner()


def _invoke(app: typer.Typer, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_keys_commands(cli_env: Path) -> None:
    code, out, _ = _invoke(
        keys_app, "create", "--name", "ci", "--scope", "write", "--collections", "docs, faq", "--json"
    )
    assert code == 0
    created = json.loads(out)
    assert created["name"] == "ci" and created["scope"] == "write" and created["collections"] == ["docs", "faq"]
    token = created["token"]

    code, out, err = _invoke(keys_app, "create", "--name", "root", "--scope", "admin", "--all")
    assert code == 0 and "root" in out and "only this once" in err
    root_token = out.strip().splitlines()[-1]
    assert root_token.startswith("rk_")

    db = StateDB.from_settings(SimpleNamespace(data_dir=cli_env))
    try:
        keys = KeyStore(db)
        assert keys.authenticate(token) == Identity("ci", Scope.WRITE, frozenset({"docs", "faq"}))
        assert keys.authenticate(root_token) == Identity("root", Scope.ADMIN, None)
    finally:
        db.dispose()

    code, out, _ = _invoke(keys_app, "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [k["name"] for k in listed] == ["ci", "root"] and listed[1]["collections"] is None
    assert token not in out and root_token not in out and "token_hash" not in out

    code, out, _ = _invoke(keys_app, "list")
    assert code == 0 and "ci" in out and token not in out

    code, out, _ = _invoke(keys_app, "revoke", "ci")
    assert code == 0 and "revoked key ci" in out
    assert [k["name"] for k in json.loads(_invoke(keys_app, "list", "--json")[1])] == ["root"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--name", "ci", "--scope", "read"], "--collections a,b or --all"),
        (["create", "--name", "ci", "--scope", "read", "--collections", "docs", "--all"], "not both"),
        (["create", "--name", "ci", "--scope", "owner", "--all"], "use one of read, write, review, admin"),
        (["create", "--name", "ci", "--scope", "read", "--collections", "x"], "invalid collection name 'x'"),
        (["revoke", "nobody"], "no API key named 'nobody' (existing keys: none yet)"),
    ],
)
def test_keys_command_errors(cli_env: Path, args: list[str], message: str) -> None:
    code, _, err = _invoke(keys_app, *args)
    assert code == 2
    assert message in " ".join(err.split())


def test_duplicate_key_from_the_command_line(cli_env: Path) -> None:
    assert _invoke(keys_app, "create", "--name", "ci", "--scope", "read", "--all")[0] == 0
    code, _, err = _invoke(keys_app, "create", "--name", "ci", "--scope", "read", "--all")
    assert code == 2 and "an API key named 'ci' already exists" in err


def test_audit_command_lists_key_changes(cli_env: Path) -> None:
    _invoke(keys_app, "create", "--name", "ci", "--scope", "read", "--all")
    _invoke(keys_app, "revoke", "ci")
    code, out, _ = _invoke(audit_app, "--json")
    assert code == 0
    events = json.loads(out)
    assert [(e["action"], e["detail"]["key"]) for e in events] == [("key.revoke", "ci"), ("key.create", "ci")]
    assert json.loads(_invoke(audit_app, "--limit", "1", "--action", "key.create", "--json")[1])[0]["action"] == (
        "key.create"
    )
    assert json.loads(_invoke(audit_app, "--since", "2999-01-01", "--json")[1]) == []
    code, out, _ = _invoke(audit_app)
    assert code == 0 and "key.revoke" in out
    code, _, err = _invoke(audit_app, "--since", "yesterday")
    assert code == 2 and "--since must be an ISO 8601 time" in err


def test_commands_mount_under_a_root_as_ragkb_does(cli_env: Path) -> None:
    """`ragkb keys create ...` and `ragkb audit --limit N` (a group invoked without a subcommand)."""
    root = typer.Typer()

    @root.command()
    def other() -> None:
        """Stands for ragkb's other commands."""

    root.add_typer(keys_app, name="keys")
    root.add_typer(audit_app, name="audit")
    assert _invoke(root, "keys", "create", "--name", "ci", "--scope", "review", "--all")[0] == 0
    code, out, _ = _invoke(root, "audit", "--limit", "5", "--json")
    assert code == 0 and json.loads(out)[0]["action"] == "key.create"
