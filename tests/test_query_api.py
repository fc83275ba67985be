"""End to end over HTTP: the real app, real Chroma, the real model, the extractive provider, a SQLite cache."""

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
from server.answering.cache import AnswerCache
from server.answering.providers import OpenAIProvider
from server.answering.service import QueryService
from server.http.api import create_app

from .helpers import reader_for
from .servers import ChromaServer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kb_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("api-kb"), default_collection="demo", max_upload_bytes=200_000)


@pytest.fixture(scope="module")
def service(kb_settings: Settings, embedder: Embedder, shared_pdfs: Path) -> QueryService:
    ingestor = Ingestor(kb_settings, embedder=embedder)
    report = ingestor.ingest_paths(
        [REPO / "data" / "guides", shared_pdfs / "docling" / "amt_handbook_sample.pdf"], collection="demo"
    )
    assert report.failed == 0 and report.added == 4
    return QueryService(kb_settings, reader=reader_for(ingestor))


@pytest.fixture(scope="module")
def client(kb_settings: Settings, service: QueryService) -> Iterator[TestClient]:
    with TestClient(create_app(kb_settings, service)) as test_client:
        yield test_client


def _ask(client: TestClient, **body: Any) -> httpx.Response:
    return client.post("/v1/query", json=body)


class TestQuery:
    def test_answer_is_cited_and_grounded(self, client: TestClient, service: QueryService) -> None:
        service.cache.clear()  # `cached is False` below must not depend on which tests ran before
        response = _ask(client, question="Which environment variable points ragkb at a Chroma server?")
        assert response.status_code == 200
        data = response.json()
        assert data["grounded"] is True and data["cached"] is False
        assert (data["model"], data["provider"]) == ("extractive", "extractive")
        assert data["prompt"] == {"name": "answer", "version": "3"}  # v3: the quoted span, the fixed refusal phrase
        assert data["outcome"] == "answered" and data["abstained"] is False
        assert data["request_id"] == response.headers["x-request-id"]
        assert set(data["timings"]) == {"retrieve_ms", "llm_ms", "total_ms"}
        assert data["citations"], "a grounded answer has citations"
        for citation in data["citations"]:
            assert f"[{citation['n']}]" in data["answer"]
            assert citation["snippet"] and citation["chunk_id"].startswith(citation["document_id"])
        assert "RAGKB_CHROMA_URL" in " ".join(c["snippet"] for c in data["citations"]) + data["answer"]

    def test_pdf_citation_has_page(self, client: TestClient) -> None:
        data = _ask(client, question="aircraft maintenance handbook", filters={"where": {"kind": "pdf"}}).json()
        assert data["citations"] and all(c["page"] == 1 for c in data["citations"])

    def test_second_identical_question_is_served_from_cache(self, client: TestClient, service: QueryService) -> None:
        service.cache.clear()
        question = "How are chunk size and overlap configured?"
        first = _ask(client, question=question).json()
        second = _ask(client, question="  How are chunk size and  overlap configured?\n").json()
        assert first["cached"] is False and second["cached"] is True
        assert second["answer"] == first["answer"]
        assert second["citations"] == first["citations"]
        assert second["request_id"] != first["request_id"]

    def test_request_id_header_is_echoed(self, client: TestClient) -> None:
        response = client.post("/v1/query", json={"question": "What is ragkb?"}, headers={"X-Request-ID": "abc123"})
        assert response.headers["x-request-id"] == "abc123" and response.json()["request_id"] == "abc123"

    def test_filters_restrict_the_sources(self, client: TestClient) -> None:
        data = _ask(client, question="How do I remove documents?", filters={"source_glob": "*configuring*"}).json()
        assert data["citations"] and all("configuring-ragkb.md" in c["source"] for c in data["citations"])
        docs = client.get("/v1/collections/demo/documents").json()
        html = next(d for d in docs if d["kind"] == "html")
        data = _ask(
            client, question="How do I remove documents?", filters={"document_ids": [html["document_id"]]}
        ).json()
        assert {c["document_id"] for c in data["citations"]} == {html["document_id"]}

    def test_stream_sends_tokens_then_validated_citations(self, client: TestClient) -> None:
        with client.stream("POST", "/v1/query", json={"question": "How do I delete a document?", "stream": True}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            body = "".join(r.iter_text())
        events = [block.split("\n", 1) for block in body.strip().split("\n\n")]
        names = [e[0].removeprefix("event: ") for e in events]
        payloads = [json.loads(e[1].removeprefix("data: ")) for e in events]
        assert names[-1] == "done" and set(names[:-1]) == {"token"}
        done = payloads[-1]
        assert "".join(p["text"] for p in payloads[:-1]).strip() == done["answer"]
        assert done["grounded"] and done["citations"]


class TestRetrieveAndCollections:
    def test_retrieve_returns_scored_chunks(self, client: TestClient) -> None:
        data = client.post("/v1/retrieve", json={"question": "Chroma server", "top_k": 3}).json()
        assert len(data["chunks"]) == 3 and data["retriever"] == "hybrid"
        scores = [c["score"] for c in data["chunks"]]
        assert scores == sorted(scores, reverse=True)

    def test_collections_and_documents(self, client: TestClient) -> None:
        [demo] = [c for c in client.get("/v1/collections").json() if c["name"] == "demo"]
        assert demo["documents"] >= 4 and demo["chunks"] > demo["documents"]
        assert demo["model"] == "sentence-transformers/all-MiniLM-L6-v2"

    def test_upload_ingest_query_and_delete(self, client: TestClient) -> None:
        files = [
            (
                "files",
                ("runbook.md", b"# Runbook\n\nThe pager rotation changes every Tuesday at 10:00.\n", "text/markdown"),
            )
        ]
        uploaded = client.post("/v1/collections/uploads/documents", files=files)
        assert uploaded.status_code == 200, uploaded.text
        assert (uploaded.json()["added"], uploaded.json()["failed"]) == (1, 0)
        again = client.post("/v1/collections/uploads/documents", files=files).json()
        assert again["unchanged"] == 1
        data = _ask(client, question="When does the pager rotation change?", collection="uploads").json()
        assert data["grounded"] and data["citations"][0]["source"] == "upload://runbook.md"
        doc_id = data["citations"][0]["document_id"]
        deleted = client.delete(f"/v1/collections/uploads/documents/{doc_id}")
        assert deleted.status_code == 200 and deleted.json()["chunks_deleted"] == 1
        assert client.get("/v1/collections/uploads/documents").json() == []
        assert client.delete(f"/v1/collections/uploads/documents/{doc_id}").status_code == 404


class TestErrors:
    @pytest.mark.parametrize(
        ("body", "status", "message"),
        [
            ({"question": "x", "collection": "nope"}, 404, "collection 'nope' does not exist (available:"),
            ({"question": "   "}, 422, "the question is empty"),
            ({"question": "q" * 2001}, 422, "the limit is 2000"),
            ({"question": ""}, 422, "question"),
            ({"question": "x", "retriever": "magic"}, 422, "choose one of: bm25, dense, hybrid"),
            ({"question": "x", "top_k": 0}, 422, "top_k"),
            ({"question": "x", "unknown_field": 1}, 422, "unknown_field"),
            ({"question": "x", "collection": "bad name!"}, 422, "invalid collection name"),
        ],
    )
    def test_bad_requests_get_clear_json_errors(
        self, client: TestClient, body: dict[str, Any], status: int, message: str
    ) -> None:
        response = client.post("/v1/query", json=body)
        assert response.status_code == status
        assert message in response.json()["error"]
        assert response.json()["request_id"] == response.headers["x-request-id"]

    def test_malformed_json_is_422(self, client: TestClient) -> None:
        response = client.post("/v1/query", content=b"{not json", headers={"content-type": "application/json"})
        assert response.status_code == 422 and "JSON" in response.json()["error"]

    def test_a_body_the_parser_gives_up_on_gets_the_one_error_shape(self, client: TestClient) -> None:
        response = client.post(
            "/v1/query", content=b'{"question": "\xff"}', headers={"content-type": "application/json"}
        )
        body = response.json()
        assert response.status_code == 400 and body["code"] == "bad_request" and "JSON" in body["error"]
        assert body["request_id"] == response.headers["x-request-id"]

    def test_an_unknown_route_gets_the_one_error_shape(self, client: TestClient) -> None:
        response = client.get("/v1/nowhere")
        assert response.status_code == 404 and response.json()["code"] == "not_found"
        assert response.json()["request_id"] == response.headers["x-request-id"]

    def test_stream_on_unknown_collection_fails_before_streaming(self, client: TestClient) -> None:
        response = client.post("/v1/query", json={"question": "x", "collection": "nope", "stream": True})
        assert response.status_code == 404

    def test_unsupported_upload_is_415(self, client: TestClient) -> None:
        response = client.post(
            "/v1/collections/demo/documents", files=[("files", ("a.pages", b"PK..", "application/x"))]
        )
        assert response.status_code == 415 and ".pages" in response.json()["error"]

    def test_oversized_upload_is_413_and_nothing_is_stored(self, client: TestClient) -> None:
        big = b"word " * 50_000  # 250 kB against the 200 kB limit
        response = client.post("/v1/collections/big/documents", files=[("files", ("big.txt", big, "text/plain"))])
        assert response.status_code == 413
        assert "big" not in [c["name"] for c in client.get("/v1/collections").json()]

    def test_huge_declared_upload_is_refused_before_it_is_read(self, client: TestClient) -> None:
        big = b"word " * 400_000  # 2 MB against the 200 kB limit
        response = client.post("/v1/collections/big/documents", files=[("files", ("big.txt", big, "text/plain"))])
        assert response.status_code == 413 and "the limit is 200,000" in response.json()["error"]
        assert response.json()["request_id"] == response.headers["x-request-id"]

    def test_corrupt_upload_reports_the_failure(self, client: TestClient) -> None:
        response = client.post(
            "/v1/collections/demo/documents", files=[("files", ("x.pdf", b"%PDF-1.4 junk", "application/pdf"))]
        )
        assert response.status_code == 422
        body = response.json()
        assert body["failures"][0]["path"] == "x.pdf"
        assert body["code"] == "no_file_stored" and body["error"].startswith("no file was stored: x.pdf: ")
        assert body["request_id"] == response.headers["x-request-id"]

    def test_a_partly_failed_upload_is_a_200_without_an_error(self, client: TestClient) -> None:
        response = client.post(
            "/v1/collections/demo/documents",
            files=[
                ("files", ("y.pdf", b"%PDF-1.4 junk", "application/pdf")),
                ("files", ("partial.md", b"# Partial\n\nThe partial upload keeps this file.\n", "text/markdown")),
            ],
        )
        assert response.status_code == 200
        body = response.json()
        assert body["failed"] == 1 and body["added"] == 1
        assert "code" not in body and "error" not in body


class TestOps:
    def test_health_ready_metrics(self, client: TestClient) -> None:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"ready": True, "checks": {"model": "ok", "store": "ok"}}
        _ask(client, question="What is ragkb?")
        metrics = client.get("/metrics").text
        for name in (
            "ragkb_http_request_seconds_bucket",
            "ragkb_retrieve_seconds_bucket",
            "ragkb_llm_seconds_bucket",
            "ragkb_cache_events_total",
            "ragkb_ingest_files_total",
        ):
            assert name in metrics
        assert 'route="/v1/query"' in metrics

    def test_openapi_documents_the_api(self, client: TestClient) -> None:
        spec = client.get("/openapi.json").json()
        for path in ("/v1/query", "/v1/retrieve", "/v1/collections", "/v1/collections/{name}/documents", "/readyz"):
            assert path in spec["paths"]
        query = spec["paths"]["/v1/query"]["post"]
        assert set(query["responses"]) >= {"200", "404", "422", "503"}
        schema = spec["components"]["schemas"]["QueryRequest"]
        assert schema["examples"][0]["question"]


