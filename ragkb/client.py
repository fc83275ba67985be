"""A Python client for a ragkb server, on httpx: `Client` (blocking) and `AsyncClient` (asyncio), the same
methods on both. Results are typed (`ragkb/client_models.py`, plain pydantic: no torch, no server code).

    from ragkb.client import Client

    with Client("http://127.0.0.1:8000", api_key="rk_...") as kb:
        reply = kb.ask("How long are backups kept?", collection="handbook")
        print(reply.answer, [c.source for c in reply.citations])

`ask` returns an `Answer`, or a `HeldAnswer` when the collection's review policy holds answers for a reviewer
(`wait_for_review` polls for the decision); `ask_stream` yields `TokenEvent`s (`StepEvent`s in agent mode) and
ends with a `DoneEvent`. An error answer raises `ApiError` with the server's `status`, `code` and `request_id`;
no answer at all (connection refused, timeout) raises `Unreachable`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from .client_models import (
    Answer,
    AnswerOutcome,
    CollectionInfo,
    Document,
    DoneEvent,
    ErrorEvent,
    HeldAnswer,
    HeldEvent,
    Job,
    JobsQueued,
    Retrieval,
    ReviewDetail,
    ReviewSummary,
    StepEvent,
    StreamEvent,
    TokenEvent,
    UploadResult,
)

API_KEY_ENV = "RAGKB_API_KEY"
M = TypeVar("M", bound=BaseModel)
Mode = Literal["single", "agent"]


class ApiError(Exception):
    """The server answered with an error: `status`, its `code` (e.g. collection_not_found), `request_id`. A reply
    that is not the JSON the route promises is an `ApiError` too (code `not_json`)."""

    def __init__(self, status: int, message: str, code: str, request_id: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (request id {request_id})" if request_id else ""))
        self.status, self.message, self.code, self.request_id = status, message, code, request_id


class Unreachable(Exception):
    """No answer from the server at all (refused, timed out, name unknown): `url` and the transport's `reason`."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url, self.reason = url, reason


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ApiError(response.status_code, "the server answered without JSON", "not_json") from None


@dataclass(frozen=True, slots=True)
class _Call:
    """One request, built once and sent by either client."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = field(default=None)


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if isinstance(body.get("error"), dict):  # the OpenAI door's shape
        body = body["error"]
        message = str(body.get("message", response.text))
    else:
        message = str(body.get("error") or response.text or response.reason_phrase)
    raise ApiError(response.status_code, message, str(body.get("code", "error")), body.get("request_id"))


def _query(question: str, **options: Any) -> dict[str, Any]:
    return {"question": question, **{k: v for k, v in options.items() if v is not None}}


def _answer_or_held(response: httpx.Response) -> Answer | HeldAnswer:
    _raise_for(response)
    if response.status_code == 202:
        return HeldAnswer.model_validate(_json(response))
    return Answer.model_validate(_json(response))


def _event(name: str, data: dict[str, Any]) -> StreamEvent:
    if name == "token":
        return TokenEvent(text=data["text"])
    if name == "step":
        return StepEvent(step=data)
    if name == "error":
        return ErrorEvent(error=data["error"], fallback=data["fallback"])
    if name == "done":
        return DoneEvent(answer=Answer.model_validate(data))
    raise ApiError(200, f"unknown stream event {name!r}", "bad_stream")


class _SSE:
    """Server-Sent Events from lines: `event:` then `data:`, a blank line ends an event."""

    def __init__(self) -> None:
        self.name, self.data = "message", ""

    def feed(self, line: str) -> StreamEvent | None:
        if line.startswith("event:"):
            self.name = line[6:].strip()
        elif line.startswith("data:"):
            self.data += line[5:].strip()
        elif not line.strip() and self.data:
            event = _event(self.name, json.loads(self.data))
            self.name, self.data = "message", ""
            return event
        return None


def _files(paths: Iterable[str | Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    out = []
    for path in map(Path, paths):
        out.append(("files", (path.name, path.read_bytes(), "application/octet-stream")))
    if not out:
        raise ValueError("give at least one file to upload")
    return out


def _uploaded(response: httpx.Response) -> UploadResult | JobsQueued:
    _raise_for(response)
    if response.status_code == 202:
        return JobsQueued.model_validate(_json(response))
    return UploadResult.model_validate(_json(response))


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}


class _Calls:
    """The API's requests, shared by `Client` and `AsyncClient`."""

    @staticmethod
    def ask(question: str, mode: Mode, stream: bool, options: dict[str, Any]) -> _Call:
        return _Call("POST", "/v1/query", json=_query(question, mode=mode, stream=stream, **options))

    @staticmethod
    def retrieve(question: str, options: dict[str, Any]) -> _Call:
        return _Call("POST", "/v1/retrieve", json=_query(question, **options))

    @staticmethod
    def reviews(status: str | None, limit: int) -> _Call:
        return _Call("GET", "/v1/reviews", params={k: v for k, v in {"status": status, "limit": limit}.items() if v})


