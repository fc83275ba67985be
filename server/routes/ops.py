"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..metrics import metrics_payload

router = APIRouter(tags=["ops"])


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
        except Exception as exc:
            checks["store"] = f"unreachable: {exc}"
        cache = await run_in_threadpool(parts.service.cache.health)
        if cache != "ok":
            checks["cache"] = cache
    ready = checks["model"] == "ok" and checks.get("store") == "ok"
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics.", response_class=Response)
async def metrics() -> Response:
    body, content_type = metrics_payload()
    return Response(body, media_type=content_type)
