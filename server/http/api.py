"""The HTTP API (FastAPI). `create_app()` builds it; `ragkb serve` runs it under uvicorn.

Routes live in `server/routes/` (one router per resource) and receive what they
need through `Depends` (`server/components.py`), including who is calling and
what they may do (`server/auth.py`); errors map to statuses in
`server/http_errors.py`. CORS is off unless RAGKB_CORS_ORIGINS names origins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from ingest.config import Settings, get_settings

from ..answering.service import QueryService
from ..mcp.http import PATH as MCP_PATH
from ..mcp.http import McpHttp
from ..web import router as web_router
from .components import Components
from .errors import ERROR_RESPONSES, install_error_handlers
from .fastlane import CachedAnswerLane
from .heap import freeze_start_up_heap, thaw_heap
from .observability import BodySizeLimit, RequestContextMiddleware
from .routes import admin, answers, collections, conversations, jobs, openai, ops, query, reindex, reviews


def create_app(
    settings: Settings | None = None, service: QueryService | None = None, *, freeze_heap: bool = False
) -> FastAPI:
    """The app. `freeze_heap`: a server process's own app (`server/http/app.py`) moves its start-up heap out of
    the garbage collector's reach once started, and back at shutdown (heap.py); an app embedded in another
    process (tests, tools) leaves that process's collector alone."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.components = await run_in_threadpool(Components.build, settings, service)
        if freeze_heap:  # no half-second collection stalls a request (heap.py)
            await run_in_threadpool(freeze_start_up_heap)
        try:
            async with mcp.running():  # the MCP door's session manager (server/mcp/http.py)
                yield
        finally:
            if freeze_heap:
                thaw_heap()
            app.state.components.close()
            await app.state.components.service.aclose()

    app = FastAPI(
        title="ragkb",
        version="0.1.0",
        summary="Answers questions from your own documents, with validated citations.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        docs_url=None,  # served by routes/ops.py, so RAGKB_PROTECT_OPS can restrict them
        redoc_url=None,
        openapi_url=None,
    )
    app.state.components = None
    mcp = McpHttp(lambda: app.state.components)
    # innermost of ours: inside the body limit and the request id, before FastAPI's routing (fastlane.py)
    app.add_middleware(CachedAnswerLane, parts=lambda: app.state.components)
    app.add_middleware(
        BodySizeLimit, max_upload_bytes=settings.max_upload_bytes, max_json_bytes=settings.max_json_bytes
    )
    app.add_middleware(RequestContextMiddleware)  # added after the limit, so it runs first: every reply gets an id
    if settings.cors_origins:  # outermost: errors from the middlewares above carry the CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "WWW-Authenticate"],
        )
    install_error_handlers(app)
    for module in (ops, query, answers, reviews, collections, jobs, admin, reindex, openai, conversations):
        app.include_router(module.router)
    app.add_route(MCP_PATH, mcp, include_in_schema=False)  # type: ignore[arg-type]  # an ASGI app
    app.include_router(web_router)  # the web page for people (server/web/, docs/web.md)
    return app
