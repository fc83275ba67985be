"""Queued ingestion jobs (only when RAGKB_QUEUE_URL names a queue)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from ..components import Components, components

router = APIRouter(prefix="/v1", tags=["collections"])


@router.get("/jobs/{job_id}", summary="State of a queued ingestion job.")
async def job(job_id: str, parts: Annotated[Components, Depends(components)]) -> dict[str, Any]:
    return await run_in_threadpool(parts.require_queue().status, job_id)
