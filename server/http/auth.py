"""Who is calling, and what they may do: bearer-token authentication, scopes, collections, rate limits.

Routes declare what they need with `Depends`, so the OpenAPI schema shows the bearer scheme:

    caller: Annotated[Caller, Depends(require(Scope.READ))]               # a scope
    name: Annotated[str, Depends(collection_in_path(Scope.WRITE))]         # a scope and the {name} collection

While no API key exists the server is open (the loopback demo) and every caller may do everything,
rate-limited as one anonymous bucket per client host; once one key exists every request but
`/healthz` and `/readyz` needs one. `/metrics`, `/docs` and `/openapi.json` need an admin key only
with `RAGKB_PROTECT_OPS`. A key limited to collections sees the others as missing (404, the same
answer as for a collection that does not exist), so it cannot probe for names.
"""

# no `from __future__ import annotations`: FastAPI must see the closures' `Depends(...)` annotations as objects

import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool

from ingest.errors import CollectionNotFound, RagkbError
from ingest.vectorstore import validate_collection_name

from ..state import Decision, Identity, Scope
from .components import Components
from .deps import components

# Set by `ragkb serve` when it listens beyond loopback without --insecure: then a server whose keys have
# all been revoked refuses everyone rather than falling back to the open demo mode.
REQUIRE_KEYS_ENV = "RAGKB_SERVE_REQUIRE_KEYS"
# The key in an ASGI scope's state under which the cached answer lane leaves a caller it authenticated and
# rate-limited, with the path it did so for, when it hands the request on to the route (server-side only: a
# client cannot set it; each request has its own scope state).
ADMITTED = "ragkb_admitted_caller"

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key from `ragkb keys create` or `POST /v1/keys`: `Authorization: Bearer rk_...`.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class Unauthorized(RagkbError):
    """No key, or a key that is malformed, unknown or revoked (401 with `WWW-Authenticate: Bearer`)."""


class Forbidden(RagkbError):
    """A valid key whose scope does not allow the request (403)."""


