"""API keys: scopes, creating and revoking keys, and turning a bearer token into an `Identity`.

A token is `rk_` + 32 random bytes (URL-safe base64), shown once when the key is created. Only its
SHA-256 is stored. A slow password hash (bcrypt, argon2) exists to make guessing *low-entropy*
secrets expensive; a 256-bit random token cannot be guessed either way, so a fast hash loses
nothing and keeps verification in microseconds, and it lets the lookup be one indexed equality
query (no per-key salt to try).

`authenticate` keeps identities it found in memory for `cache_ttl` seconds (default 5). Revoking a
key through this `KeyStore` takes effect at once (but for a lookup already in flight, which may
cache the old answer for up to `cache_ttl`); revoked anywhere else (the CLI, another server worker)
it takes effect within `cache_ttl`. `any_keys()` is cached for the same time, so the first key
created with the CLI closes a running server within `cache_ttl` too.
"""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from ingest.errors import RagkbError
from ingest.recent import REFRESHER
from ingest.vectorstore import validate_collection_name

from .db import StateDB
from .models import NAME_LENGTH, ApiKey

TOKEN_PREFIX = "rk_"
HINT_CHARS = len(TOKEN_PREFIX) + 4
_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._@-]{{0,{NAME_LENGTH - 1}}}$")
_MAX_TOKEN_CHARS = 128


class Scope(StrEnum):
    """What a key may do. `implies` is the whole permission model: a route asks for the least scope
    it needs and every scope that implies it passes."""

    READ = "read"  # query, retrieve, list collections and documents
    WRITE = "write"  # read + upload and delete documents
    REVIEW = "review"  # read + the review queue
    ADMIN = "admin"  # everything: keys, cache clear, reviews, audit

    @classmethod
    def parse(cls, value: str | Scope) -> Scope:
        try:
            return cls(value)
        except ValueError:
            raise InvalidScope(f"unknown scope {value!r}: use one of {', '.join(s.value for s in cls)}") from None

    def implies(self, other: Scope) -> bool:
        return other in _IMPLIED[self]


# The explicit relation (each scope and the scopes it directly contains); `_IMPLIED` is its closure.
DIRECTLY_IMPLIES: dict[Scope, frozenset[Scope]] = {
    Scope.READ: frozenset(),
    Scope.WRITE: frozenset({Scope.READ}),
    Scope.REVIEW: frozenset({Scope.READ}),
    Scope.ADMIN: frozenset({Scope.WRITE, Scope.REVIEW}),
}


def _closure(scope: Scope) -> frozenset[Scope]:
    found = {scope}
    for inner in DIRECTLY_IMPLIES[scope]:
        found |= _closure(inner)
    return frozenset(found)


_IMPLIED: dict[Scope, frozenset[Scope]] = {scope: _closure(scope) for scope in Scope}


class KeyStoreError(RagkbError):
    """Base of the API-key errors."""


class InvalidScope(KeyStoreError):
    pass


class InvalidKey(KeyStoreError):
    """A key's name or collections are not acceptable; the message says what is."""


class DuplicateKeyName(KeyStoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"an API key named {name!r} already exists: revoke it first or choose another name")
        self.name = name


