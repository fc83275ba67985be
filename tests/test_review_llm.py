"""Reject-and-retry with a real OpenAI-compatible server: llama.cpp serving the SmolLM2 GGUF. The retry's
request goes over the wire with the retry prompt and the reviewer's note; the retry limit holds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.answering.providers.openai import OpenAIProvider
from server.answering.service import QueryService
from server.http.api import create_app

from .helpers import reader_for
from .servers import LlamaCppServer, smollm2_gguf

pytestmark = pytest.mark.slow


class RecordingTransport(httpx.AsyncBaseTransport):
    """The real HTTP transport, keeping each request body (to see what the server was asked)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.bodies: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(await request.aread()))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    with LlamaCppServer(smollm2_gguf()) as base_url:
        yield base_url


def test_reject_and_retry_with_a_real_llm(llama_server: str, tmp_path: Path, embedder: Embedder) -> None:
    settings = Settings(data_dir=tmp_path / "kb", llm_max_tokens=40, review_max_attempts=2, rate_limit_burst=1_000_000)
    (tmp_path / "leave.md").write_text("# Leave\n\nEmployees get 25 days of paid leave per year.\n")
    (tmp_path / "backup.md").write_text("# Backups\n\nBackups are kept for 30 days and then deleted.\n")
    ingestor = Ingestor(settings, embedder=embedder)
    ingestor.ingest_paths([tmp_path / "leave.md", tmp_path / "backup.md"], collection="people")
    transport = RecordingTransport()
    provider = OpenAIProvider(
        base_url=llama_server, model="smollm2", max_tokens=40, timeout=120, retries=0, transport=transport
    )
    service = QueryService(settings, reader=reader_for(ingestor), provider=provider)
    with TestClient(create_app(settings, service)) as client:
        assert client.put("/v1/collections/people/review-policy", json={"review": "required"}).status_code == 200
        question = {"question": "How many days of paid leave do employees get?", "collection": "people", "top_k": 2}
        held = client.post("/v1/query", json=question)
        assert held.status_code == 202, held.text
        review_id = held.json()["review_id"]
        first = client.get(f"/v1/reviews/{review_id}").json()["history"][0]
        assert (first["provider"], first["prompt"]) == ("openai", "answer:3")

        note = "Say the number of days and cite the leave passage."
        retried = client.post(f"/v1/reviews/{review_id}/reject", json={"retry": True, "note": note})
        assert retried.status_code == 200, retried.text
        second = retried.json()["history"][1]
        assert (second["provider"], second["prompt"], second["note"]) == ("openai", "answer-retry:1", note)
        sent = json.dumps(transport.bodies[-1])
        assert f"Reviewer's note on the earlier answer: {note}" in sent  # the note went over the wire
        assert retried.json()["answer"] == second["answer"]
        assert all(1 <= c["n"] <= len(retried.json()["context"]) for c in second["citations"])

        limited = client.post(f"/v1/reviews/{review_id}/reject", json={"retry": True})
        assert limited.status_code == 409 and limited.json()["code"] == "retry_limit_reached"
        calls = len(transport.bodies)
        assert client.post(f"/v1/reviews/{review_id}/reject", json={"retry": False}).json()["status"] == "rejected"
        assert len(transport.bodies) == calls  # refusing and rejecting ask the LLM nothing
