"""Queued ingestion jobs (only when RAGKB_QUEUE_URL names a broker): their state and progress."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ingest.queue import JobNotFound

from ..auth import ReadCaller
from ..deps import Parts

router = APIRouter(prefix="/v1", tags=["collections"])


@router.get(
    "/jobs/{job_id}",
    summary="State and progress of a queued ingestion job.",
    description="`status` is queued, running, retrying (a transient error; `retry_in_seconds`), stalled (its "
    "worker died; the job is being redelivered), done (with `report`) or failed (with `error` and `attempts`). "
    "Progress: `stage`, `files_done` / `files_total`, `current_file`, `chunks_embedded`, `updated_at`.",
)
async def job(job_id: str, parts: Parts, caller: ReadCaller) -> dict[str, Any]:
    """A job of a collection the key may not see is answered as an unknown job."""
    state = await run_in_threadpool(parts.require_queue().status, job_id)
    if not caller.can_see(str(state.get("collection", ""))):
        raise JobNotFound(f"no ingestion job {job_id!r} (jobs are kept for 7 days)")
    state.pop("files", None)  # blob references are internal
    return state
