"""Reindex (scope `admin`, audited): rebuild a collection from its kept originals with new settings, in the
background, then switch to the new version at once (`ingest/reindex.py`). Queries keep being answered from the
current version meanwhile."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ingest.errors import RagkbError
from ingest.reindex import Reindexer, ReindexError, reindex_in_thread, reindex_settings

from ...schemas import ErrorResponse
from ...state import Scope
from ..auth import AdminCaller, Caller, collection_in_path
from ..errors import error_response
from ..observability import request_id_var

router = APIRouter(prefix="/v1", tags=["admin"])
Administered = Annotated[str, Depends(collection_in_path(Scope.ADMIN))]

# This process's reindexes by collection: the latest one of each (running or ended).
_RUNS: dict[str, tuple[Reindexer, threading.Thread]] = {}
_RUNS_LOCK = threading.Lock()


class ReindexIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, max_length=300, description="Embedding model to rebuild with (default: the server's)."
    )
    chunk_tokens: int | None = Field(None, ge=16, le=8192, description="Chunk size in embedder tokens.")
    chunk_overlap: int | None = Field(None, ge=0, le=8192, description="Tokens shared by neighbouring chunks.")


class ReindexState(BaseModel):
    collection: str
    settings: dict[str, Any]
    status: str = Field(description="running, done or failed.")
    stage: str
    documents_total: int
    documents_done: int
    chunks_embedded: int
    started_at: float
    updated_at: float
    finished_at: float | None
    switched_at: float | None = Field(description="When queries moved to the new version.")
    eta_seconds: float | None
    error: str | None
    chunks_before: int
    chunks_after: int


def _running(name: str) -> bool:
    found = _RUNS.get(name)
    return found is not None and found[1].is_alive()


def _audit(caller: Caller, collection: str, detail: dict[str, Any]) -> None:
    caller.parts.audit.record(
        "collection.reindex", caller.key_name, collection=collection, request_id=request_id_var.get(), detail=detail
    )


@router.post(
    "/collections/{name}/reindex",
    response_model=ReindexState,
    status_code=202,
    summary="Rebuild a collection from its originals with new settings (background); switch when done.",
    responses={
        409: {"model": ErrorResponse, "description": "A reindex of this collection is already running."},
        422: {"model": ErrorResponse, "description": "Invalid settings, or documents without a kept original."},
    },
)
async def start_reindex(name: Administered, body: ReindexIn, caller: AdminCaller) -> JSONResponse:
    parts = caller.parts
    try:
        settings = reindex_settings(
            parts.settings, model=body.model, chunk_tokens=body.chunk_tokens, chunk_overlap=body.chunk_overlap
        )
    except ReindexError as exc:
        return error_response(422, str(exc), "invalid_reindex")
    await run_in_threadpool(parts.service.reader.collection, name)  # 404 for an unknown collection
    if _running(name):
        return error_response(409, f"a reindex of collection {name!r} is already running", "reindex_running")
    same_model = settings.embed_model == parts.settings.embed_model
    try:  # a new model loads here, in a thread
        reindexer = await run_in_threadpool(
            lambda: Reindexer(
                settings, name, store=parts.ingestor.store, embedder=parts.ingestor.embedder if same_model else None
            )
        )
    except RagkbError as exc:
        return error_response(422, str(exc), "invalid_reindex")
    with _RUNS_LOCK:
        if _running(name):
            return error_response(409, f"a reindex of collection {name!r} is already running", "reindex_running")
        _RUNS[name] = (reindexer, reindex_in_thread(reindexer))
    await run_in_threadpool(_audit, caller, name, reindexer.progress.settings)
    return JSONResponse(ReindexState(**reindexer.progress.as_dict()).model_dump(), status_code=202)


@router.get(
    "/collections/{name}/reindex",
    response_model=ReindexState,
    summary="Progress of the collection's latest reindex on this server (stage, documents, chunks, ETA).",
    responses={404: {"model": ErrorResponse, "description": "No reindex of this collection on this server."}},
)
def reindex_state(name: Administered, caller: AdminCaller) -> Any:
    found = _RUNS.get(name)
    if found is None:
        return error_response(404, f"no reindex of collection {name!r} has run on this server", "reindex_not_found")
    return ReindexState(**found[0].progress.as_dict())
