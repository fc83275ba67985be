"""Three outcomes: `answered`, `low_confidence` (the closest passages, cited, that may not answer it) and
`not_found` (refused), decided where the abstention is made, remembered by the answer cache with what decided
it, and shown by `ragkb ask` and counted by `ragkb eval qa`.

Real parts: the Federal Register notice and the Supreme Court transcript of ../shared/pdfs, the real model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.qa import Outcome as QAOutcome
from eval.qa import score, score_by_kind
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.answering.outcomes import LOW_CONFIDENCE_LEAD, missing_specifics, specifics
from server.answering.service import ABSTAIN_ANSWER, QueryService
from server.cli.query import _print_answer

from .helpers import answer_once, pdf_collection, reader_for

PDFS = ("pdfplumber/federal-register-2020-17221.pdf", "pdfplumber/scotus-transcript-p1.pdf")
ANSWERABLE = "How many people died when Ethiopian Airlines Flight 302 crashed after leaving Addis Ababa?"
NEAR_MISS = "How many people died when Ethiopian Airlines Flight 302 crashed in December 2021?"
OFF_TOPIC = "What is the airspeed velocity of an unladen swallow?"


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, shared_pdfs: Path) -> Ingestor:
    root, data_dir = tmp_path_factory.mktemp("outcome-pdfs"), tmp_path_factory.mktemp("outcome-kb")
    return pdf_collection(root, data_dir, embedder, shared_pdfs, PDFS)


def test_the_specifics_of_a_question() -> None:
    assert specifics("How many checks did NICS run in Texas in October 2015?") == ["2015", "October", "NICS", "Texas"]
    assert specifics("What is the cost per product of the stabilizer wiring change?") == []
    assert specifics("When may a party appeal?") == [], "'may' is a verb, not a month"
    text = ["Texas — Permit: 21,550; Totals: 146,982", "NICS Firearm Background Checks November - 2015"]
    assert missing_specifics("How many checks did NICS run in Texas in October 2015?", text) == ["October"]
    assert missing_specifics("Were there 146982 checks in Texas?", text) == [], "digits match with or without commas"
    assert missing_specifics("What did AD 2018–23–51 require?", ["Emergency AD 2018-23-51 was issued"]) == []


@pytest.mark.slow
def test_an_answer_a_near_miss_and_an_off_topic_question(kb: Ingestor) -> None:
    service = QueryService(kb.settings, reader=reader_for(kb))
    service.cache.clear()
    answered = answer_once(service, ANSWERABLE)
    assert answered.outcome == "answered" and not answered.abstained and "157" in answered.answer

    near = answer_once(QueryService(kb.settings, reader=reader_for(kb)), NEAR_MISS)
    assert near.outcome == "low_confidence" and not near.abstained, "2021 and December are in no passage"
    assert near.answer.startswith(LOW_CONFIDENCE_LEAD) and near.citations, "the closest passages, each cited"
    assert all(f"[{c.n}]" in near.answer for c in near.citations)

    off = answer_once(QueryService(kb.settings, reader=reader_for(kb)), OFF_TOPIC)
    assert off.outcome == "not_found" and off.abstained and off.answer == ABSTAIN_ANSWER
    assert off.citations == [] and off.related, "refused, with the closest passages to look at"


@pytest.mark.slow
def test_the_cache_keeps_the_outcome_and_what_decided_it(kb: Ingestor) -> None:
    service = QueryService(kb.settings, reader=reader_for(kb))
    service.cache.clear()
    first = answer_once(service, NEAR_MISS)
    again = answer_once(QueryService(kb.settings, reader=reader_for(kb)), NEAR_MISS)
    assert first.outcome == again.outcome == "low_confidence" and not first.cached and again.cached
    assert again.answer == first.answer and again.citations == first.citations
    stricter = kb.settings.model_copy(update={"not_found_below": 0.99})
    decided_again = answer_once(QueryService(stricter, reader=reader_for(kb)), NEAR_MISS)
    assert not decided_again.cached, "another threshold is another cache key"
    strictest = kb.settings.model_copy(update={"not_found_below": 0.99, "abstain_below": 0.99})
    refused = answer_once(QueryService(strictest, reader=reader_for(kb)), NEAR_MISS)
    assert refused.outcome == "not_found" and refused.abstained and not refused.cached


def test_ragkb_ask_shows_the_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    citation = {"n": 1, "title": "notice", "source": "notice.pdf", "page": 2, "heading": None}
    base = {"model": "extractive", "grounded": False, "cached": False, "citations": [citation], "related": []}
    _print_answer({**base, "answer": f"{LOW_CONFIDENCE_LEAD} Something close [1].", "outcome": "low_confidence"})
    shown = capsys.readouterr()
    assert "Low confidence" in shown.out and "[1] notice (notice.pdf, page 2)" in shown.out
    assert "outcome=low_confidence" in shown.err
    related = [{"title": "notice", "source": "notice.pdf", "page": 5, "heading": None, "text": "..."}]
    _print_answer({**base, "answer": ABSTAIN_ANSWER, "outcome": "not_found", "citations": [], "related": related})
    shown = capsys.readouterr()
    assert "Not found" in shown.out and "Closest passages:" in shown.out and "notice.pdf, page 5" in shown.out


def test_eval_counts_the_outcomes_per_kind() -> None:
    def outcome(kind: str, answerable: bool, result: str, found: bool = False) -> QAOutcome:
        abstained = result == "not_found"
        return QAOutcome("x", kind, answerable, abstained, found, found, 1, 0, 0.5, 1.0, [], outcome=result)

    outcomes = [
        outcome("numeric", True, "answered", found=True),
        outcome("numeric", True, "low_confidence", found=True),
        outcome("numeric", True, "not_found"),
        outcome("unanswerable", False, "low_confidence"),
        outcome("unanswerable", False, "answered"),
    ]
    metrics = score(outcomes)
    assert metrics["confident_answer_found"] == round(1 / 3, 4), "a low-confidence quote is not a confident answer"
    assert metrics["answerable_low_confidence"] == round(1 / 3, 4) == metrics["answerable_not_found"]
    assert metrics["unanswerable_not_confident"] == 0.5 and metrics["unanswerable_not_found"] == 0.0
    kinds = score_by_kind(outcomes)
    assert kinds["numeric"]["outcome_answered"] == round(1 / 3, 4) and kinds["unanswerable"]["outcome_answered"] == 0.5
