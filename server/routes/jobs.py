"""Queued ingestion jobs (only when RAGKB_QUEUE_URL names a queue)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ingest.queue import JobNotFound

from ..auth import ReadCaller

router = APIRouter(prefix="/v1", tags=["collections"])


@router.get("/jobs/{job_id}", summary="State of a queued ingestion job.")
async def job(job_id: str, caller: ReadCaller) -> dict[str, Any]:
    """A job of a collection the key may not see is answered as an unknown job."""
    state = await run_in_threadpool(caller.parts.require_queue().status, job_id)
    if not caller.can_see(str(state.get("collection", ""))):
        raise JobNotFound(f"no ingestion job {job_id!r} (jobs are kept for 7 days)")
    return state
