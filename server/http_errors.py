"""How errors become HTTP responses: one table from ragkb's error types to status codes, one JSON body.

Starlette picks the handler of the nearest class in an exception's MRO, so
`RagkbError` answers (400) only for errors not listed more precisely. Errors
nobody expected are answered by `RequestContextMiddleware` (500, with the
request id), never with a stack trace.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ingest.errors import CollectionNotFound, DocumentNotFound, EmbeddingModelError, InvalidCollectionName, RagkbError
from ingest.queue import JobNotFound, QueueNotConfigured, QueueUnavailable
from ingest.vectorstore import InvalidFilter, StoreUnavailable

from .metrics import ERRORS
from .observability import request_id_var
from .questions import QuestionError
from .retrieval import UnknownRetriever
from .schemas import ErrorResponse

ERROR_STATUS: dict[type[Exception], tuple[int, str]] = {
    CollectionNotFound: (404, "collection_not_found"),
    DocumentNotFound: (404, "document_not_found"),
    JobNotFound: (404, "job_not_found"),
    QueueNotConfigured: (404, "queue_not_configured"),
    EmbeddingModelError: (409, "model_mismatch"),
    QuestionError: (422, "bad_question"),
    UnknownRetriever: (422, "unknown_retriever"),
    InvalidCollectionName: (422, "invalid_collection_name"),
    InvalidFilter: (422, "invalid_filter"),
    StoreUnavailable: (503, "store_unavailable"),
    QueueUnavailable: (503, "queue_unavailable"),
    RagkbError: (400, "bad_request"),
}

# What the OpenAPI schema says every route may answer besides its own success.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown collection or document."},
    422: {"model": ErrorResponse, "description": "Invalid request (empty or oversized question, bad field)."},
    503: {"model": ErrorResponse, "description": "The vector store or the job queue is unreachable."},
}


def error_response(status: int, message: str, code: str, detail: Any = None) -> JSONResponse:
    ERRORS.labels(kind=code).inc()
    body = ErrorResponse(error=message, code=code, detail=detail, request_id=request_id_var.get())
    return JSONResponse(body.model_dump(), status_code=status)


def _reply_with(status: int, code: str) -> Any:
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return error_response(status, str(exc), code)

    return handler


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e.get("loc", [])), "msg": e.get("msg")} for e in exc.errors()]
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "request"
    return error_response(422, f"invalid request: {where}: {first['msg']}", "validation", detail)


def install_error_handlers(app: FastAPI) -> None:
    for error_type, (status, code) in ERROR_STATUS.items():
        app.add_exception_handler(error_type, _reply_with(status, code))
    app.add_exception_handler(RequestValidationError, _invalid)
