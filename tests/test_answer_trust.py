"""Answer trust on real PDFs: the right page, the sentence that answers, no page furniture, abstention when
the evidence is weak, citations that must support their sentence, and `ragkb eval qa`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from eval.qa import QuestionSetError, read_question_set, score
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from ragkb.cli import app as cli_app
from server.answering.providers import OpenAIProvider
from server.answering.service import ABSTAIN_ANSWER, QueryService

from .helpers import answer_once, pdf_collection, reader_for

PDFS = ("pdfplumber/federal-register-2020-17221.pdf", "pdfplumber/scotus-transcript-p1.pdf")


@pytest.fixture(scope="module")
def pdf_kb(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, shared_pdfs: Path) -> Ingestor:
    root, data_dir = tmp_path_factory.mktemp("trust-pdfs"), tmp_path_factory.mktemp("trust-kb")
    return pdf_collection(root, data_dir, embedder, shared_pdfs, PDFS)


@pytest.mark.slow
def test_a_pdf_answer_quotes_the_fact_from_the_right_page(pdf_kb: Ingestor) -> None:
    response = answer_once(
        QueryService(pdf_kb.settings, reader=reader_for(pdf_kb)),
        "How many people died when Ethiopian Airlines Flight 302 crashed after leaving Addis Ababa?",
    )
    assert "157" in response.answer and not response.abstained  # a paraphrase: the text says "fatalities"
    assert any(c.page == 2 and c.source.endswith("federal-register-2020-17221.pdf") for c in response.citations)
    assert "VerDate" not in response.answer and "Jkt 250001" not in response.answer, "no running header"
    assert response.grounded and 0 < response.confidence <= 1
    sentences = [s.strip() for s in response.answer.split("[") if s.strip()]
    assert len(sentences) == len(set(sentences)), "overlapping chunks do not repeat a sentence"


@pytest.mark.slow
def test_weak_evidence_abstains_with_the_closest_passages(pdf_kb: Ingestor) -> None:
    settings = pdf_kb.settings.model_copy(update={"abstain_below": 0.99, "not_found_below": 0.99})
    response = answer_once(
        QueryService(settings, reader=reader_for(pdf_kb)),
        "What was the name of the captain of Ethiopian Airlines Flight 302?",
    )
    assert response.abstained and response.answer == ABSTAIN_ANSWER
    assert response.citations == [] and response.grounded is False
    assert response.related and response.related[0].text, "the closest passages come back for the user to look at"
    assert 0 <= response.confidence < 0.99


def _llm(answer: str) -> OpenAIProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"choices": [{"index": 0, "delta": {"content": answer}}]}
        stream = f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n".encode()
        return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})

    return OpenAIProvider(base_url="http://llm.test/v1", model="m", transport=httpx.MockTransport(handler))


@pytest.mark.slow
def test_a_refusal_from_the_llm_is_an_abstention(pdf_kb: Ingestor) -> None:
    service = QueryService(
        pdf_kb.settings, reader=reader_for(pdf_kb), provider=_llm("The documents do not contain the answer.")
    )
    response = answer_once(service, "What is the airline's annual revenue?")
    assert response.abstained and response.citations == [] and not response.grounded
    assert response.provider == "openai" and response.related


@pytest.mark.slow
def test_a_citation_of_a_passage_that_does_not_support_its_sentence_is_removed(pdf_kb: Ingestor) -> None:
    question = "How many people died when Ethiopian Airlines Flight 302 crashed after leaving Addis Ababa?"
    service = QueryService(pdf_kb.settings, reader=reader_for(pdf_kb))
    service.cache.clear()  # the contexts, not an answer remembered by an earlier test
    plan = service.plan(service.query(question, collection="pdfs"))
    assert plan.request is not None
    contexts = plan.request.contexts
    right = next(n for n, c in enumerate(contexts, 1) if "157" in c.text)
    wrong = next(n for n, c in enumerate(contexts, 1) if "157" not in c.text and "Ethiopian" not in c.text)
    answer = (
        f"Ethiopian Airlines Flight 302 crashed after takeoff from Addis Ababa, with 157 fatalities [{wrong}]. "
        f"The accident happened on March 10, 2019 [{right}]."
    )
    response = answer_once(
        QueryService(
            pdf_kb.settings.model_copy(update={"support_threshold": 0.4}),
            reader=reader_for(pdf_kb),
            provider=_llm(answer),
        ),
        question,
    )
    assert wrong in response.unsupported_citations
    assert f"[{wrong}]" not in response.answer
    assert response.grounded is False, "the first claim has no supporting citation left"


@pytest.mark.slow
def test_eval_qa_scores_a_question_set_and_gates(
    pdf_kb: Ingestor, tmp_path: Path, shared_pdfs: Path, cli_env: Path
) -> None:
    questions = tmp_path / "qa.jsonl"
    records: list[dict[str, Any]] = [
        {
            "id": "a",
            "question": "How many people died when Ethiopian Airlines Flight 302 crashed after leaving Addis Ababa?",
            "answer": "157",
            "source": "federal-register-2020-17221.pdf",
            "page": 2,
            "split": "check",
        },
        {
            "id": "b",
            "question": "Who argued the case for the petitioner?",
            "answer": None,
            "source": None,
            "page": None,
            "split": "tune",
        },
    ]
    questions.write_text("".join(json.dumps(r) + "\n" for r in records))
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(shared_pdfs / PDFS[0], docs)
    out = tmp_path / "qa.json"
    result = CliRunner().invoke(
        cli_app, ["eval", "qa", str(questions), "-d", str(docs), "--half", "check", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["num_questions"] == 1 and report["metrics"]["right_page_cited"] == 1.0
    assert report["metrics"]["answer_found"] == 1.0 and "| right_page_cited |" in out.with_suffix(".md").read_text()
    worse = dict(report, metrics={**report["metrics"], "answer_found": 1.0, "right_page_cited": 1.0})
    (tmp_path / "base.json").write_text(json.dumps({**worse, "metrics": {**worse["metrics"], "answer_found": 2.0}}))
    gated = CliRunner().invoke(
        cli_app,
        [
            "eval",
            "qa",
            str(questions),
            "-d",
            str(docs),
            "--half",
            "check",
            "--out",
            str(out),
            "--baseline",
            str(tmp_path / "base.json"),
        ],
    )
    assert gated.exit_code == 1 and "REGRESSION: answer_found" in gated.stdout


def test_question_sets_are_checked_line_by_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "x", "source": null, "page": 2}\n')
    with pytest.raises(QuestionSetError, match=r"bad\.jsonl:1: an answerable question needs its source and page"):
        read_question_set(bad)
    bad.write_text("{not json\n")
    with pytest.raises(QuestionSetError, match=r"bad\.jsonl:1: expected an object"):
        read_question_set(bad)
    with pytest.raises(QuestionSetError, match="no questions in half 'check'"):
        bad.write_text('{"question": "q", "answer": null}\n')
        read_question_set(bad, half="check")


def test_abstention_scores() -> None:
    from eval.qa import Outcome

    def outcome(answerable: bool, abstained: bool, page: bool = False, found: bool = False) -> Outcome:
        return Outcome("x", "", answerable, abstained, page, found, 1, 0, 0.5, 1.0, [])

    metrics = score(
        [outcome(True, False, True, True), outcome(True, True), outcome(False, True), outcome(False, False)]
    )
    assert metrics["right_page_cited"] == 0.5 and metrics["answer_found"] == 0.5
    assert metrics["abstention_precision"] == 0.5 and metrics["abstention_recall"] == 0.5
    assert metrics["false_abstention"] == 0.5


@pytest.mark.slow
def test_an_abstention_is_remembered_until_the_documents_change(pdf_kb: Ingestor, tmp_path: Path) -> None:
    settings = pdf_kb.settings.model_copy(update={"abstain_below": 0.99, "not_found_below": 0.99})
    service = QueryService(settings, reader=reader_for(pdf_kb))
    service.cache.clear()
    question = "What was the name of the captain of Ethiopian Airlines Flight 302?"
    first, again = (
        answer_once(service, question),
        answer_once(QueryService(settings, reader=reader_for(pdf_kb)), question),
    )
    assert first.abstained and not first.cached
    assert again.abstained and again.cached and again.related == first.related
    (tmp_path / "crew.md").write_text("# Crew\n\nThe captain of the flight was a senior pilot.\n")
    pdf_kb.ingest_paths([tmp_path / "crew.md"], collection="pdfs")
    after = answer_once(QueryService(settings, reader=reader_for(pdf_kb)), question)
    assert after.abstained and not after.cached, "a change to the collection makes ragkb look again"
