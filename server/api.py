"""The HTTP API (FastAPI). `create_app()` builds it; `ragkb serve` runs it under uvicorn."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from ingest.config import Settings, get_settings
from ingest.errors import (
    CollectionNotFound,
    DocumentNotFound,
    EmbeddingModelError,
    InvalidCollectionName,
    RagkbError,
)
from ingest.loaders import supported_extensions
from ingest.queue import JobNotFound, JobQueue, QueueUnavailable
from ingest.store import StoreUnavailable

from .metrics import ERRORS
from .observability import RequestContextMiddleware, UploadSizeLimit, request_id_var
from .retrieval import Filters, UnknownRetriever
from .schemas import (
    CollectionInfo,
    DocumentOut,
    ErrorResponse,
    QueryFilters,
    QueryRequest,
    QueryResponse,
    RetrievedChunk,
    RetrieveRequest,
    RetrieveResponse,
    UploadResult,
)
from .service import QueryService, QuestionError

log = logging.getLogger("ragkb.api")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown collection or document."},
    422: {"model": ErrorResponse, "description": "Invalid request (empty or oversized question, bad field)."},
    503: {"model": ErrorResponse, "description": "The vector store is unreachable."},
}


# Our errors and the HTTP status that says what happened. Starlette picks the handler of the nearest
# class in an exception's MRO, so RagkbError answers (400) only for errors not listed more precisely.
ERROR_STATUS: dict[type[Exception], tuple[int, str]] = {
    CollectionNotFound: (404, "collection_not_found"),
    DocumentNotFound: (404, "document_not_found"),
    JobNotFound: (404, "job_not_found"),
    EmbeddingModelError: (409, "model_mismatch"),
    QuestionError: (422, "bad_question"),
    UnknownRetriever: (422, "unknown_retriever"),
    InvalidCollectionName: (422, "invalid_collection_name"),
    StoreUnavailable: (503, "store_unavailable"),
    QueueUnavailable: (503, "queue_unavailable"),
    RagkbError: (400, "bad_request"),
}


def _filters(model: QueryFilters | None) -> Filters | None:
    if model is None:
        return None
    return Filters(document_ids=model.document_ids, source_glob=model.source_glob, where=dict(model.where))


def _error(status: int, message: str, kind: str, detail: Any = None) -> JSONResponse:
    ERRORS.labels(kind=kind).inc()
    body = ErrorResponse(error=message, detail=detail, request_id=request_id_var.get())
    return JSONResponse(body.model_dump(), status_code=status)


def _is_connection_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConnectionError | httpx.TransportError | StoreUnavailable):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def create_app(settings: Settings | None = None, service: QueryService | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "service", None) is None:
            app.state.service = await run_in_threadpool(QueryService, settings)
        yield
        await app.state.service.aclose()

    app = FastAPI(
        title="ragkb",
        version="0.1.0",
        summary="Answers questions from your own documents, with validated citations.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.service = service
    app.add_middleware(UploadSizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestContextMiddleware)  # added last, so it runs first: every reply gets an id

    def svc(request: Request) -> QueryService:
        return request.app.state.service  # type: ignore[no-any-return]

    # -- errors ----------------------------------------------------------------------

    def reply_with(status: int, kind: str) -> Any:
        async def handler(_: Request, exc: Exception) -> JSONResponse:
            return _error(status, str(exc), kind)

        return handler

    for error_type, (status, kind) in ERROR_STATUS.items():
        app.add_exception_handler(error_type, reply_with(status, kind))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e.get("loc", [])), "msg": e.get("msg")} for e in exc.errors()]
        first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "request"
        return _error(422, f"invalid request: {where}: {first['msg']}", "validation", detail)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        if _is_connection_error(exc):
            return _error(503, f"the vector store is unreachable: {exc}", "store_unavailable")
        log.exception("unhandled error")
        return _error(500, "internal error; see the server log for this request id", "internal")

    # -- routes ----------------------------------------------------------------------

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process is up.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: model loaded and store reachable.")
    async def readyz(request: Request) -> JSONResponse:
        service = svc(request)
        checks: dict[str, str] = {"model": "ok" if service is not None else "loading"}
        try:
            if service is not None:
                await run_in_threadpool(service.ingestor.store.client.heartbeat)
                checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"unreachable: {exc}"
        ready = all(v == "ok" for v in checks.values()) and "store" in checks
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics.", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/query",
        response_model=QueryResponse,
        tags=["query"],
        summary="Answer a question with validated citations.",
        responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true."}},
    )
    async def query(body: QueryRequest, request: Request) -> Any:
        service = svc(request)
        options: dict[str, Any] = {
            "collection": body.collection,
            "top_k": body.top_k,
            "filters": _filters(body.filters),
            "retriever": body.retriever,
            "request_id": request_id_var.get(),
        }
        if not body.stream:
            return await service.answer(body.question, **options)
        service.check_question(body.question)
        # fail fast (404 etc.) before the stream starts, when a status code can still say so
        await run_in_threadpool(
            service.ingestor.open_collection, body.collection or settings.default_collection, create=False
        )

        async def events() -> AsyncIterator[str]:
            async for event, data in service.stream(body.question, **options):
                yield f"event: {event}\ndata: {json.dumps(data)}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/retrieve", response_model=RetrieveResponse, tags=["query"], summary="Retrieve chunks, no LLM.")
    def retrieve(body: RetrieveRequest, request: Request) -> RetrieveResponse:
        service = svc(request)
        result = service.retrieve(
            body.question,
            collection=body.collection,
            top_k=body.top_k,
            filters=_filters(body.filters),
            retriever=body.retriever,
        )
        chunks = [
            RetrievedChunk(
                chunk_id=c.chunk_id,
                document_id=c.document_id,
                source=str(c.metadata.get("source", "")),
                title=str(c.metadata.get("title", "")),
                page=c.metadata.get("page"),
                heading=c.metadata.get("heading"),
                start=int(c.metadata.get("start", 0)),
                end=int(c.metadata.get("end", 0)),
                score=round(c.score, 6),
                text=c.text,
            )
            for c in result.chunks
        ]
        return RetrieveResponse(
            chunks=chunks,
            retriever=result.retriever,
            collection=result.collection,
            timings={"retrieve_ms": round(result.milliseconds, 3)},
            request_id=request_id_var.get(),
        )

    @app.get("/v1/collections", response_model=list[CollectionInfo], tags=["collections"])
    def collections(request: Request) -> list[CollectionInfo]:
        store = svc(request).ingestor.store
        result = []
        for name, count, meta in store.collections():
            documents = len(store.documents(store.client.get_collection(name, embedding_function=None)))
            result.append(
                CollectionInfo(name=name, chunks=count, documents=documents, model=meta.get("ragkb_embed_model"))
            )
        return result

    @app.get("/v1/collections/{name}/documents", response_model=list[DocumentOut], tags=["collections"])
    def documents(name: str, request: Request) -> list[DocumentOut]:
        ingestor = svc(request).ingestor
        collection = ingestor.open_collection(name, create=False)
        return [
            DocumentOut(
                document_id=d.document_id,
                source=d.source,
                title=d.title,
                kind=d.kind,
                chunk_count=d.chunk_count,
                version=d.version,
            )
            for d in ingestor.store.documents(collection)
        ]

    @app.delete("/v1/collections/{name}/documents/{document_id}", tags=["collections"])
    def delete_document(name: str, document_id: str, request: Request) -> dict[str, Any]:
        info, removed = svc(request).ingestor.delete(name, document_id)
        return {"document_id": info.document_id, "source": info.source, "chunks_deleted": removed}

    @app.post(
        "/v1/collections/{name}/documents",
        response_model=UploadResult,
        tags=["collections"],
        summary="Upload and ingest documents (multipart, field name `files`).",
        description="Ingested at once (200), or queued for `ragkb worker` when RAGKB_QUEUE_URL is set (202).",
        responses={
            202: {"description": "Queued: one job per file, with its status URL."},
            413: {"model": ErrorResponse, "description": "A file is over the upload limit."},
            415: {"model": ErrorResponse, "description": "A file type is not supported."},
        },
    )
    async def upload(
        name: str, request: Request, files: Annotated[list[UploadFile], File(description="Documents to ingest.")]
    ) -> Any:
        ingestor = svc(request).ingestor
        limit = min(settings.max_upload_bytes, settings.max_file_bytes)
        names = [Path(f.filename or "upload").name for f in files]
        unsupported = [n for n in names if Path(n).suffix.lower() not in supported_extensions()]
        if unsupported:
            return _error(
                415,
                f"unsupported file type: {', '.join(unsupported)}; supported: {', '.join(supported_extensions())}",
                "unsupported_type",
            )
        contents: list[bytes] = []
        for upload_file, filename in zip(files, names, strict=True):
            data = await upload_file.read(limit + 1)
            if len(data) > limit:
                return _error(413, f"{filename} is over the {limit:,}-byte upload limit", "too_large")
            contents.append(data)
        await run_in_threadpool(ingestor.open_collection, name)  # validates the name, creates if new
        if settings.queue_url:  # scale-out: a worker process ingests it
            queue = JobQueue(settings.queue_url)
            jobs = []
            for filename, data in zip(names, contents, strict=True):
                job_id = await run_in_threadpool(
                    queue.enqueue, collection=name, name=filename, source=f"upload://{filename}", data=data
                )
                jobs.append({"id": job_id, "name": filename, "status": "queued", "status_url": f"/v1/jobs/{job_id}"})
            return JSONResponse({"collection": name, "jobs": jobs}, status_code=202)
        totals = UploadResult(
            collection=name, added=0, updated=0, unchanged=0, failed=0, chunks_added=0, documents=[], failures=[]
        )
        for filename, data in zip(names, contents, strict=True):
            report = await run_in_threadpool(
                ingestor.ingest_bytes, data, name=filename, source=f"upload://{filename}", collection=name
            )
            totals.added += report.added
            totals.updated += report.updated
            totals.unchanged += report.unchanged
            totals.failed += report.failed
            totals.chunks_added += report.chunks_added
            totals.documents.extend(report.documents)
            totals.failures.extend(f.as_dict() for f in report.failures)
        status = 422 if totals.failed == len(files) else 200
        return JSONResponse(totals.model_dump(), status_code=status)

    @app.get("/v1/jobs/{job_id}", tags=["collections"], summary="State of a queued ingestion job.")
    def job(job_id: str) -> dict[str, Any]:
        if not settings.queue_url:
            raise DocumentNotFound("no job queue is configured (RAGKB_QUEUE_URL); uploads are ingested at once")
        return JobQueue(settings.queue_url).status(job_id)

    return app
