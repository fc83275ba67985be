"""The MCP tools over Streamable HTTP at `/mcp` of the API (stateless: every POST is answered on its own, so
`serve --workers N` needs no sticky sessions). The request's bearer key is checked, rate-limited and held to
scope `read` exactly as on the API's routes before the MCP layer sees it; each tool then reads the same key
from the request's headers to decide which collections it may see."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi.security import HTTPAuthorizationCredentials
from mcp.server.mcpserver import Context
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from ingest.errors import RagkbError
from ingest.vectorstore import StoreUnavailable

from ..http.auth import authenticate, require
from ..http.components import Components
from ..http.errors import ERROR_STATUS, _headers_for, error_response
from ..state import Scope as KeyScope
from .tools import Access, bearer_token, build_server, identify

PATH = "/mcp"


class McpHttp:
    """An ASGI app for the `/mcp` route, and `running()` for the API's lifespan."""

    def __init__(self, parts: Callable[[], Components | None]) -> None:
        self.parts = parts
        self.app: StreamableHTTPASGIApp | None = None  # made by each `running()`: a session manager runs once

    def _build(self) -> StreamableHTTPASGIApp:
        server = build_server(self._resolve)
        # The key check below guards every request, so the SDK's DNS-rebinding check (loopback Host headers only)
        # is left off: it would refuse a server reached by its LAN name.
        server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.manager = server.session_manager
        return StreamableHTTPASGIApp(server.session_manager)

    def _components(self) -> Components:
        found = self.parts()
        if found is None:
            raise StoreUnavailable("the server is still starting; try again in a moment")
        return found

    def _resolve(self, ctx: Context) -> Access:
        parts = self._components()
        return Access(parts, identify(parts.keys, bearer_token(ctx.headers)))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        app = self._build()
        async with self.manager.run():
            self.app = app
            try:
                yield
            finally:
                self.app = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        token = bearer_token(request.headers)
        credentials = None if token is None else HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
        try:
            caller = await authenticate(request, credentials)
            await require(KeyScope.READ)(caller)
        except RagkbError as exc:
            status, code = next((ERROR_STATUS[k] for k in type(exc).__mro__ if k in ERROR_STATUS), (400, "bad_request"))
            await error_response(status, str(exc), code, headers=_headers_for(exc))(scope, receive, send)
            return
        if self.app is None:
            error = StoreUnavailable("the server is still starting; try again in a moment")
            await error_response(503, str(error), "store_unavailable")(scope, receive, send)
            return
        await self.app(scope, receive, send)
