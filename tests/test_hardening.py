"""Hardening: no crash leaves an index stale, no bad request becomes a 500 without its id, no input stalls
the server, budgets hold, and an embedded store has one writer process."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ingest.chunking import Chunker, ChunkingConfig
from ingest.config import Settings, get_settings
from ingest.datadir import DataDirBusy, hold_for_server, refuse_if_served
from ingest.embedder import Embedder
from ingest.errors import CorruptDocument
from ingest.extraction import ProcessExtractor
from ingest.pipeline import Ingestor
from ingest.store import ChromaStore
from ragkb.cli import app as cli_app
from server.answering.cache import AnswerCache, RedisBackend
from server.answering.retrieval import BM25Retriever
from server.answering.service import QueryService
from server.http.api import create_app

from .helpers import page_tree_pdf, reader_for
from .servers import free_port

runner = CliRunner()


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Ingestor:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("hard-kb"),
        default_collection="ops",
        max_upload_bytes=2_000_000,
        max_json_bytes=64 * 1024,
        max_chunks_per_request=12,
    )
    ingestor = Ingestor(settings, embedder=embedder)
    root = tmp_path_factory.mktemp("hard-docs")
    (root / "backups.md").write_text("# Backups\n\nThe nightly backup copies the data directory to the archive.\n")
    (root / "cache.md").write_text("# Cache\n\nThe answer cache keeps answers for seven days.\n")
    assert ingestor.ingest_paths([root], collection="ops").added == 2
    return ingestor


@pytest.fixture(scope="module")
def client(kb: Ingestor) -> Iterator[TestClient]:
    service = QueryService(kb.settings, reader=reader_for(kb))
    with TestClient(create_app(kb.settings, service), raise_server_exceptions=False) as test_client:
        yield test_client


# -- 2. a crash between the chunk write and the generation change ---------------------------------------


@pytest.mark.slow
def test_a_writer_killed_after_its_upsert_leaves_no_stale_index(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "kb")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump\n\nReplace the impeller seal every 2,000 hours.\n")
    writer = Ingestor(settings, embedder=embedder)
    writer.ingest_paths([docs], collection="plant")
    reader = reader_for(writer)
    service = QueryService(settings, reader=reader)
    bm25 = BM25Retriever(reader)
    assert bm25.retrieve("centrifuge", collection="plant", top_k=3) == []  # index built before the crash
    import asyncio

    question = "How often is the impeller seal replaced?"
    first = asyncio.run(service.answer(question, collection="plant"))
    assert asyncio.run(service.answer(question, collection="plant")).cached is True

    calls = {"n": 0}

    def dies_after_the_upsert(self: ChromaStore, collection: Any, token: str) -> None:
        calls["n"] += 1  # the change after the write: the process is killed right before it
        raise SystemExit("killed")

    (docs / "centrifuge.md").write_text("# Centrifuge\n\nThe centrifuge bypass valve opens at 6 bar.\n")
    (docs / "pump.md").write_text("# Pump\n\nReplace the impeller seal every 500 hours.\n")
    with monkeypatch.context() as patched:
        patched.setattr(ChromaStore, "_end_write", dies_after_the_upsert)
        with pytest.raises(SystemExit):
            Ingestor(settings, embedder=embedder).ingest_paths([docs], collection="plant")
    assert calls["n"] == 1

    # the server's view, before anyone re-runs: the pending generation already differs from the index's
    assert [Path(c.metadata["source"]).name for c in bm25.retrieve("centrifuge", collection="plant", top_k=3)] == [
        "centrifuge.md"
    ]
    after_crash = asyncio.run(service.answer(question, collection="plant"))
    assert after_crash.cached is False and "500 hours" in after_crash.answer and first.answer != after_crash.answer

    rerun = Ingestor(settings, embedder=embedder).ingest_paths([docs], collection="plant")
    assert (rerun.unchanged, rerun.added, rerun.updated) == (2, 0, 0)
    restarted = reader_for(Ingestor(settings, embedder=embedder))  # a fresh process: the index from disk
    hits = BM25Retriever(restarted).retrieve("centrifuge bypass", collection="plant", top_k=3)
    assert [Path(c.metadata["source"]).name for c in hits] == ["centrifuge.md"]
    assert not restarted.store.get("plant").native.metadata.get("ragkb_write_pending")


# -- 3. filters, id lists and errors over HTTP and SSE ---------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("filters", "status", "message"),
    [
        ({"where": {"$where": "1"}}, 422, "unknown field '$where'; filterable fields: chunk_index"),
        ({"where": {"$or": 1}}, 422, "unknown field '$or'"),
        ({"where": {"$contains": "x"}}, 422, "unknown field '$contains'"),
        ({"where": {"page": "three"}}, 422, "filters.where.page must be int"),
        ({"document_ids": [f"id{i}" for i in range(1001)]}, 422, "at most 1000"),
        ({"document_ids": [f"id{i}" for i in range(100_000)]}, 413, "RAGKB_MAX_JSON_BYTES"),
    ],
)
def test_bad_filters_are_refused_before_any_work(
    client: TestClient, filters: dict[str, Any], status: int, message: str, stream: bool
) -> None:
    response = client.post("/v1/query", json={"question": "Where do backups go?", "filters": filters, "stream": stream})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), "refused before any event is sent"
    body = response.json()
    assert message in body["error"] and body["request_id"] == response.headers["x-request-id"] != "-"


def test_unexpected_errors_are_500s_with_their_request_id(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    service: QueryService = client.app.state.components.service  # type: ignore[attr-defined]

    def broken(query: Any) -> Any:
        raise RuntimeError("a bug, not the client's fault: /secret/path")

    monkeypatch.setattr(service, "plan", broken)
    for stream in (False, True):
        response = client.post("/v1/query", json={"question": "anything", "stream": stream})
        assert response.status_code == 500
        body = response.json()
        assert body["code"] == "internal" and body["request_id"] == response.headers["x-request-id"] != "-"
        assert "/secret/path" not in response.text and "Traceback" not in response.text


@pytest.mark.parametrize(
    ("sent", "echoed"), [("abc-123_x.y:z", True), ("bad id with spaces", False), ("x" * 65, False), ("<s>", False)]
)
def test_request_ids_are_echoed_only_when_safe(client: TestClient, sent: str, echoed: bool) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": sent})
    assert (response.headers["x-request-id"] == sent) is echoed
    assert len(response.headers["x-request-id"]) <= 64


def test_oversized_json_body_is_refused_before_parsing(client: TestClient) -> None:
    body = b'{"question": "' + b"x" * 70_000 + b'"}'
    response = client.post("/v1/query", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["code"] == "too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"question": "'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"}'

    response = client.post("/v1/query", content=chunked(), headers={"content-type": "application/json"})
    assert response.status_code == 413


# -- 4. one crafted PDF never takes a batch down ----------------------------------------------------------


def test_a_deep_page_tree_pdf_fails_alone_in_a_directory_and_an_upload(
    client: TestClient, tmp_path: Path, cli_env: Path
) -> None:
    root = tmp_path / "batch"
    root.mkdir()
    (root / "deep.pdf").write_bytes(page_tree_pdf(150))
    for i in range(8):
        (root / f"good{i}.md").write_text(f"# Note {i}\n\nThe rotation of team {i} starts on Monday.\n")
    result = runner.invoke(cli_app, ["ingest", str(root), "-c", "batch", "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and (report["added"], report["failed"]) == (8, 1)
    assert report["failures"][0]["path"].endswith("deep.pdf") and "not a readable PDF" in report["failures"][0]["error"]

    files = [
        ("files", ("deep.pdf", page_tree_pdf(150), "application/pdf")),
        ("files", ("good.md", b"# Good\n\nThe good file is kept.\n", "text/markdown")),
    ]
    response = client.post("/v1/collections/uploads/documents", files=files)
    assert response.status_code == 200, response.text
    assert (response.json()["added"], response.json()["failed"]) == (1, 1)


# -- 5. budgets -------------------------------------------------------------------------------------------


def test_chunk_budgets_per_file_and_per_request(client: TestClient, tmp_path: Path, embedder: Embedder) -> None:
    settings = Settings(data_dir=tmp_path / "kb", max_chunks_per_file=5)
    long_text = "\n\n".join(f"Paragraph {i} talks about pumps, valves and seals at length." * 8 for i in range(40))
    (tmp_path / "long.txt").write_text(long_text)
    (tmp_path / "short.txt").write_text("A short note.\n")
    report = Ingestor(settings, embedder=embedder).ingest_paths([tmp_path], collection="budget")
    assert (report.added, report.failed) == (1, 1)
    assert "over the 5-chunk budget per file (RAGKB_MAX_CHUNKS_PER_FILE)" in report.failures[0].error

    files = [("files", (f"part{i}.txt", long_text[i * 6000 : (i + 1) * 6000].encode(), "text/plain")) for i in range(3)]
    response = client.post("/v1/collections/budget/documents", files=files)  # the app allows 12 chunks a request
    data = response.json()
    assert response.status_code == 200 and data["added"] >= 1 and data["failed"] >= 1
    assert all("RAGKB_MAX_CHUNKS_PER_REQUEST" in f["error"] for f in data["failures"])


def test_token_budget_per_request_refuses_before_anything_is_embedded(tmp_path: Path, embedder: Embedder) -> None:
    """RAGKB_MAX_TOKENS_PER_REQUEST: a file far past it is refused on an estimate from samples (before it is
    chunked), one just past what is left of it on its exact count; the files within it are stored."""
    ingestor = Ingestor(Settings(data_dir=tmp_path / "kb"), embedder=embedder)
    prose = "# Pumps\n\n" + "The pump is checked every week by the day shift. " * 40
    [tokens] = ingestor.chunker.count_tokens([prose])
    items = [
        ("brackets.md", "upload://brackets.md", b"[" * 300_000),
        ("pumps.md", "upload://pumps.md", prose.encode()),
        ("valves.md", "upload://valves.md", prose.replace("pump", "valve").encode()),
    ]
    report = ingestor.ingest_items(items, collection="tokens", max_tokens=tokens + tokens // 2)
    assert report.added == 1 and [d["path"] for d in report.documents] == ["pumps.md"]
    errors = {f.path: f.error for f in report.failures}
    assert "about 300,000 tokens (estimated from samples)" in errors["brackets.md"], errors
    assert "budget of one upload request (RAGKB_MAX_TOKENS_PER_REQUEST)" in errors["brackets.md"]
    assert "is over what is left of it" in errors["valves.md"], errors
    assert ingestor.ingest_items(items[1:2], collection="tokens").unchanged == 1  # no budget: the CLI's case


@pytest.mark.parametrize(
    "text", ["[" * 100_000, "1.2," * 25_000, "\u4e00\u4e8c\u4e09" * 30_000, "The pump is checked weekly. " * 4_000]
)
def test_the_token_estimate_is_close_and_cheap(embedder: Embedder, text: str) -> None:
    chunker = Chunker(embedder.tokenizer, ChunkingConfig(), window=embedder.window)
    start = time.perf_counter()
    estimate = chunker.estimate_tokens(text)
    took = time.perf_counter() - start
    [exact] = chunker.count_tokens([text])
    assert abs(estimate - exact) <= exact * 0.05, (estimate, exact)
    assert took < 0.5, f"the estimate took {took:.2f}s"


def test_a_stopped_ingestion_ends_between_files_and_says_so(tmp_path: Path, embedder: Embedder) -> None:
    ingestor = Ingestor(Settings(data_dir=tmp_path / "kb"), embedder=embedder)

    def items() -> Iterator[tuple[str, str, bytes]]:
        for i in range(4):
            if i == 2:  # SIGTERM arrives while the third file is being read
                ingestor.stop.set()
            yield f"n{i}.txt", f"upload://n{i}.txt", f"Note {i} about the archive.\n".encode()

    report = ingestor.ingest_items(items(), collection="stop")
    assert report.interrupted and (report.added, report.failed) == (2, 2)
    assert all("ingestion was stopped" in f.error for f in report.failures)
    assert len(ingestor.store.documents(ingestor.open_collection("stop"))) == 2, "what was read is stored"


# -- 1. ingestion never holds the serving process ---------------------------------------------------------------------


@pytest.mark.slow
def test_large_files_are_parsed_in_a_worker_process_within_a_time_limit(shared_pdfs: Path) -> None:
    """The server parses large uploads in a spawned worker (pure-Python parsing never holds its GIL), and a
    parse that runs past the limit ends with the worker, failing that file alone."""
    data = (shared_pdfs / "docling" / "redp5110_sampled.pdf").read_bytes()
    before = {p.pid for p in multiprocessing.active_children()}
    extractor = ProcessExtractor(timeout=120, min_bytes=1000)
    try:
        document = extractor(data, "redp5110_sampled.pdf")
        workers = {p.pid for p in multiprocessing.active_children()} - before
        assert document.kind == "pdf" and len(document.sections) > 10
        assert workers, "the parse ran in a worker process"
        assert extractor(b"# Small\n\nParsed here.\n", "small.md").title == "Small"
    finally:
        extractor.close()
    hasty = ProcessExtractor(timeout=0.05, min_bytes=1000)
    with pytest.raises(CorruptDocument, match=r"took longer than 0\.05 s"):
        hasty(data, "redp5110_sampled.pdf")
    assert {p.pid for p in multiprocessing.active_children()} <= before, "the runaway worker was ended"


# -- 6. one embedded store, one writer process ----------------------------------------------------------------


def test_cli_writers_refuse_while_a_server_holds_the_embedded_store(cli_env: Path, tmp_path: Path) -> None:
    settings = get_settings()
    note = tmp_path / "n.txt"
    note.write_text("A note.\n")
    lock = hold_for_server(settings)
    assert lock is not None
    try:
        with pytest.raises(DataDirBusy, match="another ragkb server already serves"):
            hold_for_server(settings)
        for args in (["ingest", str(note)], ["delete", "some-id"]):
            result = runner.invoke(cli_app, args)
            assert result.exit_code in (1, 2) and "would not see" in result.stderr, result.stderr
            assert "RAGKB_CHROMA_URL" in result.stderr
    finally:
        lock.release()
    refuse_if_served(settings, "ingest")  # no server: nothing to refuse
    assert runner.invoke(cli_app, ["ingest", str(note)]).exit_code == 0


def test_serve_with_several_workers_needs_a_chroma_server(cli_env: Path) -> None:
    result = runner.invoke(cli_app, ["serve", "--workers", "2", "--port", str(free_port())])
    assert result.exit_code == 2 and "needs a Chroma server (RAGKB_CHROMA_URL)" in result.stderr


# -- 7. smaller ones -------------------------------------------------------------------------------------------


def test_a_cache_that_is_down_is_reported_degraded(kb: Ingestor) -> None:
    down = AnswerCache(RedisBackend(f"redis://127.0.0.1:{free_port()}/0", ttl=60))
    service = QueryService(kb.settings, reader=reader_for(kb), cache=down)
    with TestClient(create_app(kb.settings, service)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert ready.json()["checks"]["cache"].startswith("degraded: the redis cache is unreachable")
        assert client.post("/v1/query", json={"question": "Where do backups go?"}).status_code == 200


def test_cache_stats_with_redis_down_is_a_clear_error(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGKB_CACHE_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    result = runner.invoke(cli_app, ["cache", "stats"])
    assert result.exit_code == 2 and "cannot reach the cache" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_the_packaged_command_runs(tmp_path: Path) -> None:
    ragkb = shutil.which("ragkb") or str(Path(sys.executable).with_name("ragkb"))
    done = subprocess.run([ragkb, "formats"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and ".pdf" in done.stdout


def test_a_writer_ending_never_clears_another_writers_pending_mark(tmp_path: Path, embedder: Embedder) -> None:
    store = ChromaStore(Settings(data_dir=tmp_path / "kb"))
    collection = store.open("two", model=embedder.identity, dimension=embedder.dimension, create=True)
    first = store._begin_write(collection)
    second = store._begin_write(collection)  # a concurrent writer, begun later
    store._end_write(collection, first)
    assert store.get("two").native.metadata["ragkb_write_pending"] == second, "the second is still writing"
    before = store.generation("two")
    store.repair_generation(collection)  # the second died: the next writer clears its mark, with a change
    assert not store.get("two").native.metadata["ragkb_write_pending"] and store.generation("two") != before


def test_two_files_of_one_name_in_one_upload_keep_the_first(client: TestClient) -> None:
    files = [
        ("files", ("same.txt", b"The first note says the vault opens at nine.\n", "text/plain")),
        ("files", ("same.txt", b"The second note says the vault opens at ten.\n", "text/plain")),
    ]
    data = client.post("/v1/collections/twins/documents", files=files).json()
    assert (data["added"], data["failed"]) == (1, 1) and "appears twice in this batch" in data["failures"][0]["error"]
    [document] = client.get("/v1/collections/twins/documents").json()
    assert document["chunk_count"] == 1, "the document kept its chunks (two versions in one write deleted both)"