class Client:
    """A blocking client. `api_key` defaults to $RAGKB_API_KEY (none: an open server)."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout: float = 120.0, transport: Any = None
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _send(self, call: _Call) -> httpx.Response:
        try:
            return self.http.request(call.method, call.path, json=call.json, params=call.params, files=call.files)
        except httpx.TransportError as exc:
            raise Unreachable(str(self.http.base_url), str(exc) or type(exc).__name__) from exc

    def _get(self, model: type[M], call: _Call) -> M:
        response = self._send(call)
        _raise_for(response)
        return model.model_validate(_json(response))

    def ask(self, question: str, *, mode: Mode = "single", **options: Any) -> Answer | HeldAnswer:
        """A cited answer, or `HeldAnswer`. `options`: collection, top_k, retriever, filters."""
        return _answer_or_held(self._send(_Calls.ask(question, mode, False, options)))

    def ask_stream(self, question: str, *, mode: Mode = "single", **options: Any) -> Iterator[StreamEvent]:
        """The answer as it is made: tokens (steps in agent mode), then `DoneEvent`; or one `HeldEvent`."""
        call = _Calls.ask(question, mode, True, options)
        try:
            with self.http.stream(call.method, call.path, json=call.json) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                if response.status_code == 202:
                    response.read()
                    yield HeldEvent(held=HeldAnswer.model_validate(_json(response)))
                    return
                parser = _SSE()
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise Unreachable(str(self.http.base_url), str(exc) or type(exc).__name__) from exc

    def wait_for_review(self, held: HeldAnswer, *, timeout: float = 300.0, every: float = 1.0) -> AnswerOutcome:
        """Poll a held answer until a reviewer decides (or `timeout` passes: the outcome is then `pending`)."""
        deadline = time.monotonic() + timeout
        while True:
            outcome = self._get(AnswerOutcome, _Call("GET", held.answer_url))
            if outcome.status != "pending" or time.monotonic() >= deadline:
                return outcome
            time.sleep(every)

    def retrieve(self, question: str, **options: Any) -> Retrieval:
        """Chunks for a question, no LLM. `options`: collection, top_k, retriever, filters."""
        return self._get(Retrieval, _Calls.retrieve(question, options))

    def collections(self) -> list[CollectionInfo]:
        response = self._send(_Call("GET", "/v1/collections"))
        _raise_for(response)
        return TypeAdapter(list[CollectionInfo]).validate_python(_json(response))

    def documents(self, collection: str) -> list[Document]:
        response = self._send(_Call("GET", f"/v1/collections/{collection}/documents"))
        _raise_for(response)
        return TypeAdapter(list[Document]).validate_python(_json(response))

    def upload(self, collection: str, paths: Iterable[str | Path]) -> UploadResult | JobsQueued:
        """Ingest files (scope `write`): at once, or queued when the server has a job queue."""
        return _uploaded(self._send(_Call("POST", f"/v1/collections/{collection}/documents", files=_files(paths))))

    def job(self, job_id: str) -> Job:
        return self._get(Job, _Call("GET", f"/v1/jobs/{job_id}"))

    def reviews(self, status: str | None = "pending", limit: int = 100) -> list[ReviewSummary]:
        response = self._send(_Calls.reviews(status, limit))
        _raise_for(response)
        return TypeAdapter(list[ReviewSummary]).validate_python(_json(response)["reviews"])

    def review(self, review_id: str) -> ReviewDetail:
        return self._get(ReviewDetail, _Call("GET", f"/v1/reviews/{review_id}"))

    def approve(self, review_id: str, *, answer: str | None = None) -> ReviewDetail:
        body = {} if answer is None else {"answer": answer}
        return self._get(ReviewDetail, _Call("POST", f"/v1/reviews/{review_id}/approve", json=body))

    def reject(self, review_id: str, *, retry: bool = False, note: str | None = None) -> ReviewDetail:
        body = {"retry": retry, **({"note": note} if note else {})}
        return self._get(ReviewDetail, _Call("POST", f"/v1/reviews/{review_id}/reject", json=body))


class AsyncClient:
    """The same as `Client`, for asyncio."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout: float = 120.0, transport: Any = None
    ) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(self, call: _Call) -> httpx.Response:
        try:
            return await self.http.request(call.method, call.path, json=call.json, params=call.params, files=call.files)
        except httpx.TransportError as exc:
            raise Unreachable(str(self.http.base_url), str(exc) or type(exc).__name__) from exc

    async def _get(self, model: type[M], call: _Call) -> M:
        response = await self._send(call)
        _raise_for(response)
        return model.model_validate(_json(response))

    async def ask(self, question: str, *, mode: Mode = "single", **options: Any) -> Answer | HeldAnswer:
        return _answer_or_held(await self._send(_Calls.ask(question, mode, False, options)))

    async def ask_stream(self, question: str, *, mode: Mode = "single", **options: Any) -> AsyncIterator[StreamEvent]:
        call = _Calls.ask(question, mode, True, options)
        try:
            async with self.http.stream(call.method, call.path, json=call.json) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for(response)
                if response.status_code == 202:
                    await response.aread()
                    yield HeldEvent(held=HeldAnswer.model_validate(_json(response)))
                    return
                parser = _SSE()
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise Unreachable(str(self.http.base_url), str(exc) or type(exc).__name__) from exc

    async def retrieve(self, question: str, **options: Any) -> Retrieval:
        return await self._get(Retrieval, _Calls.retrieve(question, options))

    async def collections(self) -> list[CollectionInfo]:
        response = await self._send(_Call("GET", "/v1/collections"))
        _raise_for(response)
        return TypeAdapter(list[CollectionInfo]).validate_python(_json(response))

    async def documents(self, collection: str) -> list[Document]:
        response = await self._send(_Call("GET", f"/v1/collections/{collection}/documents"))
        _raise_for(response)
        return TypeAdapter(list[Document]).validate_python(_json(response))

    async def upload(self, collection: str, paths: Iterable[str | Path]) -> UploadResult | JobsQueued:
        return _uploaded(
            await self._send(_Call("POST", f"/v1/collections/{collection}/documents", files=_files(paths)))
        )

    async def job(self, job_id: str) -> Job:
        return await self._get(Job, _Call("GET", f"/v1/jobs/{job_id}"))

    async def reviews(self, status: str | None = "pending", limit: int = 100) -> list[ReviewSummary]:
        response = await self._send(_Calls.reviews(status, limit))
        _raise_for(response)
        return TypeAdapter(list[ReviewSummary]).validate_python(_json(response)["reviews"])

    async def review(self, review_id: str) -> ReviewDetail:
        return await self._get(ReviewDetail, _Call("GET", f"/v1/reviews/{review_id}"))

    async def approve(self, review_id: str, *, answer: str | None = None) -> ReviewDetail:
        body = {} if answer is None else {"answer": answer}
        return await self._get(ReviewDetail, _Call("POST", f"/v1/reviews/{review_id}/approve", json=body))

    async def reject(self, review_id: str, *, retry: bool = False, note: str | None = None) -> ReviewDetail:
        body = {"retry": retry, **({"note": note} if note else {})}
        return await self._get(ReviewDetail, _Call("POST", f"/v1/reviews/{review_id}/reject", json=body))
