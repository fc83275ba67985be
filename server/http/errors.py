"""How errors become HTTP responses: one table from ragkb's error types to status codes, one JSON body.

Starlette picks the handler of the nearest class in an exception's MRO, so
`RagkbError` answers (400) only for errors not listed more precisely. Errors
nobody expected are answered by `RequestContextMiddleware` (500, with the
request id), never with a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ingest.blobs import BlobNotFound
from ingest.errors import CollectionNotFound, DocumentNotFound, EmbeddingModelError, InvalidCollectionName, RagkbError
from ingest.queue import JobNotFound, QueueNotConfigured, QueueUnavailable
from ingest.vectorstore import InvalidFilter, StoreUnavailable

from ..answering.cache import CacheUnavailable
from ..answering.lexical import IndexBusy
from ..answering.questions import QuestionError
from ..answering.retrieval import UnknownRetriever
from ..metrics import ERRORS
from ..review.errors import (
    AnswerNotFound,
    CuratedNotFound,
    CuratedWithdrawn,
    InvalidEdit,
    InvalidFeedback,
    InvalidReviewPolicy,
    RetryLimitReached,
    ReviewDecided,
    ReviewNotFound,
    StaleChunk,
)
from ..schemas import ErrorResponse
from ..state import DuplicateKeyName, InvalidAudit, InvalidKey, InvalidScope, StateUnavailable, UnknownKey
from ..state.conversations import ConversationFull, ConversationNotFound
from .auth import Forbidden, RateLimited, Unauthorized
from .observability import request_id_var

log = logging.getLogger("ragkb.api")

ERROR_STATUS: dict[type[Exception], tuple[int, str]] = {
    Unauthorized: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    RateLimited: (429, "rate_limited"),
    CollectionNotFound: (404, "collection_not_found"),
    UnknownKey: (404, "key_not_found"),
    DuplicateKeyName: (409, "duplicate_key"),
    InvalidScope: (422, "invalid_scope"),
    InvalidKey: (422, "invalid_key"),
    InvalidAudit: (422, "invalid_audit_query"),
    DocumentNotFound: (404, "document_not_found"),
    BlobNotFound: (404, "original_not_found"),
    JobNotFound: (404, "job_not_found"),
    QueueNotConfigured: (404, "queue_not_configured"),
    EmbeddingModelError: (409, "model_mismatch"),
    QuestionError: (422, "bad_question"),
    UnknownRetriever: (422, "unknown_retriever"),
    InvalidCollectionName: (422, "invalid_collection_name"),
    InvalidFilter: (422, "invalid_filter"),
    StoreUnavailable: (503, "store_unavailable"),
    CacheUnavailable: (503, "cache_unavailable"),
    IndexBusy: (503, "index_busy"),
    QueueUnavailable: (503, "queue_unavailable"),
    StateUnavailable: (503, "state_unavailable"),
    InvalidReviewPolicy: (422, "invalid_review_policy"),
    AnswerNotFound: (404, "answer_not_found"),
    InvalidFeedback: (422, "invalid_feedback"),
    ReviewNotFound: (404, "review_not_found"),
    ReviewDecided: (409, "review_decided"),
    RetryLimitReached: (409, "retry_limit_reached"),
    InvalidEdit: (422, "invalid_review_answer"),
    StaleChunk: (409, "stale_chunk"),
    CuratedNotFound: (404, "curated_not_found"),
    CuratedWithdrawn: (409, "curated_withdrawn"),
    ConversationNotFound: (404, "conversation_not_found"),
    ConversationFull: (409, "conversation_full"),
    RagkbError: (400, "bad_request"),
}

# What the OpenAPI schema says every route may answer besides its own success.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No API key, or an unknown or revoked one."},
    403: {"model": ErrorResponse, "description": "The API key's scope does not allow this."},
    429: {"model": ErrorResponse, "description": "Rate limit spent: see `Retry-After`."},
    404: {"model": ErrorResponse, "description": "Unknown collection, document, answer, review or curated answer."},
    422: {"model": ErrorResponse, "description": "Invalid request (empty or oversized question, bad field)."},
    503: {"model": ErrorResponse, "description": "The vector store, job queue or state database is unreachable."},
}


def error_response(
    status: int, message: str, code: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    ERRORS.labels(kind=code).inc()
    body = ErrorResponse(error=message, code=code, detail=detail, request_id=request_id_var.get())
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _headers_for(exc: Exception) -> dict[str, str] | None:
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, RateLimited):
        return {"Retry-After": exc.retry_after}
    return None


# Errors whose own text names server internals (a database URL, a file path): clients get this instead,
# and the log keeps the full text under the request id.
PRIVATE_MESSAGES: dict[type[Exception], str] = {
    StateUnavailable: "the state database is unavailable; see the server log for this request id",
}


def _reply_with(status: int, code: str, private: str | None = None) -> Any:
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        if private is not None:
            log.warning("%s: %s", code, exc)
        return error_response(status, private or str(exc), code, headers=_headers_for(exc))

    return handler


async def _collection_not_found(request: Request, exc: Exception) -> JSONResponse:
    """A missing collection and one the caller's key may not see answer alike; the "available" list names
    only the collections the caller may see (the store's own message would name them all)."""
    assert isinstance(exc, CollectionNotFound)
    caller = getattr(request.state, "caller", None)
    message = str(exc)
    if caller is not None and caller.identity is not None and caller.identity.collections is not None:
        try:
            available = await run_in_threadpool(caller.available)
        except RagkbError:
            available = sorted(caller.identity.collections)
        message = str(CollectionNotFound(exc.name, available))
    return error_response(404, message, "collection_not_found")


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e.get("loc", [])), "msg": e.get("msg")} for e in exc.errors()]
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "request"
    return error_response(422, f"invalid request: {where}: {first['msg']}", "validation", detail)


HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    """The framework's own errors (a body the JSON parser gives up on, an unknown route or method) in the one
    error shape, with a code and the request id."""
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail) if exc.detail else code.replace("_", " ")
    if exc.status_code == 400 and "parsing the body" in message:
        message = "the request body is not valid JSON (or not UTF-8, or nested too deeply)"
    return error_response(exc.status_code, message, code, headers=dict(exc.headers or {}) or None)


def install_error_handlers(app: FastAPI) -> None:
    for error_type, (status, code) in ERROR_STATUS.items():
        app.add_exception_handler(error_type, _reply_with(status, code, PRIVATE_MESSAGES.get(error_type)))
    app.add_exception_handler(CollectionNotFound, _collection_not_found)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
