"""The cached answer lane: `POST /v1/query` answered before FastAPI's routing when the answer is in memory.

A repeated question on an unchanged collection is a dictionary lookup (`Answerer.ask_in_memory`), yet going
through the route cost several times the lookup: matching every route, solving six dependencies, and
validating and re-serialising the response model. This ASGI middleware sits inside the request-id and
body-size middlewares (so its replies carry the id, are logged, timed and size-limited like any other) and
outside the router. For `POST /v1/query` it reads the body and serves the request itself only when every
step is known without I/O:

    JSON body that `QueryRequest` accepts, single-shot, not streamed
      -> the caller known from memory (`known_identity`), holding `read`, and within its rate limit
      -> the collection one it may see and the question valid (`checked_query`, the route's own check)
      -> `Answerer.ask_in_memory`: the answer in memory, no review, no curated answer
      -> the same `QueryResponse` the route returns, serialised once

At the first step that is not known, the request goes on to the route unchanged (its body replayed), which
answers it, errors included, the way it always has. Headers are read as the route reads them (the first of
a repeated header). A caller this lane has already rate-limited is handed
on as admitted (`auth.ADMITTED`), so no request is counted twice. `RAGKB_FAST_LANE=false` turns it off.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.routing import iter_route_contexts
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.errors import RagkbError

from ..answering.entry import Asker
from ..metrics import FAST_LANE
from ..schemas import QueryRequest
from ..state import Identity
from ..state import Scope as KeyScope
from .auth import Caller, admit, bearer_token, known_identity, refusal, take_token
from .components import Components
from .observability import request_id_var
from .routes.query import checked_query

PATH = "/v1/query"
_SERVED = FAST_LANE.labels(result="served")
_PASSED = FAST_LANE.labels(result="passed")


class CachedAnswerLane:
    """ASGI middleware: `POST /v1/query` answered from memory when it can be, else handed to the route."""

    def __init__(self, app: ASGIApp, parts: Callable[[], Components | None]) -> None:
        self.app = app
        self.parts = parts
        self._route: BaseRoute | None = None  # the route `/v1/query` is served by, for the metrics' label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or _route_path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        parts = self.parts()
        if parts is None or not parts.settings.fast_lane:
            await self.app(scope, receive, send)
            return
        messages, body, whole = await _read_body(receive)
        if whole and await self._serve(scope, body, parts, send):
            _SERVED.inc()
            return
        _PASSED.inc()
        await self.app(scope, _replay(messages, receive), send)

    async def _serve(self, scope: Scope, body: bytes, parts: Components, send: Send) -> bool:
        """Answer the request from memory and say True, or say False having sent nothing."""
        admitted = await self._admitted(scope, body, parts)
        if admitted is None:
            return False
        request, caller = admitted
        try:
            query = checked_query(parts.answerer.query, request, caller)
            reply = parts.answerer.ask_in_memory(query, asker=Asker(caller.key_name, request_id_var.get()))
            if reply is None:
                return False
            response = await reply.response()
            payload = response.__pydantic_serializer__.to_json(response)  # `model_dump_json` as bytes
        except (RagkbError, ValueError):  # the route makes the same checks and answers with the error's status
            return False
        scope["route"] = self._route or self._find_route(scope)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(payload)).encode()), (b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        return True

    async def _admitted(self, scope: Scope, body: bytes, parts: Components) -> tuple[QueryRequest, Caller] | None:
        """A request this lane may answer (a JSON single-shot question, not streamed) and its caller,
        authenticated from memory and within its rate limit; marked admitted, so the route does not count it
        again. None when any of that is not known here: the route's own dependencies then decide, and refuse."""
        headers = Headers(scope=scope)  # what the route reads as `request.headers`: the first of a repeated one
        if not _is_json(headers.get("content-type", "")):
            return None
        try:
            request = QueryRequest.model_validate_json(body)
        except ValidationError:
            return None  # the route answers with its 422
        if request.stream or request.mode != "single":
            return None
        identity = known_identity(parts, bearer_token(headers.get("authorization")))
        if isinstance(identity, bool):  # (False) not known from memory: the route asks the database
            return None
        assert identity is None or isinstance(identity, Identity)
        if refusal(identity, KeyScope.READ) is not None:  # (every scope includes read today: defensive)
            return None
        client = scope.get("client")
        try:
            decision = await take_token(parts, identity, client[0] if client else "unknown")
        except RagkbError:  # a shared limiter that cannot be reached: the route says so
            return None
        if not decision.allowed:
            return None  # the route refuses it (429 with Retry-After); a refused request took no token
        caller = Caller(identity, parts)
        admit(scope, caller)
        return request, caller

    def _find_route(self, scope: Scope) -> BaseRoute | None:
        """The route FastAPI would have matched (included routers are nested: `iter_route_contexts`)."""
        for context in iter_route_contexts(getattr(scope.get("app"), "routes", [])):
            if str(context.path) == PATH and "POST" in (context.methods or ()):
                self._route = context.original_route
                break
        return self._route


def _route_path(scope: Scope) -> str:
    """The path without the app's mount point (`root_path`), as the router matches it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _is_json(content_type: str) -> bool:
    """`application/json` (parameters such as a charset allowed), the type the route parses as JSON."""
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


async def _read_body(receive: Receive) -> tuple[list[Message], bytes, bool]:
    """Every message up to the end of the body: the messages (to replay), the body, and whether it is whole
    (False when the client went away or a middleware outside cut it short)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, b"".join(chunks), True


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives the messages already read, in order, then the client's own."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
