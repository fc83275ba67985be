"""Liveness and readiness (always open), Prometheus metrics and the API docs (admin only with
RAGKB_PROTECT_OPS)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ...metrics import metrics_payload
from ..auth import ops_access

router = APIRouter(tags=["ops"])
OPS = [Depends(ops_access)]


@router.get("/healthz", summary="Liveness: the process is up.")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: model loaded and store reachable; a broken cache is reported.")
async def readyz(request: Request) -> JSONResponse:
    parts = getattr(request.app.state, "components", None)
    checks: dict[str, str] = {"model": "ok" if parts is not None else "loading"}
    if parts is not None:
        try:
            await run_in_threadpool(parts.service.reader.store.heartbeat)
            checks["store"] = "ok"
        except Exception as exc:  # the reason goes to the log; clients see no address or path
            logging.getLogger("ragkb.api").warning("readiness: the store is unreachable: %s", exc)
            checks["store"] = "unreachable"
        cache = await run_in_threadpool(parts.service.cache.health)
        if cache != "ok":
            checks["cache"] = cache
    ready = checks["model"] == "ok" and checks.get("store") == "ok"
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics.", response_class=Response, dependencies=OPS)
async def metrics() -> Response:
    body, content_type = metrics_payload()
    return Response(body, media_type=content_type)


# The schema and docs pages are FastAPI's own, served here so RAGKB_PROTECT_OPS can guard them.
@router.get("/openapi.json", include_in_schema=False, dependencies=OPS)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False, dependencies=OPS)
async def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - API docs")


@router.get("/redoc", include_in_schema=False, dependencies=OPS)
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title} - API docs")