def test_degrades_to_extractive_when_the_llm_fails(kb_settings: Settings, service: QueryService) -> None:
    calls = []

    def failing(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, json={"error": {"message": "overloaded"}})

    provider = OpenAIProvider(
        base_url="http://llm.test/v1", model="m", retries=1, backoff=0.01, transport=httpx.MockTransport(failing)
    )
    degraded_service = QueryService(kb_settings, reader=service.reader, provider=provider, cache=service.cache)
    with TestClient(create_app(kb_settings, degraded_service)) as client:
        data = _ask(client, question="Which variable points ragkb at a Chroma server?").json()  # the guides say
    assert len(calls) == 2
    assert data["degraded"] is True and "HTTP 503" in data["error"]
    assert data["provider"] == "extractive" and data["grounded"] is True and data["cached"] is False


@pytest.mark.slow
def test_unreachable_store_is_503(tmp_path: Path, embedder: Embedder) -> None:
    with ChromaServer(tmp_path / "chroma") as url:
        settings = Settings(data_dir=tmp_path / "kb", chroma_url=url, default_collection="remote")
        ingestor = Ingestor(settings, embedder=embedder)
        (tmp_path / "a.txt").write_text("The store lives on another machine.\n")
        ingestor.ingest_paths([tmp_path / "a.txt"], collection="remote")
        svc = QueryService(settings, reader=reader_for(ingestor), cache=AnswerCache.from_settings(settings))
    # the server is stopped now
    with TestClient(create_app(settings, svc), raise_server_exceptions=False) as client:
        response = _ask(client, question="Where is the store?")
        assert response.status_code == 503 and "unreachable" in response.json()["error"]
        assert client.get("/readyz").status_code == 503


def test_cache_never_serves_an_answer_from_before_a_change(client: TestClient) -> None:
    def upload(name: str, text: str) -> None:
        response = client.post(
            "/v1/collections/changing/documents", files=[("files", (name, text.encode(), "text/plain"))]
        )
        assert response.status_code == 200, response.text

    upload("oncall.txt", "The on-call engineer this week is Priya. Escalate to the platform team.\n")
    question = {"question": "Who is the on-call engineer this week?", "collection": "changing"}
    first = client.post("/v1/query", json=question).json()
    assert "Priya" in first["answer"] and first["cached"] is False
    assert client.post("/v1/query", json=question).json()["cached"] is True

    upload("lunch.txt", "Lunch is served at noon in the atrium on Fridays.\n")  # unrelated: same chunks retrieved?
    after_unrelated = client.post("/v1/query", json=question).json()
    assert after_unrelated["answer"] == first["answer"]

    upload("oncall.txt", "The on-call engineer this week is Marcus. Escalate to the platform team.\n")
    changed = client.post("/v1/query", json=question).json()
    assert changed["cached"] is False
    assert "Marcus" in changed["answer"] and "Priya" not in changed["answer"]
