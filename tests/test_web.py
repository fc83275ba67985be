"""The web page's server side without a browser: the pages and their Content-Security-Policy, the static
files, `/v1/whoami`, the cited passages with their highlights and the documents table (real app, real
Chroma, the real model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.answering.service import QueryService
from server.http.api import create_app
from server.web.highlight import claims_by_citation, highlights
from server.web.security import STATIC_TYPES

from .helpers import reader_for

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "server" / "web" / "static"
PAGES = ["/", "/documents", "/review", "/signin"]


class TestHighlight:
    def test_a_claim_is_the_text_since_the_previous_marker(self) -> None:
        answer = "Alpha is one. Beta is two. [1] Gamma is three. [2][3] Delta is four [1, 3]."
        assert claims_by_citation(answer) == {
            1: ["Alpha is one. Beta is two.", "Delta is four"],
            2: ["Gamma is three."],
            3: ["Gamma is three.", "Delta is four"],
        }

    def test_the_quoted_sentences_are_highlighted_and_merged_when_adjacent(self) -> None:
        passage = "## Storage\n\nThe store lives in the data dir. Set the URL to share it. Start a server first."
        claims = ["The store lives in the data dir. Set the URL to share it."]
        [(start, end)] = highlights(passage, claims)
        assert passage[start:end] == "The store lives in the data dir. Set the URL to share it."

    def test_a_heading_joined_to_the_quoted_sentence_is_left_out(self) -> None:
        passage = "# Installing ragkb\n\nragkb is a self-hosted knowledge-base server. It answers questions."
        [(start, end)] = highlights(passage, ["ragkb is a self-hosted knowledge-base server."])
        assert passage[start:end].startswith("ragkb is a self-hosted")

    def test_no_highlight_when_the_passage_does_not_say_it(self) -> None:
        assert highlights("Completely unrelated words about gardening.", ["Chroma stores vectors."]) == []
        assert highlights("Some text.", []) == []


class TestPagesWithoutState:
    """Pages and static files need no model: an app whose start-up has not run serves them."""

    @pytest.fixture(scope="class")
    def bare(self) -> TestClient:
        return TestClient(create_app(Settings(data_dir=Path("/nonexistent-ragkb-web"))))

    @pytest.mark.parametrize("path", PAGES)
    def test_pages_forbid_inline_script_and_have_none(self, bare: TestClient, path: str) -> None:
        response = bare.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        soup = BeautifulSoup(response.text, "html.parser")
        scripts = ["/static/app.js"] + (["/static/ask.js"] if path == "/" else [])  # the Ask page's thread
        assert [s.get("src") for s in soup.find_all("script")] == scripts
        assert soup.find_all("script", src=False) == []
        handlers = [(tag.name, a) for tag in soup.find_all(True) for a in tag.attrs if a.lower().startswith("on")]
        assert handlers == [] and soup.find_all(style=True) == []
        for field in soup.find_all(["input", "select", "textarea"]):  # every control has a label
            if field.get("type") != "hidden":
                assert soup.find("label", attrs={"for": field["id"]}) is not None, field

    def test_static_files_are_a_fixed_list(self, bare: TestClient) -> None:
        for name, media_type in STATIC_TYPES.items():
            response = bare.get(f"/static/{name}")
            assert response.status_code == 200 and response.headers["content-type"] == media_type
            assert response.content == (STATIC / name).read_bytes()
            assert "content-security-policy" in response.headers
        for name in ("routes.py", "..%2Froutes.py", "%2e%2e%2fapi.py", "missing.js"):
            assert bare.get(f"/static/{name}").status_code == 404
        assert sorted(p.name for p in STATIC.iterdir()) == sorted(STATIC_TYPES), "every static file is listed"

    def test_the_script_never_writes_html(self) -> None:
        """User and document text reaches the page only through textContent and text nodes."""
        for path in STATIC.glob("*.js"):
            script = path.read_text()
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
                assert sink not in script, (path.name, sink)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, shared_pdfs: Path) -> QueryService:
    settings = Settings(data_dir=tmp_path_factory.mktemp("web-api"), default_collection="demo")
    ingestor = Ingestor(settings, embedder=embedder)
    report = ingestor.ingest_paths(
        [REPO / "data" / "guides" / "configuring-ragkb.md", shared_pdfs / "docling" / "amt_handbook_sample.pdf"],
        collection="demo",
    )
    assert report.failed == 0 and report.added == 2
    ingestor.ingest_paths([REPO / "data" / "guides" / "installing-ragkb.md"], collection="private")
    return QueryService(settings, reader=reader_for(ingestor))


@pytest.fixture(scope="module")
def open_client(service: QueryService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    state = tmp_path_factory.mktemp("web-open-state") / "state.sqlite3"
    settings = service.settings.model_copy(update={"database_url": f"sqlite:///{state}"})
    with TestClient(create_app(settings, service)) as client:
        yield client


@pytest.fixture(scope="module")
def keyed(service: QueryService) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with TestClient(create_app(service.settings, service)) as client:
        keys = client.app.state.components.keys  # type: ignore[attr-defined]
        tokens = {
            "reader": keys.create("reader", "read", None)[1],
            "reviewer": keys.create("reviewer", "review", None)[1],
            "demo-only": keys.create("demo-only", "write", ["demo"])[1],
        }
        yield client, tokens


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestWhoAmI:
    def test_open_demo(self, open_client: TestClient) -> None:
        body = open_client.get("/v1/whoami").json()
        assert body["open"] is True and body["key"] is None and body["default_collection"] == "demo"
        assert body["can"] == {"read": True, "write": True, "review": True, "admin": True}
        assert 'data-open="true"' in open_client.get("/").text  # the page hides its sign-in link

    def test_a_key_says_what_it_may_do(self, keyed: tuple[TestClient, dict[str, str]]) -> None:
        client, tokens = keyed
        reader = client.get("/v1/whoami", headers=_bearer(tokens["reader"])).json()
        assert (reader["key"], reader["scope"], reader["open"]) == ("reader", "read", False)
        assert reader["can"] == {"read": True, "write": False, "review": False, "admin": False}
        reviewer = client.get("/v1/whoami", headers=_bearer(tokens["reviewer"])).json()
        assert reviewer["can"]["review"] and not reviewer["can"]["write"]
        limited = client.get("/v1/whoami", headers=_bearer(tokens["demo-only"])).json()
        assert limited["collections"] == ["demo"] and limited["can"]["write"]
        assert 'data-open="false"' in client.get("/").text

    def test_no_key_or_a_bad_key_is_401(self, keyed: tuple[TestClient, dict[str, str]]) -> None:
        client, _ = keyed
        for headers in ({}, _bearer("rk_unknown")):
            response = client.get("/v1/whoami", headers=headers)
            assert response.status_code == 401 and response.json()["code"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/").status_code == 200, "the page itself is public: it asks for a key"


class TestPassages:
    def test_cited_passages_come_whole_with_the_quoted_sentence(self, open_client: TestClient) -> None:
        answer = open_client.post(
            "/v1/query", json={"question": "Which environment variable points ragkb at a Chroma server?"}
        ).json()
        assert answer["citations"]
        body = {
            "collection": "demo",
            "answer": answer["answer"],
            "citations": [{"n": c["n"], "chunk_id": c["chunk_id"]} for c in answer["citations"]],
        }
        passages = open_client.post("/v1/passages", json=body).json()["passages"]
        assert [p["n"] for p in passages] == [c["n"] for c in answer["citations"]]
        first = passages[0]
        assert answer["citations"][0]["snippet"][:40] in first["text"]
        [(start, end)] = first["highlights"][:1]
        assert "RAGKB_CHROMA_URL" in first["text"][start:end]

    def test_one_passage_cited_twice(self, open_client: TestClient) -> None:
        chunk = open_client.post("/v1/retrieve", json={"question": "Chroma server"}).json()["chunks"][0]
        body = {"answer": "A [1]. B [2].", "citations": [{"n": n, "chunk_id": chunk["chunk_id"]} for n in (1, 2)]}
        passages = open_client.post("/v1/passages", json=body).json()["passages"]
        assert [p["text"] for p in passages] == [chunk["text"], chunk["text"]]

    def test_a_deleted_chunk_has_no_text(self, open_client: TestClient) -> None:
        body = {"collection": "demo", "answer": "x [1]", "citations": [{"n": 1, "chunk_id": "gone:v:0"}]}
        [passage] = open_client.post("/v1/passages", json=body).json()["passages"]
        assert passage["text"] is None and passage["highlights"] == []

    def test_the_key_rules_of_the_collection_apply(self, keyed: tuple[TestClient, dict[str, str]]) -> None:
        client, tokens = keyed
        body = {"collection": "private", "answer": "", "citations": [{"n": 1, "chunk_id": "a:b:0"}]}
        hidden = client.post("/v1/passages", json=body, headers=_bearer(tokens["demo-only"]))
        assert hidden.status_code == 404 and hidden.json()["code"] == "collection_not_found"
        assert client.post("/v1/passages", json=body).status_code == 401
        too_many = {"answer": "", "citations": [{"n": 1, "chunk_id": "a:b:0"}] * 51}
        refused = client.post("/v1/passages", json=too_many, headers=_bearer(tokens["reader"]))
        assert refused.status_code == 422 and refused.json()["code"] == "validation"


class TestDocumentsTable:
    def test_rows_have_pages_and_ingestion_time(self, keyed: tuple[TestClient, dict[str, str]]) -> None:
        client, tokens = keyed
        rows = client.get("/v1/ui/collections/demo/documents", headers=_bearer(tokens["reader"])).json()
        by_source = {r["source"]: r for r in rows}
        pdf = by_source["amt_handbook_sample.pdf"]
        assert pdf["pages"] == 1 and pdf["kind"] == "pdf" and pdf["chunks"] >= 1
        assert pdf["ingested_at"].startswith("20") and "T" in pdf["ingested_at"]
        markdown = next(r for s, r in by_source.items() if s.endswith("configuring-ragkb.md"))
        assert markdown["pages"] is None and markdown["title"] == "Configuring ragkb"

    def test_a_hidden_collection_is_404(self, keyed: tuple[TestClient, dict[str, str]]) -> None:
        client, tokens = keyed
        response = client.get("/v1/ui/collections/private/documents", headers=_bearer(tokens["demo-only"]))
        assert response.status_code == 404 and response.json()["code"] == "collection_not_found"


def test_the_page_waits_for_the_job_states_the_api_ends_in() -> None:
    """The upload list follows a job until the API says it ended: its terminal states, not others."""
    import json
    import re

    from ingest.queue import TERMINAL

    script = (Path(__file__).resolve().parents[1] / "server" / "web" / "static" / "app.js").read_text()
    declared = re.search(r"const JOB_TERMINAL = (\[[^\]]*\]);", script)
    assert declared is not None, "app.js declares the job states it stops at"
    assert tuple(json.loads(declared.group(1))) == TERMINAL
    assert "succeeded" not in script and '"finished"' not in script  # states the API never sends