class RateLimited(RagkbError):
    """The caller's token bucket is empty (429 with `Retry-After`)."""

    def __init__(self, who: str, retry_after: str) -> None:
        super().__init__(f"rate limit exceeded for {who}; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of one request: a key's identity, or None while the server is open."""

    identity: Identity | None
    parts: Components

    @property
    def key_name(self) -> str | None:
        """For the audit trail: the key's name, None in open mode."""
        return None if self.identity is None else self.identity.name

    def can_see(self, collection: str) -> bool:
        return self.identity is None or self.identity.can_see(collection)

    def visible(self, collections: list[str]) -> list[str]:
        return collections if self.identity is None else self.identity.visible(collections)

    def collection(self, name: str | None) -> str:
        """The collection a request names (the default when None), checked against the key: one the key may
        not see raises exactly what a missing collection raises. The one place this check is made."""
        name = name or self.parts.settings.default_collection
        validate_collection_name(name)  # a bad name is 422 whether or not the collection is visible
        if not self.can_see(name):
            raise CollectionNotFound(name, [])  # the error handler lists what this caller may see
        return name

    def available(self) -> list[str]:
        """The collections this caller may see (for the "available" list of a 404)."""
        return self.visible(self.parts.service.reader.store.collection_names())


def _require_keys() -> bool:
    return os.environ.get(REQUIRE_KEYS_ENV, "") == "1"


def _client_host(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _identify(parts: Components, credentials: HTTPAuthorizationCredentials | None) -> Identity | None:
    """The key's identity; None in open mode; `Unauthorized` when a key is needed and not valid. Blocking
    (one indexed lookup, cached for a few seconds): called in a thread."""
    if not parts.keys.any_keys():
        if _require_keys():
            raise Unauthorized(
                "this server listens beyond loopback and needs an API key, but none exists: "
                "create one with `ragkb keys create`"
            )
        return None
    if credentials is None or not credentials.credentials:
        raise Unauthorized("an API key is required: send `Authorization: Bearer <token>`")
    identity = parts.keys.authenticate(credentials.credentials)
    if identity is None:
        raise Unauthorized("the API key is not valid (unknown, malformed or revoked)")
    return identity


def known_identity(parts: Components, token: str | None) -> Identity | bool | None:
    """Who a bearer token (None: no key sent) belongs to, from memory alone: the identity (None in open
    mode), or False when the database must be asked (`_identify`). A repeated caller is authenticated
    without leaving the event loop."""
    any_keys = parts.keys.cached_any_keys()
    if any_keys is None:
        return False
    if not any_keys:
        return False if _require_keys() else None  # (the refusal's message is `_identify`'s)
    if not token:
        return False
    return parts.keys.cached_identity(token) or False


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, parsed as `HTTPBearer` parses it."""
    scheme, token = get_authorization_scheme_param(authorization)
    return token if authorization and scheme.lower() == "bearer" and token else None


def refusal(identity: Identity | None, scope: Scope) -> Forbidden | None:
    """Why a caller may not use `scope` (None: it may). The one place scopes are checked."""
    if identity is not None and not identity.allows(scope):
        return Forbidden(
            f"the key {identity.name!r} has scope {identity.scope.value!r}; "
            f"this needs {scope.value!r} (or a scope that includes it)"
        )
    if scope is Scope.ADMIN and identity is not None and identity.collections is not None:
        # keys, the audit trail and the cache span every collection: a limited key may not manage them
        return Forbidden(f"the key {identity.name!r} is limited to collections; administration needs --all")
    return None


async def take_token(parts: Components, identity: Identity | None, client_host: str) -> Decision:
    """One request against the caller's rate limit: the key's bucket, or one anonymous bucket per client host
    in open mode (a shared limiter is asked from a thread)."""
    limiter = parts.limiter
    bucket = identity.name if identity is not None else f"anonymous@{client_host}"
    return await run_in_threadpool(limiter.allow, bucket) if limiter.blocking else limiter.allow(bucket)


def admitted(scope: MutableMapping[str, Any]) -> Caller | None:
    """The caller the cached answer lane already authenticated and rate-limited for this request, if any."""
    found = scope.get("state", {}).get(ADMITTED)
    return found[1] if found is not None and found[0] == scope["path"] else None


def admit(scope: MutableMapping[str, Any], caller: Caller) -> None:
    """Mark the request as authenticated and counted, for the route it is handed on to."""
    scope.setdefault("state", {})[ADMITTED] = (scope["path"], caller)


async def authenticate(request: Request, credentials: Credentials) -> Caller:
    """Authenticate and rate-limit the request (no scope check): the base of `require`. A request the cached
    answer lane (`fastlane.py`) has already admitted is not counted a second time."""
    caller = admitted(request.scope)
    if caller is not None:
        request.state.caller = caller
        return caller
    parts = components(request)
    known = known_identity(parts, credentials.credentials if credentials is not None else None)
    identity = await run_in_threadpool(_identify, parts, credentials) if known is False else known
    assert identity is None or isinstance(identity, Identity)
    decision = await take_token(parts, identity, _client_host(request))
    if not decision.allowed:
        raise RateLimited("this key" if identity is not None else "anonymous clients", decision.retry_after_header)
    caller = Caller(identity, parts)
    request.state.caller = caller
    return caller


def require(scope: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, who must hold `scope` (or a scope that implies it)."""

    async def dependency(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
        refused = refusal(caller.identity, scope)
        if refused is not None:
            raise refused
        return caller

    dependency.__name__ = f"require_{scope.value}"
    return dependency


def collection_in_path(scope: Scope) -> Callable[..., Awaitable[str]]:
    """A dependency for routes under `/collections/{name}`: the caller must hold `scope` and see `name`."""

    async def dependency(name: str, caller: Annotated[Caller, Depends(require(scope))]) -> str:
        return caller.collection(name)

    dependency.__name__ = f"collection_{scope.value}"
    return dependency


async def ops_access(request: Request, credentials: Credentials) -> None:
    """`/metrics`, `/docs`, `/openapi.json`: open, or admin only with RAGKB_PROTECT_OPS."""
    parts: Components | None = getattr(request.app.state, "components", None)
    if parts is None or not parts.settings.protect_ops:
        return
    caller = await authenticate(request, credentials)
    await require(Scope.ADMIN)(caller)


ReadCaller = Annotated[Caller, Depends(require(Scope.READ))]
WriteCaller = Annotated[Caller, Depends(require(Scope.WRITE))]
ReviewCaller = Annotated[Caller, Depends(require(Scope.REVIEW))]
AdminCaller = Annotated[Caller, Depends(require(Scope.ADMIN))]
