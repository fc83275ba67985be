"""The OpenAI-compatible provider: error paths over httpx.MockTransport (the real wire format), and a real
llama.cpp server (xllamacpp) serving SmolLM2-135M-Instruct on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from ingest.vectorstore import StoredChunk
from server.answering.prompting import format_context, load_template
from server.answering.providers import GenerationRequest, LLMError, OpenAIProvider
from server.answering.service import QueryService
from server.schemas import QueryResponse

from .helpers import reader_for
from .servers import LlamaCppServer, smollm2_gguf

CONTEXTS = [
    StoredChunk("a:v:0", "The nightly backup copies the data directory to the archive server.", {"title": "Ops"}),
    StoredChunk("b:v:0", "The cache keeps answers for seven days.", {"title": "Cache"}),
]


def _request(question: str = "Where do backups go?") -> GenerationRequest:
    prompt = load_template("answer").render(question=question, context=format_context(CONTEXTS))
    return GenerationRequest(question=question, prompt=prompt, contexts=CONTEXTS)


def _completion(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129},
        **extra,
    }


def _provider(handler: Callable[[httpx.Request], httpx.Response], **options: Any) -> OpenAIProvider:
    defaults: dict[str, Any] = {"base_url": "http://llm.test/v1", "model": "m", "api_key": "sk-test", "backoff": 0.01}
    return OpenAIProvider(**{**defaults, **options}, transport=httpx.MockTransport(handler))


def _generate(provider: OpenAIProvider) -> Any:
    async def run() -> Any:
        try:
            return await provider.generate(_request())
        finally:
            await provider.aclose()

    return asyncio.run(run())


def test_sends_a_chat_completion_and_reads_the_answer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=_completion("Backups go to the archive server [1]."))

    generation = _generate(_provider(handler, temperature=0.2, max_tokens=64))
    assert generation.text == "Backups go to the archive server [1]."
    assert (generation.prompt_tokens, generation.completion_tokens) == (120, 9)
    [request] = seen
    assert request.url == "http://llm.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    body = json.loads(request.content)
    assert body["model"] == "m" and body["temperature"] == 0.2 and body["max_tokens"] == 64
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "[1] (Ops)" in body["messages"][1]["content"]


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_retries_transient_errors_then_succeeds(status: int) -> None:
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) < 3:
            return httpx.Response(status, json={"error": {"message": "busy"}}, headers={"retry-after": "0"})
        return httpx.Response(200, json=_completion("ok [1]"))

    assert _generate(_provider(handler, retries=2)).text == "ok [1]"
    assert len(attempts) == 3


def test_gives_up_after_retries_with_the_status_in_the_message() -> None:
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        return httpx.Response(500, text="upstream exploded")

    with pytest.raises(LLMError, match=r"HTTP 500: upstream exploded \(after 3 attempts\)"):
        _generate(_provider(handler, retries=2))
    assert len(attempts) == 3


def test_client_errors_are_not_retried() -> None:
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        return httpx.Response(401, json={"error": {"message": "bad key"}})

    with pytest.raises(LLMError, match="HTTP 401"):
        _generate(_provider(handler, retries=3))
    assert len(attempts) == 1


def test_connection_errors_are_retried() -> None:
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(LLMError, match="cannot connect"):
        _generate(_provider(handler, retries=1))
    assert len(attempts) == 2


def test_timeout_is_a_clear_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(LLMError, match="timed out"):
        _generate(_provider(handler))


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(200, content=b"<html>gateway</html>"), "malformed JSON"),
        (httpx.Response(200, json={"choices": []}), "no choices"),
        (httpx.Response(200, json={"object": "chat.completion"}), "no choices"),
        (httpx.Response(200, json={"choices": [{"message": {}}]}), r"choices\[0\].message.content"),
        (httpx.Response(200, json=_completion("   ")), "empty answer"),
    ],
    ids=["html", "empty-choices", "missing-choices", "no-content", "blank"],
)
def test_garbage_responses_are_llm_errors(response: httpx.Response, message: str) -> None:
    with pytest.raises(LLMError, match=message):
        _generate(_provider(lambda request: response))


def _sse(*events: str) -> bytes:
    return "".join(f"data: {e}\n\n" for e in events).encode()


def test_streaming_yields_deltas() -> None:
    chunks = [
        json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
        json.dumps({"choices": [{"index": 0, "delta": {"content": "Backups "}}]}),
        json.dumps({"choices": [{"index": 0, "delta": {"content": "go offsite [1]."}}]}),
        "[DONE]",
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream"] is True
        return httpx.Response(200, content=_sse(*chunks), headers={"content-type": "text/event-stream"})

    async def run() -> list[str]:
        provider = _provider(handler)
        return [piece async for piece in provider.stream(_request())]

    assert asyncio.run(run()) == ["Backups ", "go offsite [1]."]


def test_malformed_stream_event_is_an_llm_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_sse("{not json"), headers={"content-type": "text/event-stream"})

    async def run() -> list[str]:
        return [piece async for piece in _provider(handler).stream(_request())]

    with pytest.raises(LLMError, match="malformed event"):
        asyncio.run(run())


@pytest.mark.parametrize(
    ("content", "public"),
    [
        (_sse(json.dumps({"choices": [{"index": 0, "delta": {"content": "Backups go "}}]})), "ended before the answer"),
        (b'{"choices": [{"message": {"content": "Backups', "sent no stream events"),
    ],
    ids=["cut-off-before-done", "json-instead-of-events"],
)
def test_a_stream_that_ends_before_its_end_is_an_llm_error(content: bytes, public: str) -> None:
    """No `[DONE]` and no finish_reason: the pieces are not the whole answer (it must not be validated and
    cached as one)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})

    async def run() -> list[str]:
        return [piece async for piece in _provider(handler).stream(_request())]

    with pytest.raises(LLMError, match="without \\[DONE\\] or a finish_reason") as raised:
        asyncio.run(run())
    assert public in raised.value.public


