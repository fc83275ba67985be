"""The OpenAI-compatible door (`GET /v1/models`, `POST /v1/chat/completions`) driven by the official `openai`
package, sync, async and streaming, against the real app on a loopback port with keys from `ragkb keys create`:
collections as models, cited answers, a follow-up from the `messages` history, a held answer, and errors in
OpenAI's shape."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from ingest.config import get_settings
from ragkb.cli import app
from server.answering.entry import Answerer
from server.http.api import create_app

from .browser import LiveServer

runner = CliRunner()
DOCS, HANDBOOK = "docs", "handbook"
HANDBOOK_TEXT = "# Backups\n\nThe nightly backup runs at 02:00. Backups are kept for 30 days and then deleted.\n"


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.stdout + result.stderr
    return result.stdout


@dataclass
class Live:
    url: str
    tokens: dict[str, str]

    def client(self, key: str = "asker") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.tokens[key], max_retries=0)


@pytest.fixture
def live(cli_env: Path, tmp_path: Path, shared_pdfs: Path) -> Iterator[Live]:
    """`multi_page.pdf` (a history of word processing) in `docs`; a handbook whose review policy is
    `required`; a key for every collection and one limited to `docs`."""
    docs = tmp_path / "pdf"
    docs.mkdir()
    shutil.copy(shared_pdfs / "docling" / "multi_page.pdf", docs)
    handbook = tmp_path / "handbook"
    handbook.mkdir()
    (handbook / "backup.md").write_text(HANDBOOK_TEXT)
    _cli("ingest", str(docs), "-c", DOCS, "--json")
    _cli("ingest", str(handbook), "-c", HANDBOOK, "--json")
    settings = get_settings()
    answerer = Answerer.open(settings)
    try:
        answerer.desk.set_policy(HANDBOOK, "required", by="admin")
    finally:
        asyncio.run(answerer.aclose())
    tokens = {}
    for name, where in (("asker", ["--all"]), ("limited", ["--collections", DOCS])):
        out = _cli("keys", "create", "--name", name, "--scope", "read", *where, "--json")
        tokens[name] = json.loads(out)["token"]
    with LiveServer(create_app(settings)) as server:
        yield Live(server.url, tokens)


@pytest.mark.slow
def test_models_are_the_collections_a_key_may_read(live: Live) -> None:
    ids = sorted(m.id for m in live.client().models.list())
    assert ids == ["ragkb:docs", "ragkb:docs:agent", "ragkb:handbook", "ragkb:handbook:agent"]
    assert [m.id for m in live.client("limited").models.list()] == ["ragkb:docs", "ragkb:docs:agent"]


@pytest.mark.slow
def test_a_cited_answer_and_a_follow_up_from_the_messages(live: Live) -> None:
    client = live.client()
    first = client.chat.completions.create(
        model="ragkb:docs",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "When was the typewriter patented?"},
        ],
        temperature=0.2,
        max_tokens=200,
        extra_body={"frequency_penalty": 0, "some_unknown_field": True},  # ignored, as OpenAI's servers do
    )
    message = first.choices[0].message
    assert first.object == "chat.completion" and first.model == "ragkb:docs"
    assert first.choices[0].finish_reason == "stop"
    assert message.content is not None and "1868" in message.content and "[1]" in message.content
    citations = (message.model_extra or {})["ragkb_citations"]
    assert citations and citations[0]["n"] == 1 and citations[0]["page"] == 1
    assert "\n\nSources:\n[1] " in message.content and "multi_page.pdf" in message.content

    follow_up = client.chat.completions.create(
        model="ragkb:docs",
        messages=[
            {"role": "user", "content": "When was the typewriter patented?"},
            {"role": "assistant", "content": message.content},
            {"role": "user", "content": [{"type": "text", "text": "And who patented it?"}]},
        ],
    )
    extra = follow_up.model_extra or {}
    assert "typewriter" in extra["ragkb"]["standalone_question"]
    text = follow_up.choices[0].message.content or ""
    assert "Sholes" in text
    pages = {c["page"] for c in (follow_up.choices[0].message.model_extra or {})["ragkb_citations"]}
    assert pages == {1}


@pytest.mark.slow
def test_streaming_sync_and_async(live: Live) -> None:
    stream = live.client().chat.completions.create(
        model="ragkb:docs", messages=[{"role": "user", "content": "When did Microsoft launch Word?"}], stream=True
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "1983" in text and "Sources:" in text
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert (last.choices[0].delta.model_extra or {})["ragkb_citations"][0]["page"] == 1
    assert (last.model_extra or {})["ragkb"]["collection"] == DOCS

    async def streamed() -> str:
        client = openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key=live.tokens["asker"], max_retries=0)
        async with client:
            reply = await client.chat.completions.create(
                model="ragkb:docs:agent",
                messages=[{"role": "user", "content": "When did Microsoft launch Word?"}],
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in reply])

    assert "1983" in asyncio.run(streamed())

    async def whole() -> str:
        client = openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key=live.tokens["asker"], max_retries=0)
        async with client:
            done = await client.chat.completions.create(
                model="ragkb:docs", messages=[{"role": "user", "content": "When was the typewriter patented?"}]
            )
            return done.choices[0].message.content or ""

    assert "1868" in asyncio.run(whole())


@pytest.mark.slow
def test_a_held_answer_says_so(live: Live) -> None:
    client = live.client()
    messages: Any = [{"role": "user", "content": "How long are backups kept?"}]
    held = client.chat.completions.create(model="ragkb:handbook", messages=messages)
    message = held.choices[0].message
    review = (message.model_extra or {})["ragkb_held"]
    assert "held for review" in (message.content or "") and review["review_id"] in (message.content or "")
    assert review["answer_url"] == f"/v1/answers/{review['review_id']}"
    chunks = list(client.chat.completions.create(model="ragkb:handbook", messages=messages, stream=True))
    assert "held for review" in "".join(c.choices[0].delta.content or "" for c in chunks)
    assert (chunks[-1].model_extra or {})["ragkb"]["origin"] == "held"


@pytest.mark.slow
def test_errors_have_openai_shape(live: Live) -> None:
    user: Any = [{"role": "user", "content": "When was the typewriter patented?"}]
    bad = openai.OpenAI(base_url=f"{live.url}/v1", api_key="rk_not_a_key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        bad.chat.completions.create(model="ragkb:docs", messages=user)
    assert unauthorized.value.status_code == 401 and unauthorized.value.code == "unauthorized"
    assert unauthorized.value.type == "authentication_error"

    limited = live.client("limited")
    for model in ("ragkb:handbook", "ragkb:nowhere", "gpt-4o", "ragkb:docs:turbo"):
        with pytest.raises(openai.NotFoundError) as missing:
            limited.chat.completions.create(model=model, messages=user)
        assert missing.value.code == "model_not_found", model
        assert "GET /v1/models" in missing.value.message

    with pytest.raises(openai.BadRequestError) as no_question:
        live.client().chat.completions.create(
            model="ragkb:docs", messages=[*user, {"role": "assistant", "content": "Hi"}]
        )
    assert no_question.value.code == "validation" and "user" in no_question.value.message

    # the raw wire: OpenAI's error body on these routes, ragkb's own everywhere else
    raw = httpx.post(f"{live.url}/v1/chat/completions", json={"model": "ragkb:docs"}, headers=_auth(live))
    assert raw.status_code == 400
    assert set(raw.json()["error"]) == {"message", "type", "code", "param"}
    assert raw.json()["request_id"] == raw.headers["X-Request-ID"]
    assert "messages" in raw.json()["error"]["message"]
    own = httpx.post(f"{live.url}/v1/query", json={}, headers=_auth(live))
    assert own.status_code == 422 and own.json()["code"] == "validation"
    empty = httpx.post(
        f"{live.url}/v1/chat/completions",
        json={"model": "ragkb:docs", "messages": [{"role": "user", "content": "   "}]},
        headers=_auth(live),
    )
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "bad_question"


@pytest.mark.slow
def test_sources_list_off(cli_env: Path, tmp_path: Path, shared_pdfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = tmp_path / "pdf"
    docs.mkdir()
    shutil.copy(shared_pdfs / "docling" / "multi_page.pdf", docs)
    _cli("ingest", str(docs), "-c", DOCS, "--json")
    monkeypatch.setenv("RAGKB_OPENAI_SOURCES_IN_TEXT", "false")
    get_settings.cache_clear()
    with LiveServer(create_app(get_settings())) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused: no key exists", max_retries=0)
        reply = client.chat.completions.create(
            model="ragkb:docs", messages=[{"role": "user", "content": "When was the typewriter patented?"}]
        )
    message = reply.choices[0].message
    assert "Sources:" not in (message.content or "") and "[1]" in (message.content or "")
    assert (message.model_extra or {})["ragkb_citations"]


def _auth(live: Live) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.tokens['asker']}"}


@pytest.mark.slow
def test_openapi_documents_the_doors(live: Live) -> None:
    spec = httpx.get(f"{live.url}/openapi.json").json()
    for path in ("/v1/models", "/v1/chat/completions", "/v1/conversations", "/v1/conversations/{conversation_id}"):
        assert path in spec["paths"], path
    schemas = spec["components"]["schemas"]
    assert "ragkb_citations" in schemas["AssistantMessage"]["properties"]
    assert "standalone_question" in schemas["QueryResponse"]["properties"]
    errors = spec["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert errors["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/OpenAIErrorBody")