class UnknownKey(KeyStoreError):
    def __init__(self, name: str, existing: Iterable[str]) -> None:
        names = ", ".join(sorted(existing)) or "none yet"
        super().__init__(f"no API key named {name!r} (existing keys: {names})")
        self.name = name


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: the key's name (for audit and rate limits), its scope and its collections
    (None = every collection)."""

    name: str
    scope: Scope
    collections: frozenset[str] | None

    def allows(self, scope: Scope) -> bool:
        return self.scope.implies(scope)

    def can_see(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def visible(self, collections: Iterable[str]) -> builtins.list[str]:
        """The given collections this key may see, in their order (for listing endpoints)."""
        return [name for name in collections if self.can_see(name)]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as `list()` shows it: never its token or hash."""

    name: str
    scope: Scope
    collections: tuple[str, ...] | None
    hint: str
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scope": self.scope.value,
            "collections": None if self.collections is None else list(self.collections),
            "hint": self.hint,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def of(cls, row: ApiKey) -> KeyRecord:
        collections = None if row.collections is None else tuple(row.collections)
        return cls(row.name, Scope(row.scope), collections, row.hint, row.created_at)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class KeyStore:
    """API keys in the state database, with a short in-process cache in front of `authenticate`."""

    def __init__(
        self,
        db: StateDB,
        *,
        cache_ttl: float = 5.0,
        cache_size: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.cache_ttl = cache_ttl
        self._cache_size = cache_size
        self._clock = clock
        self._lock = threading.Lock()
        self._identities: OrderedDict[str, tuple[Identity, float]] = OrderedDict()
        self._any_keys: tuple[bool, float] | None = None

    def create(self, name: str, scope: Scope | str, collections: Iterable[str] | None) -> tuple[KeyRecord, str]:
        """A new key and its token (the only time the token exists outside the caller's hands).
        `collections=None` means every collection, present and future."""
        name = _valid_name(name)
        scope = Scope.parse(scope)
        allowed = _valid_collections(collections)
        if scope is Scope.ADMIN and allowed is not None:
            # an admin manages keys and reads the whole audit trail: limiting it to collections would be a
            # promise the scope cannot keep (it could make itself an unlimited key)
            raise InvalidKey("an admin key covers every collection: give --all, or use write or read")
        token = new_token()
        row = ApiKey(
            name=name, scope=scope.value, collections=allowed, token_hash=hash_token(token), hint=token[:HINT_CHARS]
        )
        try:
            with self.db.session() as session:
                session.add(row)
        except sa.exc.IntegrityError:
            raise DuplicateKeyName(name) from None
        with self._lock:
            self._any_keys = None  # the identity cache holds only keys that exist, so nothing in it is stale
        return KeyRecord.of(row), token

    def list(self) -> builtins.list[KeyRecord]:
        """Every key, by name; never a token or a hash."""
        with self.db.session() as session:
            rows = session.scalars(sa.select(ApiKey).order_by(ApiKey.name)).all()
            return [KeyRecord.of(row) for row in rows]

    def revoke(self, name: str) -> KeyRecord:
        """Delete the key named `name`; its token stops working (see the module docstring for when)."""
        with self.db.session() as session:
            row = session.scalars(sa.select(ApiKey).where(ApiKey.name == name)).one_or_none()
            if row is None:
                raise UnknownKey(name, session.scalars(sa.select(ApiKey.name)).all())
            record = KeyRecord.of(row)
            session.delete(row)
        self._forget(name)
        return record

    def authenticate(self, token: str) -> Identity | None:
        """The identity of a bearer token, or None for a token that is malformed, unknown or revoked."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_CHARS:
            return None
        digest = hash_token(token)
        now = self._clock()
        with self._lock:
            cached = self._identities.get(digest)
            if cached is not None and cached[1] > now:
                self._identities.move_to_end(digest)
                return cached[0]
        identity = self._read_identity(digest)
        if identity is None:
            return None  # unknown tokens are not cached: a flood of them must not evict real keys
        self._keep_identity(digest, identity, now)
        return identity

    def _read_identity(self, digest: str) -> Identity | None:
        query = sa.select(ApiKey.name, ApiKey.scope, ApiKey.collections).where(ApiKey.token_hash == digest)
        with self.db.connect() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            return None
        collections = None if row.collections is None else frozenset(row.collections)
        return Identity(row.name, Scope(row.scope), collections)

    def _keep_identity(self, digest: str, identity: Identity, now: float) -> None:
        with self._lock:
            self._keep_locked(digest, identity, now)

    def _keep_locked(self, digest: str, identity: Identity, now: float) -> None:
        self._identities[digest] = (identity, now + self.cache_ttl)
        self._identities.move_to_end(digest)
        while len(self._identities) > self._cache_size:
            self._identities.popitem(last=False)

    def cached_identity(self, token: str) -> Identity | None:
        """The identity `authenticate` would return, if it is in memory (None: ask `authenticate`)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_CHARS:
            return None
        digest = hash_token(token)
        with self._lock:
            cached = self._identities.get(digest)
        if cached is None:
            return None
        now = self._clock()
        if now >= cached[1]:
            return None
        if now >= cached[1] - self.cache_ttl / 2:  # read it again before it lapses (ingest/recent.py)
            REFRESHER.submit((id(self), digest), lambda: self._reread_identity(digest, cached))
        return cached[0]

    def _reread_identity(self, digest: str, kept: tuple[Identity, float]) -> None:
        """The refresher's re-read of a kept identity: renewed, changed, or dropped when the key is gone
        (revoked in another process); a revocation or clear in this process meanwhile stands."""
        started = self._clock()
        identity = self._read_identity(digest)
        with self._lock:
            if self._identities.get(digest) is not kept:
                return
            if identity is None:
                del self._identities[digest]
            else:
                self._keep_locked(digest, identity, started)

    def cached_any_keys(self) -> bool | None:
        """`any_keys()` if it is in memory, else None."""
        cached = self._any_keys
        if cached is None:
            return None
        now = self._clock()
        if now >= cached[1]:
            return None
        if now >= cached[1] - self.cache_ttl / 2:
            REFRESHER.submit((id(self), "any keys"), lambda: self._reread_any_keys(cached))
        return cached[0]

    def _reread_any_keys(self, kept: tuple[bool, float]) -> None:
        started = self._clock()
        with self.db.connect() as conn:
            found = conn.execute(sa.select(ApiKey.id).limit(1)).first() is not None
        with self._lock:
            if self._any_keys is kept:  # a key made or revoked here meanwhile set it aside: that stands
                self._any_keys = (found, started + self.cache_ttl)

    def any_keys(self) -> bool:
        """Whether any key exists (the server is open while none does): one primary-key probe
        (`SELECT id ... LIMIT 1`) at most every `cache_ttl` seconds."""
        now = self._clock()
        cached = self._any_keys
        if cached is not None and cached[1] > now:
            return cached[0]
        with self.db.connect() as conn:
            found = conn.execute(sa.select(ApiKey.id).limit(1)).first() is not None
        self._any_keys = (found, now + self.cache_ttl)
        return found

    def clear_cache(self) -> None:
        self._forget()

    def _forget(self, name: str | None = None) -> None:
        """Drop cached answers this process knows to be stale (all of them, or one key's)."""
        with self._lock:
            self._any_keys = None
            if name is None:
                self._identities.clear()
                return
            for digest in [d for d, (identity, _) in self._identities.items() if identity.name == name]:
                del self._identities[digest]


def _valid_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidKey(
            f"invalid key name {name!r}: use 1-{NAME_LENGTH} letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def _valid_collections(collections: Iterable[str] | None) -> builtins.list[str] | None:
    if collections is None:
        return None
    if isinstance(collections, str):
        raise InvalidKey("collections must be a list of names, not one string")
    names = sorted({validate_collection_name(name.strip()) for name in collections})
    if not names:
        raise InvalidKey("a key limited to collections needs at least one (or None for every collection)")
    return names
