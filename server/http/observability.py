"""Structured JSON logs carrying the request id, and a light ASGI middleware that sets it and times requests."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import threading
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import jsontext
from ..metrics import ERRORS, REQUEST_SECONDS

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and any `extra` fields (orjson:
    a request's line costs ~4 us instead of ~10)."""

    _second: int | None = None
    _stamp = ""

    def _time(self, record: logging.LogRecord) -> str:
        """The record's local time to the second, formatted once per second (a record's time is read once)."""
        second = int(record.created)
        if second != self._second:
            self._stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
            self._second = second
        return self._stamp

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return jsontext.dumps(entry)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted, not the one there at start-up: a test
    runner swaps it per test (and closes the old one), so a server thread that outlives a test still logs."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ and setStream assign it; always sys.stderr
        pass


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for the whole process. Records no longer look up their thread and process names
    nor the caller's file and line (the JSON has none of them; ~9 us of a record's ~20, the logging HOWTO's
    "Optimization"): a format with `%(threadName)s`, `%(process)d` or `%(lineno)d` would show None or 0."""
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # no stack walk per record (findCaller)
    for noisy in ("httpx", "chromadb", "pypdf", "sentence_transformers", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def accepted_request_id(incoming: str) -> str:
    """The caller's X-Request-ID when it is 1-64 safe characters (letters, digits, `._:-`), else a new one,
    so ids can be logged, echoed and searched without escaping."""
    return incoming if _SAFE_REQUEST_ID.fullmatch(incoming) else new_request_id()


class _RandomIds:
    """32 hex digits from the OS's random source, like `uuid4().hex` but without building a UUID, read 4 KB
    at a time: one `getrandom` call per 256 ids instead of one per request (each call lets another thread
    take the GIL mid-request: ~7 us of a cache hit's wall time, against ~0.3 us for the call itself).
    Unpredictable on purpose: the id keys the answer record that feedback refers to, so a caller must not be
    able to guess the next one (a Mersenne Twister's could be, from ~600 seen ids). A forked child starts
    with a fresh buffer, so no two processes hand out the same ids."""

    _BATCH = 16 * 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._buffer, self._at = b"", 0

    def next(self) -> str:
        with self._lock:
            if self._at >= len(self._buffer):
                self._buffer, self._at = os.urandom(self._BATCH), 0
            at = self._at
            self._at = at + 16
            chunk = self._buffer[at : at + 16]
        return chunk.hex()


_RANDOM_IDS = _RandomIds()


def new_request_id() -> str:
    """A new request id (`_RandomIds`)."""
    return _RANDOM_IDS.next()


async def send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestContextMiddleware:
    """Request id in (a safe X-Request-ID, or a new one) and out (header, logs, every error body, 500s
    included); latency by route template. Errors nobody expected become a 500 JSON body here, inside the
    request's context, with no stack trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logging.getLogger("ragkb.http")
        self._timers: dict[tuple[str, str, int], Any] = {}  # REQUEST_SECONDS' child per label set, found once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = accepted_request_id(incoming)
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started_response = False
        started = time.perf_counter()
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                message.setdefault("headers", []).append(id_header)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            self.log.exception("unhandled error", extra={"request_id": request_id})
            if started_response:  # a stream already began: nothing more can be said to the client
                raise
            status = 500
            ERRORS.labels(kind="internal").inc()
            body = {
                "error": "internal error; see the server log for this request id",
                "code": "internal",
                "detail": None,
                "request_id": request_id,
            }
            await send_json(send, 500, body, [id_header])
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self._timer(scope["method"], path, status).observe(elapsed)
            self.log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "route": path,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(token)

    def _timer(self, method: str, path: str, status: int) -> Any:
        """`REQUEST_SECONDS.labels(...)`, remembered (a lookup under the metric's lock costs ~3 us a request).
        Bounded: methods, route templates and statuses are few, but a client can send any method."""
        key = (method, path, status)
        timer = self._timers.get(key)
        if timer is None:
            if len(self._timers) >= 1024:
                self._timers.clear()
            timer = self._timers[key] = REQUEST_SECONDS.labels(method, path, str(status))
        return timer


class BodySizeLimit:
    """Refuse a request body over its limit before it is parsed (413): multipart uploads against
    RAGKB_MAX_UPLOAD_BYTES, everything else (JSON) against RAGKB_MAX_JSON_BYTES.

    A declared Content-Length over the limit is refused before any byte is read; a body without one is
    counted as it arrives and refused as soon as it passes the limit, so no handler ever buffers it.
    """

    def __init__(self, app: ASGIApp, max_upload_bytes: int, max_json_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.max_json_bytes = max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        is_form = headers.get(b"content-type", b"").startswith(b"multipart/")
        # a multipart body carries boundaries and part headers besides the files: allow 64 KiB for them
        limit = self.max_upload_bytes + 64 * 1024 if is_form else self.max_json_bytes
        setting = "RAGKB_MAX_UPLOAD_BYTES" if is_form else "RAGKB_MAX_JSON_BYTES"
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(send, int(declared), limit - (64 * 1024 if is_form else 0), setting)
            return
        received = 0
        exceeded = False

        async def counted() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # the app sees the client go away and stops reading
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def unless_exceeded(message: Message) -> None:
            if not exceeded:  # whatever the app says about a body it saw cut short is replaced by the 413
                await send(message)

        try:
            await self.app(scope, counted, unless_exceeded)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await self._refuse(send, received, limit - (64 * 1024 if is_form else 0), setting)

    @staticmethod
    async def _refuse(send: Send, size: int, limit: int, setting: str) -> None:
        body = {
            "error": f"the request body is {size:,} bytes or more; the limit is {limit:,} ({setting})",
            "code": "too_large",
            "detail": None,
            "request_id": request_id_var.get(),
        }
        await send_json(send, 413, body, [])
