"""`POST /v1/query` (JSON or Server-Sent Events) and `POST /v1/retrieve` (scope `read`; the collection, named
or the default, must be one the key may see)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ingest.vectorstore import Filters

from ..auth import ReadCaller
from ..components import query_service
from ..observability import request_id_var
from ..schemas import QueryFilters, QueryRequest, QueryResponse, RetrievedChunk, RetrieveRequest, RetrieveResponse
from ..service import Done, Failure, QueryService, Token

router = APIRouter(prefix="/v1", tags=["query"])
Service = Annotated[QueryService, Depends(query_service)]


def filters_of(model: QueryFilters | None) -> Filters | None:
    if model is None:
        return None
    return Filters(document_ids=tuple(model.document_ids), source_glob=model.source_glob, where=dict(model.where))


def _sse(event: Token | Failure | Done) -> str:
    if isinstance(event, Token):
        name, data = "token", {"text": event.text}
    elif isinstance(event, Failure):
        name, data = "error", {"error": event.error, "fallback": event.fallback}
    else:
        name, data = "done", event.response.model_dump()
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


@router.post(
    "/query",
    response_model=QueryResponse,
    summary="Answer a question with validated citations.",
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true."}},
)
async def query(body: QueryRequest, service: Service, caller: ReadCaller) -> Any:
    """With `stream: true` the answer comes as Server-Sent Events: `token` events, an `error` event if the
    LLM fails mid-answer (the extractive answer follows), then one `done` event with the validated answer.
    Every request error (unknown collection, bad filter, ...) is answered with its status before the
    stream starts."""
    plan = await service.prepare(
        body.question,
        collection=caller.collection(body.collection),
        top_k=body.top_k,
        filters=filters_of(body.filters),
        retriever=body.retriever,
    )
    request_id = request_id_var.get()
    if not body.stream:
        return await service.complete(plan, request_id=request_id)

    async def events() -> AsyncIterator[str]:
        async for event in service.run(plan, request_id=request_id):
            yield _sse(event)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/retrieve", response_model=RetrieveResponse, summary="Retrieve chunks, no LLM.")
async def retrieve(body: RetrieveRequest, service: Service, caller: ReadCaller) -> RetrieveResponse:
    query = service.query(
        body.question,
        collection=caller.collection(body.collection),
        top_k=body.top_k,
        filters=filters_of(body.filters),
        retriever=body.retriever,
    )
    result = await run_in_threadpool(service.retrieve, query)
    return RetrieveResponse(
        chunks=[RetrievedChunk.of(c) for c in result.chunks],
        retriever=result.retriever,
        collection=result.collection,
        timings={"retrieve_ms": round(result.milliseconds, 3)},
        request_id=request_id_var.get(),
    )
