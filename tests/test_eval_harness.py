"""The eval harness on a small real BEIR dataset cut from SciFact: reports, index reuse, the regression gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.answers import evaluate_answers
from eval.beir import DatasetError, read_corpus, read_qrels, read_queries
from eval.harness import EvalOptions, run_eval
from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.store import open_store
from ragkb.cli import app
from server.answering.reader import Reader
from server.answering.service import QueryService

runner = CliRunner()


@pytest.fixture(scope="session")
def mini_beir(scifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 train queries, their relevant abstracts and 90 others: small enough to embed in seconds."""
    root = tmp_path_factory.mktemp("mini-scifact")
    qrels = read_qrels(scifact_dir, "train")
    queries = read_queries(scifact_dir)
    chosen = list(qrels)[:30]
    relevant = {d for q in chosen for d in qrels[q]}
    corpus = read_corpus(scifact_dir)
    keep = [d for d in corpus if d.doc_id in relevant] + [d for d in corpus if d.doc_id not in relevant][:90]
    with (root / "corpus.jsonl").open("w") as out:
        for doc in keep:
            out.write(json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text}) + "\n")
    with (root / "queries.jsonl").open("w") as out:
        for q in chosen:
            out.write(json.dumps({"_id": q, "text": queries[q], "metadata": {}}) + "\n")
    (root / "qrels").mkdir()
    with (root / "qrels" / "dev.tsv").open("w") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for q in chosen:
            for d, score in qrels[q].items():
                out.write(f"{q}\t{d}\t{score}\n")
    return root


@pytest.fixture(scope="session")
def mini_kb(mini_beir: Path, tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> tuple[Path, dict]:  # type: ignore[type-arg]
    """A data dir with the mini set embedded once for the whole session, and the first run's report."""
    data_dir = tmp_path_factory.mktemp("mini-kb")
    report = run_eval(Reader(Settings(data_dir=data_dir), embedder=embedder), mini_beir, EvalOptions(split="dev"))
    return data_dir, report


@pytest.mark.slow
def test_report_has_the_contract_keys_and_reuses_the_index(
    mini_beir: Path,
    mini_kb: tuple[Path, dict],
    embedder: Embedder,  # type: ignore[type-arg]
) -> None:
    data_dir, report = mini_kb
    metrics = report["metrics"]
    for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100", "recall@1", "recall@5"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["ndcg@10"] > 0.5, "MiniLM finds most SciFact claims' abstracts among 120 documents"
    assert metrics["recall@100"] >= metrics["recall@10"] >= metrics["recall@1"]
    assert (report["dataset"], report["split"], report["retriever"], report["num_queries"]) == (
        "mini-scifact0",
        "dev",
        "dense",
        30,
    )
    assert report["model"] == "sentence-transformers/all-MiniLM-L6-v2" and report["created_at"]
    assert report["latency_ms"]["p95"] >= report["latency_ms"]["p50"] > 0
    assert report["corpus"]["documents_added"] == len(read_corpus(mini_beir))

    again = run_eval(Reader(Settings(data_dir=data_dir), embedder=embedder), mini_beir, EvalOptions(split="dev"))
    assert again["corpus"] == {
        **again["corpus"],
        "documents_added": 0,
        "documents_unchanged": len(read_corpus(mini_beir)),
    }
    assert again["metrics"] == metrics


@pytest.mark.slow
def test_cli_run_writes_json_and_markdown_then_compare_gates(
    mini_beir: Path,
    mini_kb: tuple[Path, dict],
    tmp_path: Path,
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[type-arg]
) -> None:
    monkeypatch.setenv("RAGKB_DATA_DIR", str(mini_kb[0]))  # the session's embedded mini set: nothing to re-embed
    out = tmp_path / "reports" / "base.json"
    result = runner.invoke(app, ["eval", "run", str(mini_beir), "--split", "dev", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert "| ndcg@10 |" in out.with_suffix(".md").read_text()

    same = runner.invoke(app, ["eval", "compare", str(out), str(out)])
    assert same.exit_code == 0 and "OK" in same.stdout

    worse = dict(report, metrics={**report["metrics"], "ndcg@10": report["metrics"]["ndcg@10"] - 0.05})
    worse_path = tmp_path / "worse.json"
    worse_path.write_text(json.dumps(worse))
    gated = runner.invoke(app, ["eval", "compare", str(out), str(worse_path), "--max-drop", "0.01"])
    assert gated.exit_code == 1 and "REGRESSION: ndcg@10" in gated.stdout
    assert "-0.0500" in gated.stdout
    tolerant = runner.invoke(app, ["eval", "compare", str(out), str(worse_path), "--max-drop", "0.06"])
    assert tolerant.exit_code == 0


def test_unknown_retriever_fails_before_ingesting(mini_beir: Path, cli_env: Path) -> None:
    result = runner.invoke(app, ["eval", "run", str(mini_beir), "--split", "dev", "--retriever", "magic"])
    assert result.exit_code == 2 and "choose one of: bm25, dense, hybrid" in result.stderr
    assert open_store(Settings(data_dir=cli_env)).collection_names() == [], "nothing was ingested"


def test_compare_rejects_files_that_are_not_reports(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text(json.dumps({"metrics": {}}))
    assert runner.invoke(app, ["eval", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]).exit_code == 2
    (tmp_path / "c.json").write_text(json.dumps([1, 2]))
    result = runner.invoke(app, ["eval", "compare", str(tmp_path / "b.json"), str(tmp_path / "c.json")])
    assert result.exit_code == 2 and "not a ragkb eval report" in result.stderr


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"corpus.jsonl": '{"_id": "1", "text": "a"}\n{broken\n'}, "corpus.jsonl:2: malformed JSON"),
        ({"corpus.jsonl": '["no id"]\n'}, "must be an object with an _id"),
        ({}, "corpus.jsonl is missing"),
    ],
)
def test_malformed_datasets_name_the_line(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_corpus(tmp_path)


def test_missing_split_names_the_available_ones(mini_beir: Path) -> None:
    with pytest.raises(DatasetError, match=r"no qrels for split 'test' .* \(available: dev\)"):
        read_qrels(mini_beir, "test")


@pytest.mark.slow
def test_answer_level_eval_scores_grounding_citations_and_cache(
    mini_beir: Path,
    mini_kb: tuple[Path, dict],
    tmp_path: Path,
    embedder: Embedder,  # type: ignore[type-arg]
) -> None:
    shutil.copytree(mini_kb[0], tmp_path / "kb")  # the embedded set, with a cache of this test's own
    (tmp_path / "kb" / "cache.sqlite3").unlink(missing_ok=True)
    settings = Settings(data_dir=tmp_path / "kb")
    service = QueryService(settings, reader=Reader(settings, embedder=embedder))
    report = evaluate_answers(service, mini_beir, split="dev", sample=6)
    metrics = report["metrics"]
    assert report["num_queries"] == 6 and report["provider"] == "extractive"
    assert metrics["grounded_rate"] > 0.5
    assert 0.0 < metrics["citation_precision"] <= 1.0
    assert metrics["cache_hit_rate_first_pass"] == 0.0
    # grounded answers and abstentions are remembered; anything else is asked again
    expected = round(metrics["grounded_rate"] + metrics["abstention_rate"], 4)
    assert metrics["cache_hit_rate_second_pass"] == expected
    assert report["latency_ms"]["p95"] >= report["latency_ms"]["p50"] > 0
