"""Conversations: the follow-up rule (`server/answering/followup.py`), stored conversations over the real app
(`/v1/conversations`, per key, deletable, held answers stored too) and `ragkb eval conversations`."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from eval.conversations import ConversationSetError, evaluate_conversations, read_conversations
from ingest.config import Settings, get_settings
from ragkb.cli import app
from server.answering.entry import Answerer
from server.answering.followup import FollowUps, Standalone, Turn, standalone_question
from server.answering.providers import OpenAIProvider
from server.answering.service import QueryService
from server.http.api import create_app

from .browser import LiveServer
from .servers import LlamaCppServer, smollm2_gguf

runner = CliRunner()


@pytest.mark.parametrize(
    ("previous", "follow_up", "expected"),
    [
        ("How many people died in the Lion Air crash?", "And in the other crash?",
         "How many people died in the other crash?"),
        ("How many permit checks did Kentucky run in November 2015?", "And Indiana?",
         "How many permit checks did Indiana run in November 2015?"),
        ("What data type is CLIENT_HOST?", "What about CLIENT_IPADDR?", "What data type is CLIENT_IPADDR?"),
        ("Who argued for the petitioner in Knowles v. Mirzayance?", "And for the respondent?",
         "Who argued for the respondent in Knowles v. Mirzayance?"),
        ("When was Knowles v. Mirzayance argued?", "Where was it argued?", "Where was Knowles v. Mirzayance argued?"),
        ("How long has Hernando Bedoya worked in computing?", "Where did he get his master's?",
         "Where did Hernando Bedoya get his master's?"),
        ("How many handgun checks did Florida run in November 2015?", "And long guns?",
         "How many long guns checks did Florida run in November 2015?"),
        # no name to stand for the pronoun: the previous question follows, so retrieval keeps its subject
        ("When was the typewriter patented?", "And who patented it?",
         "Who patented it? (When was the typewriter patented?)"),
        # a question that stands on its own is asked as it is
        ("When was the typewriter patented?", "Which operating system did WordStar run on?",
         "Which operating system did WordStar run on?"),
    ],
)  # fmt: skip
def test_follow_ups_are_made_standalone(previous: str, follow_up: str, expected: str) -> None:
    assert standalone_question([Turn(previous, "some answer")], follow_up) == expected


def test_no_history_or_no_question_is_left_alone() -> None:
    assert standalone_question([], "And in 2019?") == "And in 2019?"
    assert standalone_question([Turn("When was it?")], "   ") == ""


def test_a_chain_keeps_its_subject() -> None:
    history: list[Turn] = []
    for question in ("How many votes did Neel Kashkari get in the Acton precinct?", "And Edmund G Brown?"):
        history.append(Turn(standalone_question(history, question)))
    asked = standalone_question(history, "And in the neighbouring precinct?")
    assert asked == "How many votes did Edmund G Brown get in the neighbouring precinct?"


@dataclass
class Live:
    url: str
    tokens: dict[str, str]

    def headers(self, key: str = "asker") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[key]}"}


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def docs(tmp_path: Path, shared_pdfs: Path) -> Path:
    folder = tmp_path / "pdf"
    folder.mkdir()
    shutil.copy(shared_pdfs / "docling" / "multi_page.pdf", folder)
    return folder


@pytest.fixture
def live(cli_env: Path, tmp_path: Path, docs: Path) -> Iterator[Live]:
    handbook = tmp_path / "handbook"
    handbook.mkdir()
    (handbook / "backup.md").write_text("# Backups\n\nBackups are kept for 30 days and then deleted.\n")
    _cli("ingest", str(docs), "-c", "docs", "--json")
    _cli("ingest", str(handbook), "-c", "handbook", "--json")
    settings = get_settings()
    answerer = Answerer.open(settings)
    try:
        answerer.desk.set_policy("handbook", "required", by="admin")
    finally:
        asyncio.run(answerer.aclose())
    tokens = {}
    for name in ("asker", "other"):
        tokens[name] = json.loads(_cli("keys", "create", "--name", name, "--scope", "read", "--all", "--json"))["token"]
    with LiveServer(create_app(settings)) as server:
        yield Live(server.url, tokens)


@pytest.mark.slow
def test_a_stored_conversation_answers_follow_ups(live: Live) -> None:
    url, headers = live.url, live.headers()
    made = httpx.post(f"{url}/v1/conversations", json={"collection": "docs"}, headers=headers)
    assert made.status_code == 201, made.text
    cid = made.json()["id"]
    first = httpx.post(
        f"{url}/v1/conversations/{cid}/messages",
        json={"question": "When was the typewriter patented?"},
        headers=headers,
    )
    assert first.status_code == 200, first.text
    assert "1868" in first.json()["response"]["answer"]
    second = httpx.post(
        f"{url}/v1/conversations/{cid}/messages", json={"question": "And who patented it?"}, headers=headers
    ).json()
    assert "typewriter" in second["response"]["standalone_question"]
    assert "Sholes" in second["response"]["answer"]
    assert {c["page"] for c in second["response"]["citations"]} == {1}

    read = httpx.get(f"{url}/v1/conversations/{cid}", headers=headers).json()
    assert [m["n"] for m in read["messages"]] == [1, 2]
    assert read["messages"][1]["question"] == "And who patented it?"
    assert read["messages"][1]["standalone_question"] == second["message"]["standalone_question"]

    # another key's conversation is as missing as one that does not exist
    for who, where in (("other", cid), ("asker", "no-such-conversation")):
        missing = httpx.get(f"{url}/v1/conversations/{where}", headers=live.headers(who))
        assert missing.status_code == 404 and missing.json()["code"] == "conversation_not_found"
    stolen = httpx.post(
        f"{url}/v1/conversations/{cid}/messages", json={"question": "And?"}, headers=live.headers("other")
    )
    assert stolen.status_code == 404
    empty = httpx.post(f"{url}/v1/conversations/{cid}/messages", json={"question": ""}, headers=headers)
    assert empty.status_code == 422
    assert len(httpx.get(f"{url}/v1/conversations/{cid}", headers=headers).json()["messages"]) == 2  # nothing lost

    assert httpx.delete(f"{url}/v1/conversations/{cid}", headers=live.headers("other")).status_code == 404
    assert httpx.delete(f"{url}/v1/conversations/{cid}", headers=headers).status_code == 204
    assert httpx.get(f"{url}/v1/conversations/{cid}", headers=headers).status_code == 404


@pytest.mark.slow
def test_a_held_turn_is_stored_with_its_review(live: Live) -> None:
    url, headers = live.url, live.headers()
    bad = httpx.post(f"{url}/v1/conversations", json={"collection": "nowhere"}, headers=headers)
    assert bad.status_code == 404 and bad.json()["code"] == "collection_not_found"
    cid = httpx.post(f"{url}/v1/conversations", json={"collection": "handbook"}, headers=headers).json()["id"]
    held = httpx.post(
        f"{url}/v1/conversations/{cid}/messages", json={"question": "How long are backups kept?"}, headers=headers
    )
    assert held.status_code == 202, held.text
    review_id = held.json()["held"]["review_id"]
    stored = httpx.get(f"{url}/v1/conversations/{cid}", headers=headers).json()["messages"]
    assert stored[0]["review_id"] == review_id and stored[0]["answer"] == ""


def _events(response: httpx.Response) -> list[tuple[str, dict[str, object]]]:
    found = []
    for block in response.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


@pytest.mark.slow
def test_a_turn_streams_and_is_stored_when_done(live: Live) -> None:
    """`stream: true` (the web page's thread): `POST /v1/query`'s events, the `done` answer carrying the
    standalone question; the turn is stored; a held answer is still a 202 JSON reply."""
    url, headers = live.url, live.headers()
    cid = httpx.post(f"{url}/v1/conversations", json={"collection": "docs"}, headers=headers).json()["id"]
    path = f"{url}/v1/conversations/{cid}/messages"
    first = httpx.post(path, json={"question": "When was the typewriter patented?", "stream": True}, headers=headers)
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/event-stream")
    events = _events(first)
    assert [name for name, _ in events].count("done") == 1 and events[-1][0] == "done"
    assert sum(name == "token" for name, _ in events) > 1, "tokens arrive one by one"
    second = _events(httpx.post(path, json={"question": "And who patented it?", "stream": True}, headers=headers))
    done = second[-1][1]
    assert "typewriter" in str(done["standalone_question"]) and "Sholes" in str(done["answer"])
    stored = httpx.get(f"{url}/v1/conversations/{cid}", headers=headers).json()["messages"]
    assert [m["question"] for m in stored] == ["When was the typewriter patented?", "And who patented it?"]
    assert stored[1]["standalone_question"] == done["standalone_question"] and stored[1]["answer"] == done["answer"]

    held_in = httpx.post(f"{url}/v1/conversations", json={"collection": "handbook"}, headers=headers).json()["id"]
    held = httpx.post(
        f"{url}/v1/conversations/{held_in}/messages",
        json={"question": "How long are backups kept?", "stream": True},
        headers=headers,
    )
    assert held.status_code == 202 and held.json()["held"]["review_id"]


@pytest.mark.slow
def test_eval_conversations_scores_follow_ups(cli_env: Path, tmp_path: Path, docs: Path) -> None:
    rows = [
        {"id": "t1", "split": "tune", "turns": [
            {"question": "When was the typewriter patented?", "answer": "1868", "source": "multi_page.pdf", "page": 1},
            {"question": "And who patented it?", "answer": "Christopher Latham Sholes", "source": "multi_page.pdf",
             "page": 1},
        ]},
        {"id": "t2", "split": "check", "turns": [
            {"question": "When did Microsoft launch Word?", "answer": "1983", "source": "multi_page.pdf", "page": 1},
            {"question": "And the moon landing?", "answer": None, "source": None, "page": None},
        ]},
    ]  # fmt: skip
    path = tmp_path / "conversations.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = evaluate_conversations(QueryService(get_settings()), path, [docs], half="tune")
    assert report["num_follow_ups"] == 1 and report["num_answerable"] == 1
    assert report["metrics"]["right_page"] == 1.0 and report["metrics"]["answer_found"] == 1.0
    assert report["follow_ups"][0]["asked"] != "And who patented it?"
    assert set(report["as_asked"]) == set(report["metrics"])
    assert report["metrics"]["right_page_retrieved"] == 1.0 and report["follow_ups"][0]["retrieved"]
    assert report["rewrites"] == {"rule": 1}
    quick = evaluate_conversations(QueryService(get_settings()), path, [docs], half="check", answers=False)
    assert set(quick["metrics"]) == {"right_page_retrieved"} and quick["num_answerable"] == 0

    # a model rewrites (the real wire protocol, on a mock transport), the extractive provider answers
    answering = QueryService(get_settings())
    model = OpenAIProvider(
        base_url="http://llm.test/v1",
        model="m",
        retries=0,
        transport=httpx.MockTransport(lambda _: _completion("Who patented the typewriter?")),
    )
    rewriter = QueryService(get_settings(), reader=answering.reader, provider=model)
    mixed = evaluate_conversations(answering, path, [docs], half="tune", as_asked=False, rewriter=rewriter)
    assert mixed["rewrites"] == {"llm": 1} and mixed["follow_ups"][0]["asked"] == "Who patented the typewriter?"
    assert mixed["provider"] == "extractive" and mixed["rewritten_with"]["provider"] == "openai"
    assert mixed["metrics"]["right_page"] == 1.0
    refused = runner.invoke(app, ["eval", "conversations", str(path), "-d", str(docs), "--answers-with", "nowhere"])
    assert refused.exit_code == 2 and "choose one of: extractive, openai" in refused.stderr

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "turns": [{"question": "one turn"}]}\n')
    with pytest.raises(ConversationSetError, match="at least two turns"):
        read_conversations(bad)
    bad.write_text('{"id": "x"}\n')
    with pytest.raises(ConversationSetError, match=r"bad.jsonl:1: expected"):
        read_conversations(bad)
    with pytest.raises(ConversationSetError, match="no conversations in half 'nope'"):
        read_conversations(path, half="nope")


# -- with an LLM: the versioned prompt, its reply checked, the rule when the reply or the model fails ----------


def _llm_service(kb_settings: Path, reply: Callable[[httpx.Request], httpx.Response]) -> QueryService:
    provider = OpenAIProvider(
        base_url="http://llm.test/v1", model="m", retries=0, transport=httpx.MockTransport(reply), max_tokens=64
    )
    return QueryService(Settings(data_dir=kb_settings), provider=provider)


def _completion(text: str) -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})


HISTORY = [Turn("How many votes did Neel Kashkari get in the Acton precinct?", "NEEL KASHKARI 247 [1]")]


def test_an_llm_rewrites_with_the_followup_prompt(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def llm(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return _completion("Standalone question: How many votes did Edmund G Brown get in the Acton precinct?\n")

    service = _llm_service(tmp_path, llm)
    made = asyncio.run(FollowUps(service).standalone(HISTORY, "And Edmund G Brown?"))
    assert made == Standalone("How many votes did Edmund G Brown get in the Acton precinct?", "llm")
    user = seen[0]["messages"][-1]["content"]
    assert "Q: How many votes did Neel Kashkari" in user and "A: NEEL KASHKARI 247" in user
    assert "Last question: And Edmund G Brown?" in user
    assert asyncio.run(FollowUps(service).standalone([], "  First?  ")) == Standalone("First?", "first")


@pytest.mark.parametrize(
    "reply",
    [
        lambda _: _completion(""),  # nothing
        lambda _: _completion("x" * 2000),  # not a question
        lambda _: httpx.Response(500, json={"error": "boom"}),  # the model fails
        lambda _: _completion("How many votes did Neel Kashkari get?"),  # drops what the follow-up names
    ],
)
def test_an_unusable_llm_reply_falls_back_to_the_rule(
    tmp_path: Path, reply: Callable[[httpx.Request], httpx.Response]
) -> None:
    made = asyncio.run(FollowUps(_llm_service(tmp_path, reply)).standalone(HISTORY, "And Edmund G Brown?"))
    assert made == Standalone("How many votes did Edmund G Brown get in the Acton precinct?", "llm_fallback")


def test_the_extractive_provider_uses_the_rule(tmp_path: Path) -> None:
    service = QueryService(Settings(data_dir=tmp_path))
    made = asyncio.run(FollowUps.of(service).standalone(HISTORY, "And Edmund G Brown?"))
    assert made.how == "rule" and FollowUps.of(service) is FollowUps.of(service)


@pytest.mark.slow
def test_the_local_llama_cpp_model_rewrites_a_follow_up(tmp_path: Path) -> None:
    with LlamaCppServer(smollm2_gguf()) as base_url:
        provider = OpenAIProvider(base_url=base_url, model="smollm2", max_tokens=48, timeout=120, retries=0)
        service = QueryService(Settings(data_dir=tmp_path), provider=provider)
        made = asyncio.run(FollowUps(service).standalone(HISTORY, "And Edmund G Brown?"))
    assert made.how in ("llm", "llm_fallback") and made.question.strip()
