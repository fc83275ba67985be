"""`ragkb.client` (Client and AsyncClient) against the real app on a loopback port with keys from `ragkb keys
create`: upload, documents, ask (JSON and streamed), retrieve, a held answer approved by a reviewer, errors. And
the client's import stays light: no torch, no server code."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from typer.testing import CliRunner

from ingest.config import get_settings
from ragkb.cli import app
from ragkb.client import ApiError, AsyncClient, Client, Unreachable
from ragkb.client_models import Answer, DoneEvent, HeldAnswer, HeldEvent, JobsQueued, TokenEvent, UploadResult
from server.answering.entry import Answerer
from server.http.api import create_app

from .browser import LiveServer
from .servers import free_port

runner = CliRunner()
BACKUP = "# Backups\n\nThe nightly backup runs at 02:00. Backups are kept for 30 days and then deleted.\n"
LEAVE = "# Leave\n\nEmployees get 25 days of paid leave per year.\n"


@dataclass
class Live:
    url: str
    tokens: dict[str, str]

    def client(self, key: str) -> Client:
        return Client(self.url, api_key=self.tokens[key])


@pytest.fixture
def live(cli_env: Path) -> Iterator[Live]:
    tokens = {}
    for name, scope in (("asker", "read"), ("writer", "write"), ("reviewer", "review")):
        out = runner.invoke(app, ["keys", "create", "--name", name, "--scope", scope, "--all", "--json"])
        assert out.exit_code == 0, out.stdout
        tokens[name] = json.loads(out.stdout)["token"]
    with LiveServer(create_app(get_settings())) as server:
        yield Live(server.url, tokens)


@pytest.mark.slow
def test_upload_documents_ask_stream_retrieve(live: Live, tmp_path: Path) -> None:
    (tmp_path / "backup.md").write_text(BACKUP)
    with live.client("writer") as writer:
        uploaded = writer.upload("handbook", [tmp_path / "backup.md"])
    assert isinstance(uploaded, UploadResult) and uploaded.added == 1 and uploaded.chunks_added >= 1

    with live.client("asker") as kb:
        assert [c.name for c in kb.collections()] == ["handbook"]
        (doc,) = kb.documents("handbook")
        assert doc.source.endswith("backup.md") and doc.chunk_count >= 1

        reply = kb.ask("How long are backups kept?", collection="handbook")
        assert isinstance(reply, Answer) and "30 days" in reply.answer and reply.grounded
        assert reply.citations[0].n == 1 and reply.citations[0].source.endswith("backup.md")

        events = list(kb.ask_stream("How long are backups kept?", collection="handbook"))
        assert any(isinstance(e, TokenEvent) for e in events)
        done = events[-1]
        assert isinstance(done, DoneEvent) and "30 days" in done.answer.answer

        found = kb.retrieve("nightly backup", collection="handbook", top_k=1)
        assert len(found.chunks) == 1 and "02:00" in found.chunks[0].text

        with pytest.raises(ApiError) as missing:
            kb.ask("How long are backups kept?", collection="nowhere")
        assert missing.value.status == 404 and missing.value.code == "collection_not_found"
        assert missing.value.request_id
        with pytest.raises(ApiError) as forbidden:  # a read key may not upload
            kb.upload("handbook", [tmp_path / "backup.md"])
        assert forbidden.value.status == 403
        with pytest.raises(ApiError) as no_queue:
            kb.job("some-job")
        assert no_queue.value.code == "queue_not_configured"
    with pytest.raises(ValueError, match="at least one file"):
        Client(live.url).upload("handbook", [])
    with pytest.raises(ApiError) as unauthorized, Client(live.url, api_key="rk_nope") as bad:
        bad.collections()
    assert unauthorized.value.status == 401


@pytest.mark.slow
def test_async_client(live: Live, tmp_path: Path) -> None:
    (tmp_path / "leave.md").write_text(LEAVE)

    async def run() -> None:
        async with AsyncClient(live.url, api_key=live.tokens["writer"]) as writer:
            uploaded = await writer.upload("people", [tmp_path / "leave.md"])
            assert not isinstance(uploaded, JobsQueued) and uploaded.added == 1
        async with AsyncClient(live.url, api_key=live.tokens["asker"]) as kb:
            reply = await kb.ask("How many days of paid leave do employees get?", collection="people")
            assert isinstance(reply, Answer) and "25 days" in reply.answer
            events = [e async for e in kb.ask_stream("How many days of paid leave?", collection="people", mode="agent")]
            assert isinstance(events[-1], DoneEvent) and "25 days" in events[-1].answer.answer
            assert (await kb.retrieve("paid leave", collection="people")).chunks
            assert [d.title for d in await kb.documents("people")]

    asyncio.run(run())


@pytest.mark.slow
def test_a_held_answer_waits_for_the_reviewer(live: Live, tmp_path: Path) -> None:
    (tmp_path / "backup.md").write_text(BACKUP)
    with live.client("writer") as writer:
        writer.upload("handbook", [tmp_path / "backup.md"])
    answerer = Answerer.open(get_settings())
    try:
        answerer.desk.set_policy("handbook", "required", by="admin")
    finally:
        asyncio.run(answerer.aclose())
    with live.client("asker") as kb, live.client("reviewer") as reviewer:
        held = kb.ask("How long are backups kept?", collection="handbook")
        assert isinstance(held, HeldAnswer)
        (streamed,) = list(kb.ask_stream("When does the nightly backup run?", collection="handbook"))
        assert isinstance(streamed, HeldEvent)
        assert kb.wait_for_review(held, timeout=0).status == "pending"
        pending = {r.id: r for r in reviewer.reviews()}
        assert held.review_id in pending and pending[held.review_id].held
        assert reviewer.review(held.review_id).question == "How long are backups kept?"
        assert reviewer.approve(held.review_id).status == "approved"
        assert reviewer.reject(streamed.held.review_id, note="not now").status == "rejected"
        outcome = kb.wait_for_review(held, timeout=10, every=0.2)
        assert outcome.status == "approved" and outcome.answer is not None and "30 days" in outcome.answer.answer


def test_the_client_imports_neither_torch_nor_the_server() -> None:
    code = "import sys, ragkb.client; print(sorted(m for m in ('torch', 'server', 'ingest') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_an_abstained_answer_is_typed(live: Live, tmp_path: Path) -> None:
    """What `ragkb ask --server` prints comes from typed fields: the outcome and the closest passages."""
    (tmp_path / "backup.md").write_text(BACKUP)
    with live.client("writer") as writer:
        writer.upload("handbook", [tmp_path / "backup.md"])
    with live.client("asker") as kb:
        reply = kb.ask("What is the airspeed velocity of an unladen swallow?", collection="handbook")
    assert isinstance(reply, Answer) and reply.abstained and reply.outcome == "not_found"
    assert reply.related and reply.related[0].source.endswith("backup.md") and reply.related[0].text
    assert reply.steps == [] and not reply.truncated and reply.error is None


def test_no_server_and_a_server_that_is_not_ragkb() -> None:
    """Nothing listening raises `Unreachable` (not httpx's own errors); an HTML reply (a proxy's error page, a
    web server on the wrong port) raises `ApiError` with code `not_json`; an HTML error page keeps its status."""
    with Client(f"http://127.0.0.1:{free_port()}", api_key=None) as nobody:
        with pytest.raises(Unreachable, match=r"cannot reach http://127\.0\.0\.1"):
            nobody.collections()
        with pytest.raises(Unreachable):
            list(nobody.ask_stream("anything"))
    with pytest.raises(Unreachable):
        asyncio.run(AsyncClient(f"http://127.0.0.1:{free_port()}").collections())

    proxy = FastAPI()
    proxy.get("/healthz")(lambda: {"status": "ok"})
    proxy.post("/v1/query")(lambda: HTMLResponse("<html><body>Welcome to nginx!</body></html>"))
    proxy.get("/v1/collections")(lambda: HTMLResponse("<html>Bad Gateway</html>", status_code=502))
    with LiveServer(proxy) as server, Client(server.url) as kb:
        with pytest.raises(ApiError) as html:
            kb.ask("anything")
        assert html.value.status == 200 and html.value.code == "not_json"
        with pytest.raises(ApiError) as gateway:
            kb.collections()
        assert gateway.value.status == 502 and "Bad Gateway" in gateway.value.message
