"""One answering path: JSON answers and SSE streams come from the same core, and a stream that breaks
mid-answer (the LLM's connection drops) ends with an error event, the extractive fallback and `done`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.answering.providers import OpenAIProvider
from server.answering.service import QueryService
from server.http.api import create_app
from server.metrics import LLM_TOKENS

from .helpers import reader_for


def _delta(text: str) -> bytes:
    return f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': text}}]})}\n\n".encode()


class BreaksAfter(httpx.AsyncByteStream):
    """An SSE body that sends some tokens, then loses the connection (httpx.ReadError)."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield _delta(piece)
        raise httpx.ReadError("connection reset by peer")


class Complete(httpx.AsyncByteStream):
    def __init__(self, pieces: list[str], usage: dict[str, int] | None) -> None:
        self.pieces, self.usage = pieces, usage

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield _delta(piece)
        if self.usage is not None:
            yield f"data: {json.dumps({'choices': [], 'usage': self.usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Ingestor:
    settings = Settings(data_dir=tmp_path_factory.mktemp("stream-kb"), default_collection="ops")
    ingestor = Ingestor(settings, embedder=embedder)
    root = tmp_path_factory.mktemp("stream-docs")
    (root / "backups.md").write_text("# Backups\n\nThe nightly backup copies the data directory to the archive.\n")
    (root / "cache.md").write_text("# Cache\n\nThe answer cache keeps answers for seven days.\n")
    assert ingestor.ingest_paths([root], collection="ops").added == 2
    return ingestor


def _client(kb: Ingestor, stream: httpx.AsyncByteStream, tmp_path: Path) -> Iterator[TestClient]:
    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream"] is True
        return httpx.Response(200, stream=stream, headers={"content-type": "text/event-stream"})

    settings = Settings(data_dir=tmp_path, default_collection="ops")
    provider = OpenAIProvider(base_url="http://llm.test/v1", model="m", transport=httpx.MockTransport(handler))
    service = QueryService(settings, reader=reader_for(kb), provider=provider)
    with TestClient(create_app(settings, service)) as client:
        yield client


def _events(body: str) -> list[tuple[str, dict[str, Any]]]:
    blocks = [block.split("\n", 1) for block in body.strip().split("\n\n")]
    return [(name.removeprefix("event: "), json.loads(data.removeprefix("data: "))) for name, data in blocks]


def test_a_stream_that_breaks_mid_answer_falls_back_and_finishes(kb: Ingestor, tmp_path: Path) -> None:
    for client in _client(kb, BreaksAfter(["The nightly ", "backup "]), tmp_path):
        with client.stream("POST", "/v1/query", json={"question": "Where does the backup go?", "stream": True}) as r:
            assert r.status_code == 200
            events = _events("".join(r.iter_text()))
    names = [name for name, _ in events]
    assert names[:2] == ["token", "token"], "the tokens sent before the break reach the client"
    assert names[2] == "error" and "broke off after 2 pieces" in events[2][1]["error"]
    assert events[2][1]["fallback"] == "extractive"
    assert names[3:] == ["token", "done"]
    done = events[-1][1]
    assert done["degraded"] is True and done["provider"] == "extractive"
    assert done["answer"] == events[3][1]["text"] and "archive" in done["answer"]
    assert done["grounded"] and done["cached"] is False


def test_json_answer_is_the_stream_consumed_and_counts_tokens(kb: Ingestor, tmp_path: Path) -> None:
    usage = {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43}
    before = LLM_TOKENS.labels(provider="openai", kind="completion")._value.get()
    for client in _client(kb, Complete(["Backups go ", "to the archive ", "[1]."], usage), tmp_path):
        data = client.post("/v1/query", json={"question": "Where does the backup go?"}).json()
    assert data["answer"] == "Backups go to the archive [1]." and data["provider"] == "openai"
    assert [c["n"] for c in data["citations"]] == [1]
    assert LLM_TOKENS.labels(provider="openai", kind="completion")._value.get() == before + 3


def test_a_streamed_answer_fills_the_fast_path_too(kb: Ingestor, tmp_path: Path) -> None:
    for client in _client(kb, Complete(["The cache keeps answers for seven days [1]."], None), tmp_path):
        body = {"question": "How long are answers cached?", "stream": True}
        with client.stream("POST", "/v1/query", json=body) as r:
            first = _events("".join(r.iter_text()))[-1][1]
        again = client.post("/v1/query", json={"question": "How long are answers cached?"}).json()
    assert first["cached"] is False and first["grounded"]
    assert again["cached"] is True and again["answer"] == first["answer"]
    assert again["timings"]["retrieve_ms"] == 0.0, "answered from the fast path, without retrieving"


@pytest.mark.slow
def test_after_repeated_failures_the_llm_is_left_alone_for_a_cool_down(kb: Ingestor, tmp_path: Path) -> None:
    calls: list[httpx.Request] = []

    def hangs(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("no answer", request=request)

    settings = Settings(data_dir=tmp_path, default_collection="ops", llm_breaker_failures=3, llm_breaker_cooldown=60)
    provider = OpenAIProvider(
        base_url="http://llm.internal.test:8080/v1", model="m", retries=0, transport=httpx.MockTransport(hangs)
    )
    service = QueryService(settings, reader=reader_for(kb), provider=provider)
    with TestClient(create_app(settings, service)) as client:
        answers = [
            client.post("/v1/query", json={"question": f"Where does the backup go? ({i})"}).json() for i in range(5)
        ]
    assert len(calls) == 3, "the fourth and fifth questions do not wait on a dead LLM"
    assert all(a["degraded"] and a["provider"] == "extractive" and a["grounded"] for a in answers)
    assert answers[0]["error"] == "the LLM timed out"
    assert "answering extractively for" in answers[4]["error"]
    assert all("llm.internal.test" not in a["error"] for a in answers), "clients never see the LLM's address"
