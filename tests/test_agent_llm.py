"""Agent mode with an OpenAI-compatible LLM: the planning prompt's JSON validated (one repair, then the
single-shot plan), invalid tool arguments reported back to the planner, the LLM-token budget, a draft that
breaks mid-stream; over httpx.MockTransport (the wire protocol), and once against a real llama.cpp server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.agent import AgentRunner
from server.answering.providers import OpenAIProvider
from server.answering.service import QueryService
from server.http.api import create_app
from server.schemas import QueryResponse

from .helpers import reader_for
from .servers import LlamaCppServer, smollm2_gguf

QUESTION = "When does the nightly backup run, and how long does the answer cache keep answers?"
GOOD_PLAN = json.dumps(
    {
        "sub_questions": [
            {"question": "When does the nightly backup run?", "tool": "search", "args": {"query": "nightly backup"}},
            {"question": "How long does the answer cache keep answers?"},
        ]
    }
)


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Ingestor:
    settings = Settings(data_dir=tmp_path_factory.mktemp("agent-llm-kb"), default_collection="ops")
    ingestor = Ingestor(settings, embedder=embedder)
    root = tmp_path_factory.mktemp("agent-llm-docs")
    (root / "backups.md").write_text("# Backups\n\nThe nightly backup runs at 02:00 and copies the data directory.\n")
    (root / "cache.md").write_text("# Cache\n\nThe answer cache keeps answers for seven days.\n")
    assert ingestor.ingest_paths([root], collection="ops").added == 2
    return ingestor


def _completion(text: str) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
    }


def _delta(text: str) -> bytes:
    return f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': text}}]})}\n\n".encode()


class Stream(httpx.AsyncByteStream):
    def __init__(self, pieces: list[str], *, breaks: bool = False) -> None:
        self.pieces, self.breaks = pieces, breaks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield _delta(piece)
        if self.breaks:
            raise httpx.ReadError("connection reset by peer")
        yield b"data: [DONE]\n\n"


class FakeLLM:
    """Plans from `plans` in turn (non-streamed calls), answers with `answer` (streamed calls)."""

    def __init__(self, plans: list[str | int], answer: list[str], *, breaks: bool = False) -> None:
        self.plans, self.answer, self.breaks = list(plans), answer, breaks
        self.planning: list[dict[str, Any]] = []
        self.answering: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["stream"]:
            self.answering.append(body)
            stream = Stream(self.answer, breaks=self.breaks)
            return httpx.Response(200, stream=stream, headers={"content-type": "text/event-stream"})
        self.planning.append(body)
        reply = self.plans.pop(0)
        if isinstance(reply, int):
            return httpx.Response(reply, json={"error": "down"})
        return httpx.Response(200, json=_completion(reply))


def _service(
    kb: Ingestor, tmp_path: Path, llm: Callable[[httpx.Request], httpx.Response], **extra: Any
) -> QueryService:
    settings = Settings(data_dir=tmp_path, default_collection="ops", **extra)
    provider = OpenAIProvider(
        base_url="http://llm.test/v1", model="m", retries=0, transport=httpx.MockTransport(llm), max_tokens=64
    )
    return QueryService(settings, reader=reader_for(kb), provider=provider)


def _ask(service: QueryService, question: str = QUESTION) -> QueryResponse:
    async def run() -> QueryResponse:
        try:
            return await AgentRunner(service).answer(question, collection="ops")
        finally:
            await service.aclose()

    return asyncio.run(run())


ANSWER = ["The nightly backup runs at 02:00 [1]. ", "The answer cache keeps answers for seven days [2]."]


@pytest.mark.parametrize(
    ("first", "told"),
    [
        ("Sure! The plan: search the backup, then the cache.", "the reply holds no JSON object"),
        ('{"sub_questions": [{"question": "When does the nightly backup run?",}]}', "the JSON does not parse"),
        ('{"steps": ["backup"]}', "sub_questions: Field required"),
        (
            '{"sub_questions": [{"question": "backup?", "args": {"query": "backup", "retriever": "magic"}}]}',
            "unknown retriever 'magic'; choose one of:",
        ),
        ('{"sub_questions": [{"question": "b?", "tool": "delete", "args": {}}]}', "sub_questions.0.tool"),
    ],
)
def test_an_invalid_plan_is_repaired_once_with_the_problem_named(
    kb: Ingestor, tmp_path: Path, first: str, told: str
) -> None:
    llm = FakeLLM([first, GOOD_PLAN], ANSWER)
    response = _ask(_service(kb, tmp_path, llm))
    assert len(llm.planning) == 2, "one repair attempt"
    repair = llm.planning[1]["messages"][-1]["content"]
    assert "That reply is invalid" in repair and told in repair, repair[-400:]
    plan = response.steps[0]
    assert plan.kind == "plan" and plan.input["planner"] == "llm" and plan.input["version"] == "plan-1"
    assert plan.error is not None and "repaired plan is valid" in plan.error
    assert [s.kind for s in response.steps[1:3]] == ["search", "search"]
    assert response.steps[1].input["query"] == "nightly backup", "the planned tool arguments were used"
    assert response.provider == "openai" and response.grounded
    assert {c.source.rsplit("/", 1)[-1] for c in response.citations} == {"backups.md", "cache.md"}
    assert "Question: " + QUESTION in llm.answering[0]["messages"][-1]["content"]


def test_a_plan_invalid_twice_falls_back_to_the_single_shot_plan(kb: Ingestor, tmp_path: Path) -> None:
    llm = FakeLLM(["no json here", '{"sub_questions": []}'], ANSWER)
    response = _ask(_service(kb, tmp_path, llm))
    plan = response.steps[0]
    assert plan.input["planner"] == "fallback" and "1 sub-question(s)" in plan.output
    assert plan.error is not None and "the repair is invalid too" in plan.error
    assert [s.kind for s in response.steps][:3] == ["plan", "search", "draft"] and response.answer


def test_unsupported_claims_are_searched_again_then_dropped_and_reported(kb: Ingestor, tmp_path: Path) -> None:
    """The model cites a passage for a claim it does not support: the review searches that claim once more,
    finds nothing new, drops the claim and reports it; the supported claim stays."""
    plan = json.dumps({"sub_questions": [{"question": QUESTION}]})
    claims = [
        "The nightly backup runs at 02:00 [9][2][1]. ",
        "Restores are rehearsed every Friday by the on-call team [1].",
    ]
    response = _ask(_service(kb, tmp_path, FakeLLM([plan], claims)))
    kinds = [s.kind for s in response.steps]
    assert kinds == ["plan", "search", "draft", "review", "search", "review"], kinds
    assert response.steps[3].output == "1 more search(es): Restores are rehearsed every Friday by the on-call team."
    assert response.steps[4].input["query"] == "Restores are rehearsed every Friday by the on-call team."
    assert response.steps[5].output.startswith("dropped 1 unsupported claim(s); grounded=True")
    assert response.answer.startswith("The nightly backup runs at 02:00 [") and "Friday" not in response.answer
    assert response.grounded and response.provider == "openai" and response.invalid_citations == [9]


def test_an_answer_that_cites_nothing_is_replaced_by_a_validated_one(kb: Ingestor, tmp_path: Path) -> None:
    """A small model that cites nothing: its claims are searched once more, then dropped; with nothing
    supported left, the answer is quoted from the evidence, with citations."""
    llm = FakeLLM([GOOD_PLAN], ["Backups happen at night. ", "Answers are kept for a while."])
    response = _ask(_service(kb, tmp_path, llm))
    kinds = [s.kind for s in response.steps]
    assert kinds == ["plan", "search", "search", "draft", "review", "search", "search", "review"], kinds
    assert "dropped 2 unsupported claim(s)" in response.steps[-1].output
    assert "quoted from the evidence" in response.steps[-1].output
    assert response.provider == "extractive" and response.grounded and "02:00" in response.answer


def test_a_planner_that_is_down_never_fails_the_request(kb: Ingestor, tmp_path: Path) -> None:
    llm = FakeLLM([503], ANSWER)
    response = _ask(_service(kb, tmp_path, llm))
    assert response.steps[0].input["planner"] == "fallback" and "HTTP 503" in (response.steps[0].error or "")
    assert [s.kind for s in response.steps][:3] == ["plan", "search", "draft"] and len(llm.answering) == 1
    assert response.answer and response.grounded


def test_the_llm_token_budget_stops_llm_calls_and_truncates(kb: Ingestor, tmp_path: Path) -> None:
    llm = FakeLLM([GOOD_PLAN], ANSWER)
    response = _ask(_service(kb, tmp_path, llm, agent_llm_tokens=200))
    assert len(llm.planning) == 1 and llm.answering == [], "the plan spent 150 of 200: no answer call"
    assert response.truncated is True and response.provider == "extractive"
    assert [s.kind for s in response.steps][-1] == "draft"
    assert not response.citations or response.grounded


def test_a_draft_that_breaks_mid_stream_is_streamed_as_an_error_then_done(kb: Ingestor, tmp_path: Path) -> None:
    llm = FakeLLM([GOOD_PLAN], ["The nightly backup "], breaks=True)
    service = _service(kb, tmp_path, llm)
    with TestClient(create_app(service.settings, service)) as client:
        body = {"question": QUESTION, "mode": "agent", "stream": True}
        with client.stream("POST", "/v1/query", json=body) as response:
            text = "".join(response.iter_text())
    blocks = [block.split("\n", 1) for block in text.strip().split("\n\n")]
    names = [name.removeprefix("event: ") for name, _ in blocks]
    assert names == ["step", "step", "step", "error", "step", "done"], names
    done = json.loads(blocks[-1][1].removeprefix("data: "))
    assert done["degraded"] is True and done["provider"] == "extractive" and done["steps"][-1]["kind"] == "draft"


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    with LlamaCppServer(smollm2_gguf()) as base_url:
        yield base_url


@pytest.mark.slow
def test_agent_mode_with_a_real_small_model(llama_server: str, kb: Ingestor, tmp_path: Path) -> None:
    """Whatever SmolLM2-135M plans and writes, the request finishes, bounded and validated."""
    settings = Settings(data_dir=tmp_path, default_collection="ops", llm_max_tokens=48, agent_seconds=120)
    provider = OpenAIProvider(base_url=llama_server, model="smollm2", max_tokens=48, timeout=120, retries=0)
    service = QueryService(settings, reader=reader_for(kb), provider=provider)
    response = _ask(service)
    assert response.steps[0].kind == "plan" and response.steps[0].input["planner"] in ("llm", "fallback")
    assert any(s.kind == "search" for s in response.steps) and response.steps[-1].kind in ("draft", "review")
    assert response.answer and all(1 <= c.n <= 10 for c in response.citations)
    assert all(f"[{c.n}]" in response.answer for c in response.citations), "only validated markers remain"
