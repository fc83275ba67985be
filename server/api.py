"""The HTTP API (FastAPI). `create_app()` builds it; `ragkb serve` runs it under uvicorn.

Routes live in `server/routes/` (one router per resource) and receive what they
need through `Depends` (`server/components.py`); errors map to statuses in
`server/http_errors.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from ingest.config import Settings, get_settings

from .components import Components
from .http_errors import ERROR_RESPONSES, install_error_handlers
from .observability import BodySizeLimit, RequestContextMiddleware
from .routes import collections, jobs, ops, query
from .service import QueryService


def create_app(settings: Settings | None = None, service: QueryService | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.components = await run_in_threadpool(Components.build, settings, service)
        try:
            yield
        finally:
            app.state.components.close()
            await app.state.components.service.aclose()

    app = FastAPI(
        title="ragkb",
        version="0.1.0",
        summary="Answers questions from your own documents, with validated citations.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.components = None
    app.add_middleware(
        BodySizeLimit, max_upload_bytes=settings.max_upload_bytes, max_json_bytes=settings.max_json_bytes
    )
    app.add_middleware(RequestContextMiddleware)  # added last, so it runs first: every reply gets an id
    install_error_handlers(app)
    for module in (ops, query, collections, jobs):
        app.include_router(module.router)
    return app
