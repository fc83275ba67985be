"""The LLM path has the same three outcomes: prompt `answer` v3 asks for an answer from the passages only, the
quoted span and the refusal phrase; a refusal is `not_found`, a citation that does not support its sentence
lowers the answer to `low_confidence`. Over httpx.MockTransport (a model that answers wrongly on purpose) and
once against the real llama.cpp server with SmolLM2-135M."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.answering.prompting import load_template
from server.answering.providers import OpenAIProvider
from server.answering.service import QueryService
from server.schemas import QueryResponse

from .helpers import reader_for
from .servers import LlamaCppServer, smollm2_gguf

QUESTION = "How many people died when Ethiopian Airlines Flight 302 crashed after leaving Addis Ababa?"


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, shared_pdfs: Path) -> Ingestor:
    root = tmp_path_factory.mktemp("llm-outcome-pdfs")
    shutil.copy(shared_pdfs / "pdfplumber/federal-register-2020-17221.pdf", root)
    settings = Settings(data_dir=tmp_path_factory.mktemp("llm-outcome-kb"), default_collection="pdfs")
    ingestor = Ingestor(settings, embedder=embedder)
    assert ingestor.ingest_paths([root], collection="pdfs").added == 1
    return ingestor


class Model:
    """An OpenAI-compatible chat endpoint that streams `answer` and keeps every request body."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.bodies: list[dict[str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        delta = {"choices": [{"index": 0, "delta": {"content": self.answer}}]}
        stream = f"data: {json.dumps(delta)}\n\ndata: [DONE]\n\n".encode()
        return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})


def _service(kb: Ingestor, provider: OpenAIProvider) -> QueryService:
    service = QueryService(kb.settings, reader=reader_for(kb), provider=provider)
    service.cache.clear()
    return service


def _mock(model: Model) -> OpenAIProvider:
    return OpenAIProvider(base_url="http://llm.test/v1", model="m", retries=0, transport=httpx.MockTransport(model))


def _ask(service: QueryService) -> QueryResponse:
    async def run() -> QueryResponse:
        try:
            return await service.answer(QUESTION, collection="pdfs")
        finally:
            await service.aclose()

    return asyncio.run(run())


def _passages(kb: Ingestor) -> tuple[int, int]:
    """The context number of the passage that says 157 fatalities, and of one that says nothing of the crash."""
    service = QueryService(kb.settings, reader=reader_for(kb))
    plan = service.plan(service.query(QUESTION, collection="pdfs"), use_cache=False)
    assert plan.request is not None
    contexts = plan.request.contexts
    right = next(n for n, c in enumerate(contexts, 1) if "157" in c.text)
    wrong = next(n for n, c in enumerate(contexts, 1) if "157" not in c.text and "Ethiopian" not in c.text)
    return right, wrong


@pytest.mark.slow
def test_prompt_v3_asks_for_the_quoted_span_and_the_refusal_phrase(kb: Ingestor) -> None:
    template = load_template("answer")
    assert (template.name, template.version) == ("answer", "3")
    model = Model("The documents do not contain the answer.")
    _ask(_service(kb, _mock(model)))
    system = model.bodies[0]["messages"][0]["content"]  # type: ignore[index]
    assert "quote the exact words" in system and "The documents do not contain the answer." in system


@pytest.mark.slow
def test_a_refusal_is_not_found(kb: Ingestor) -> None:
    response = _ask(_service(kb, _mock(Model("The documents do not contain the answer."))))
    assert response.outcome == "not_found" and response.abstained and response.citations == []
    assert response.provider == "openai" and response.related


@pytest.mark.slow
def test_a_supported_quote_is_answered(kb: Ingestor) -> None:
    right, _ = _passages(kb)
    response = _ask(_service(kb, _mock(Model(f'The crash was "resulting in 157 fatalities" [{right}].'))))
    assert response.outcome == "answered" and response.grounded and [c.n for c in response.citations] == [right]


@pytest.mark.slow
def test_a_model_citing_the_wrong_passage_is_low_confidence(kb: Ingestor) -> None:
    _, wrong = _passages(kb)
    answer = f'Ethiopian Airlines Flight 302 crashed after takeoff from Addis Ababa with "157 fatalities" [{wrong}].'
    response = _ask(_service(kb, _mock(Model(answer))))
    assert wrong in response.unsupported_citations, "the wrong passage does not support the sentence"
    assert response.outcome == "low_confidence" and not response.abstained
    again = _ask(QueryService(kb.settings, reader=reader_for(kb), provider=_mock(Model(answer))))
    assert not again.cached, "a lowered answer is not remembered as a confident one"


@pytest.mark.slow
def test_a_model_inventing_a_passage_number_is_low_confidence(kb: Ingestor) -> None:
    response = _ask(_service(kb, _mock(Model("There were 157 fatalities [42]."))))
    assert response.invalid_citations == [42] and response.outcome == "low_confidence"


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    with LlamaCppServer(smollm2_gguf()) as base_url:
        yield base_url


@pytest.mark.slow
def test_the_real_small_model_gets_one_of_the_three_outcomes(llama_server: str, kb: Ingestor) -> None:
    """SmolLM2-135M is too small to judge; whatever it writes, the outcome follows from its reply."""
    provider = OpenAIProvider(base_url=llama_server, model="smollm2", max_tokens=64, timeout=120, retries=0)
    response = _ask(_service(kb, provider))
    assert response.provider in ("openai", "extractive") and response.outcome in (
        "answered",
        "low_confidence",
        "not_found",
    )
    if response.outcome == "not_found":
        assert response.abstained and response.citations == []
    elif response.provider == "openai" and (response.unsupported_citations or not response.grounded):
        assert response.outcome == "low_confidence"
    assert all(f"[{c.n}]" in response.answer for c in response.citations), "only validated markers remain"