def test_a_stream_ended_by_a_finish_reason_without_done_is_whole() -> None:
    events = _sse(json.dumps({"choices": [{"index": 0, "delta": {"content": "Done [1]."}, "finish_reason": "stop"}]}))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=events, headers={"content-type": "text/event-stream"})

    async def run() -> list[str]:
        return [piece async for piece in _provider(handler).stream(_request())]

    assert asyncio.run(run()) == ["Done [1]."]


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    with LlamaCppServer(smollm2_gguf()) as base_url:
        yield base_url


@pytest.mark.slow
def test_real_llama_cpp_server_generates_and_streams(llama_server: str) -> None:
    provider = OpenAIProvider(base_url=llama_server, model="smollm2", max_tokens=24, timeout=120, retries=0)

    async def run() -> tuple[Any, list[str]]:
        try:
            generation = await provider.generate(_request())
            pieces = [piece async for piece in provider.stream(_request("How long does the cache keep answers?"))]
            return generation, pieces
        finally:
            await provider.aclose()

    generation, pieces = asyncio.run(run())
    assert generation.text.strip() and generation.completion_tokens > 0 and generation.prompt_tokens > 50
    assert len(pieces) > 1 and "".join(pieces).strip()


@pytest.mark.slow
def test_query_service_validates_a_real_model_answer(llama_server: str, tmp_path: Path, embedder: Embedder) -> None:
    """Whatever a real small model writes, only citations of retrieved chunks survive, and only a
    grounded answer is cached."""
    settings = Settings(data_dir=tmp_path, llm_max_tokens=48)
    ingestor = Ingestor(settings, embedder=embedder)
    (tmp_path / "ops.md").write_text("# Ops\n\nThe nightly backup copies the data directory to the archive server.\n")
    (tmp_path / "cache.md").write_text("# Cache\n\nThe answer cache keeps answers for seven days.\n")
    ingestor.ingest_paths([tmp_path / "ops.md", tmp_path / "cache.md"], collection="ops")
    provider = OpenAIProvider(base_url=llama_server, model="smollm2", max_tokens=48, timeout=120, retries=0)
    service = QueryService(settings, reader=reader_for(ingestor), provider=provider)

    async def ask() -> QueryResponse:
        return await service.answer("Where does the nightly backup go?", collection="ops", top_k=2)

    async def run() -> tuple[QueryResponse, QueryResponse]:
        try:
            return await ask(), await ask()
        finally:
            await service.aclose()

    first, second = asyncio.run(run())
    assert (first.provider, first.model, first.degraded) == ("openai", "smollm2", False)
    assert first.answer
    assert all(1 <= c.n <= 2 for c in first.citations)
    assert all(f"[{n}]" not in first.answer for n in first.invalid_citations)
    assert first.grounded == bool(first.citations)
    assert second.cached is first.grounded
