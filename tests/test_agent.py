"""Agent mode with the offline extractive provider: the deterministic planner, typed tools that refuse bad
arguments, the API (JSON and SSE), bounds, the trace, metrics, the answer cache, the CLI and the eval."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from eval.qa import Evidence, QAItem, judge, read_question_set, score
from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from ragkb.cli import app as cli_app
from server.agent import AgentRunner, RulePlanner, ToolArgumentError, Toolbox
from server.agent.tools import validate_call
from server.answering.service import QueryService
from server.http.api import create_app
from server.metrics import AGENT_BUDGET_EXHAUSTED, AGENT_TOOL_CALLS
from server.schemas import Citation, PromptInfo, QueryResponse, Timings

from .helpers import reader_for

REPO = Path(__file__).resolve().parents[1]
TWO_PARTS = "When does the nightly backup run, and how long does the answer cache keep answers?"


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Ingestor:
    settings = Settings(data_dir=tmp_path_factory.mktemp("agent-kb"), default_collection="ops")
    ingestor = Ingestor(settings, embedder=embedder)
    root = tmp_path_factory.mktemp("agent-docs")
    (root / "backups.md").write_text(
        "# Backups\n\nThe nightly backup runs at 02:00 and copies the data directory to the archive server.\n\n"
        "## Restores\n\nA restore takes about twenty minutes for a typical knowledge base.\n"
    )
    (root / "cache.md").write_text("# Cache\n\nThe answer cache keeps answers for seven days.\n")
    (root / "keys.md").write_text("# Keys\n\nAPI keys are stored hashed with SHA-256 in the state database.\n")
    assert ingestor.ingest_paths([root], collection="ops").added == 3
    return ingestor


def _service(kb: Ingestor, tmp_path: Path, **settings: Any) -> QueryService:
    return QueryService(Settings(data_dir=tmp_path, default_collection="ops", **settings), reader=reader_for(kb))


@pytest.fixture
def client(kb: Ingestor, tmp_path: Path) -> Iterator[TestClient]:
    service = _service(kb, tmp_path)
    with TestClient(create_app(service.settings, service)) as test_client:
        yield test_client


def _events(body: str) -> list[tuple[str, dict[str, Any]]]:
    blocks = [block.split("\n", 1) for block in body.strip().split("\n\n")]
    return [(name.removeprefix("event: "), json.loads(data.removeprefix("data: "))) for name, data in blocks]


# -- the deterministic planner --------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "parts"),
    [
        ("When was the AD issued, and how many airplanes does it affect?", 2),
        ("Who signed the AD? What part number does the software have?", 2),
        ("What is the difference between the IAS DISAGREE and the AOA DISAGREE alert thresholds?", 2),
        ("Compare the ALT DISAGREE threshold with the AOA DISAGREE threshold.", 2),
        ("What are the data types of the USER_NAME column and of the PACKAGE_VERSION variable?", 2),
        ("What is the cost of the sensor test, the wiring change and the MEL revision?", 3),
        ("How many people died in the Lion Air accident?", 1),
        ("How do I install and configure ragkb?", 1),  # a verb pair is one question, not two
    ],
)
def test_rule_planner_splits_joined_questions_comparisons_and_lists(question: str, parts: int) -> None:
    subs, _ = RulePlanner().split(question, limit=3)
    assert len(subs) == parts, [s.question for s in subs]
    if parts == 1:
        assert subs[0].question == question and subs[0].call() == ("search", {"query": question})


def test_rule_planner_carries_the_topic_into_a_part_that_points_back() -> None:
    subs, _ = RulePlanner().split("When was the Emergency AD issued, and how many airplanes does it affect?", 3)
    tool, args = subs[1].call()
    assert tool == "search" and subs[1].question == "How many airplanes does it affect?"
    assert "Emergency AD" in args["query"], "'it' is searched with what it points at"


def test_rule_planner_keeps_at_most_the_limit_of_parts() -> None:
    subs, notes = RulePlanner().split("Who? What is A? When is B? Where is C? How is D?", 2)
    assert len(subs) == 2 and "kept the first 2" in notes[0]


# -- the tools ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("delete", {"document_id": "x"}, "unknown tool 'delete'; tools: list_documents, read, search"),
        ("search", {}, "query: Field required"),
        ("search", {"query": "x", "retriever": "magic"}, "unknown retriever 'magic'; choose one of:"),
        ("search", {"query": "x", "collection": "other"}, "collection: Extra inputs are not permitted"),
        ("search", {"query": "x", "filters": {"where": {"colour": "red"}}}, "unknown field 'colour'; filterable"),
        ("read", {"document_id": "d"}, "give exactly one of page, heading or around_chunk (got none)"),
        ("read", {"document_id": "d", "page": 1, "heading": "A"}, "(got page, heading)"),
        ("read", {"document_id": "d", "page": 0}, "page: Input should be greater than or equal to 1"),
        ("list_documents", {"source_glob": ""}, "source_glob"),
    ],
)
def test_tool_arguments_that_fail_validation_name_the_problem(tool: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolArgumentError) as caught:
        validate_call(tool, args)
    assert message in str(caught.value)


def test_invalid_calls_are_not_executed_and_valid_ones_are_cached(kb: Ingestor, tmp_path: Path) -> None:
    service = _service(kb, tmp_path)
    toolbox = Toolbox(service, service.query("backups", collection="ops"))
    invalid = AGENT_TOOL_CALLS.labels(tool="search", outcome="invalid")._value.get()
    with pytest.raises(ToolArgumentError):
        toolbox.call("search", {"query": "backup", "top_k": 500})
    assert AGENT_TOOL_CALLS.labels(tool="search", outcome="invalid")._value.get() == invalid + 1
    assert toolbox.results == {}, "nothing ran"
    first = toolbox.call("search", {"query": "nightly backup", "top_k": 2})
    again = toolbox.call("search", {"query": "nightly backup", "top_k": 2})
    assert not first.cached and again.cached and again.chunks == first.chunks and len(first.chunks) == 2
    with pytest.raises(ToolArgumentError, match="only the request's collection 'ops'"):
        toolbox.call("list_documents", {"collection": "secret"})
    listed = toolbox.call("list_documents", {"source_glob": "*backups*"})
    assert listed.summary.startswith("1 documents:") and "backups.md" in listed.summary
    document = first.chunks[0].document_id
    page = toolbox.call("read", {"document_id": document, "heading": "Restores"})
    assert page.chunks and all("Restores" in (c.provenance().heading or "") for c in page.chunks)
    around = toolbox.call("read", {"document_id": document, "around_chunk": first.chunks[0].chunk_id})
    assert first.chunks[0].chunk_id in [c.chunk_id for c in around.chunks]


# -- agent mode through the API -------------------------------------------------------------


def test_agent_mode_answers_every_part_with_citations_from_several_documents(client: TestClient) -> None:
    single = client.post("/v1/query", json={"question": TWO_PARTS}).json()
    agent = client.post("/v1/query", json={"question": TWO_PARTS, "mode": "agent"}).json()
    assert single["steps"] == [] and single["truncated"] is False
    kinds = [s["kind"] for s in agent["steps"]]
    assert kinds == ["plan", "search", "search", "draft"], kinds
    plan = agent["steps"][0]
    assert plan["input"]["planner"] == "rules" and "2 sub-question(s)" in plan["output"]
    assert all(s["ms"] >= 0 for s in agent["steps"]) and agent["steps"][1]["chunk_ids"]
    assert {c["source"].rsplit("/", 1)[-1] for c in agent["citations"]} == {"backups.md", "cache.md"}
    assert "02:00" in agent["answer"] and "seven days" in agent["answer"]
    assert agent["grounded"] and agent["truncated"] is False and agent["cached"] is False
    assert len({c["source"] for c in single["citations"]}) <= len({c["source"] for c in agent["citations"]})


def test_a_one_part_question_gets_the_single_shot_answer(client: TestClient) -> None:
    question = "How long does the answer cache keep answers?"
    single = client.post("/v1/query", json={"question": question}).json()
    agent = client.post("/v1/query", json={"question": question, "mode": "agent"}).json()
    assert [s["kind"] for s in agent["steps"]] == ["plan", "search", "draft"]
    assert agent["answer"] == single["answer"] and agent["citations"] == single["citations"]
    assert agent["confidence"] == single["confidence"]


def test_agent_mode_streams_each_step_then_done(client: TestClient) -> None:
    body = {"question": TWO_PARTS, "mode": "agent", "stream": True}
    with client.stream("POST", "/v1/query", json=body) as response:
        assert response.status_code == 200
        events = _events("".join(response.iter_text()))
    names = [name for name, _ in events]
    assert names == ["step", "step", "step", "step", "done"], names
    assert [data["kind"] for _, data in events[:-1]] == ["plan", "search", "search", "draft"]
    done = events[-1][1]
    assert [s["kind"] for s in done["steps"]] == ["plan", "search", "search", "draft"] and done["grounded"]


def test_the_final_answer_is_cached_under_the_agent_key(client: TestClient) -> None:
    question = "When does the nightly backup run, and where are API keys stored?"
    first = client.post("/v1/query", json={"question": question, "mode": "agent"}).json()
    again = client.post("/v1/query", json={"question": question, "mode": "agent"}).json()
    single = client.post("/v1/query", json={"question": question}).json()
    assert first["cached"] is False and first["grounded"]
    assert again["cached"] is True and again["answer"] == first["answer"]
    assert again["steps"][-1]["kind"] == "cache" and again["request_id"] != first["request_id"]
    assert single["cached"] is False and single["steps"] == [], "single-shot never reads the agent's entry"


@pytest.mark.parametrize(
    ("bound", "value", "budget"), [("agent_max_steps", 2, "steps"), ("agent_seconds", 1e-6, "seconds")]
)
def test_a_spent_budget_returns_the_best_validated_answer_truncated(
    kb: Ingestor, tmp_path: Path, bound: str, value: float, budget: str
) -> None:
    service = _service(kb, tmp_path, **{bound: value})
    before = AGENT_BUDGET_EXHAUSTED.labels(budget=budget)._value.get()
    response = asyncio.run(AgentRunner(service).answer(TWO_PARTS, collection="ops"))
    assert response.truncated is True
    assert AGENT_BUDGET_EXHAUSTED.labels(budget=budget)._value.get() == before + 1
    assert [s.kind for s in response.steps][-1] == "draft"
    assert len([s for s in response.steps if s.kind == "search"]) < 2, "the bound stopped the searches"
    assert not response.citations or response.grounded, "whatever is returned is validated"
    again = asyncio.run(AgentRunner(service).answer(TWO_PARTS, collection="ops"))
    assert again.cached is False, "a truncated answer is never cached"


def test_bad_agent_requests_fail_before_anything_starts(client: TestClient) -> None:
    bad_mode = client.post("/v1/query", json={"question": "x", "mode": "deep"})
    assert bad_mode.status_code == 422 and bad_mode.json()["code"] == "validation"
    assert "mode" in bad_mode.json()["error"]
    for stream in (False, True):
        body = {"question": "backups?", "mode": "agent", "collection": "ghost", "stream": stream}
        missing = client.post("/v1/query", json=body)
        assert missing.status_code == 404 and missing.json()["code"] == "collection_not_found"
    empty = client.post("/v1/query", json={"question": "   ", "mode": "agent"})
    assert empty.status_code == 422 and empty.json()["code"] == "bad_question"
    retriever = client.post("/v1/query", json={"question": "backups?", "mode": "agent", "retriever": "magic"})
    assert retriever.status_code == 422 and retriever.json()["code"] == "unknown_retriever"


def test_steps_and_tool_calls_reach_the_metrics(client: TestClient) -> None:
    client.post(
        "/v1/query", json={"question": "Where are API keys stored, and what does a restore take?", "mode": "agent"}
    )
    text = client.get("/metrics").text
    assert "ragkb_agent_steps_count" in text
    assert 'ragkb_agent_tool_calls_total{outcome="ok",tool="search"}' in text
    assert "ragkb_agent_budget_exhausted_total" in text


def test_every_step_is_logged_with_the_request_id(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="ragkb.agent"):
        client.post(
            "/v1/query",
            json={"question": "What does a restore take, and how long are answers cached?", "mode": "agent"},
            headers={"X-Request-ID": "agent-trace-1"},
        )
    steps = [r for r in caplog.records if r.name == "ragkb.agent" and getattr(r, "step", None)]
    assert [getattr(r, "step", None) for r in steps] == ["plan", "search", "search", "draft"]
    assert {getattr(r, "request_id", None) for r in steps} == {"agent-trace-1"}


# -- the CLI and the eval -------------------------------------------------------------------


def test_ask_agent_in_process_prints_the_trace(cli_env: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "backups.md").write_text("# Backups\n\nThe nightly backup runs at 02:00 every day.\n")
    (tmp_path / "cache.md").write_text("# Cache\n\nThe answer cache keeps answers for seven days.\n")
    ingest = runner.invoke(cli_app, ["ingest", str(tmp_path / "backups.md"), str(tmp_path / "cache.md"), "-c", "ops"])
    assert ingest.exit_code == 0, ingest.output
    result = runner.invoke(cli_app, ["ask", "--agent", "-c", "ops", TWO_PARTS, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["kind"] for s in data["steps"]][:2] == ["plan", "search"] and len(data["citations"]) >= 2
    plain = runner.invoke(cli_app, ["ask", "--agent", "-c", "ops", TWO_PARTS])
    assert plain.exit_code == 0 and "plan" in plain.stderr and "[1]" in plain.stdout


def _response(answer: str, citations: list[tuple[str, int | None, str | None]]) -> QueryResponse:
    cited = [
        Citation(n=n, snippet="", chunk_id=f"c{n}", document_id="d", source=f"docs/{source}", title="", page=page,
                 heading=heading, start=0, end=1, score=1.0)
        for n, (source, page, heading) in enumerate(citations, start=1)
    ]  # fmt: skip
    return QueryResponse(
        answer=answer, citations=cited, grounded=True, cached=False, model="m", provider="p",
        prompt=PromptInfo(name="answer", version="2"), timings=Timings(retrieve_ms=0, llm_ms=0, total_ms=0),
        request_id="r", collection="c", retriever="hybrid",
    )  # fmt: skip


def test_full_evidence_needs_every_place_and_recall_counts_every_string() -> None:
    item = QAItem(
        "m1", "q", "189", "fr.pdf", 2, "multi-joined", "tune", ("189", "73 airplanes"),
        (Evidence("fr.pdf", 2), Evidence("guide.md", heading="Storage")),
    )  # fmt: skip
    half = judge(item, _response("189 died [1].", [("fr.pdf", 2, None)]), 1.0)
    full = judge(
        item, _response("189 [1]; 73 Airplanes [2].", [("fr.pdf", 2, None), ("guide.md", None, "G > Storage")]), 1.0
    )
    assert (half.full_evidence, half.answers_found, half.right_page) == (False, 1, True)
    assert (full.full_evidence, full.answers_found, full.answers_needed) == (True, 2, 2)
    assert score([half, full])["full_evidence"] == 0.5 and score([half, full])["answer_recall"] == 0.75


def test_the_multipart_dev_set_is_well_formed() -> None:
    items = read_question_set(REPO / "eval" / "datasets" / "multipart-dev.jsonl")
    multi = [i for i in items if i.kind.startswith("multi-")]
    controls = [i for i in items if i.kind.startswith("control")]
    assert len(multi) >= 30 and len(controls) >= 10
    assert all(len(i.needed_evidence) >= 2 and len(i.needed_answers) == len(i.needed_evidence) for i in multi)
    assert all(len({(e.source, e.page, e.heading) for e in i.needed_evidence}) >= 2 for i in multi)
    assert len({i.id for i in items}) == len(items)


def test_eval_qa_refuses_an_unknown_mode_before_ingesting(cli_env: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app,
        ["eval", "qa", str(REPO / "eval/datasets/multipart-dev.jsonl"), "-d", str(tmp_path), "--mode", "deep"],
    )
    assert result.exit_code == 2 and "unknown mode 'deep'; choose one of: single, agent" in result.stderr
