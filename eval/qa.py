"""Answer-level evaluation over a question set: is the right page cited, is the answer in the answer, and
does ragkb abstain when (and only when) the documents do not hold the answer?

A question set is JSONL, one object a line:
`{"question": str, "answer": str | null, "source": str | null, "page": int | null}` plus optional `id`,
`kind` and `split` (`tune` / `check`). `answer: null` marks a question the documents do not answer.
`source` is the file name of the document holding the answer; a citation counts as the right page when
its source ends with that file name and its page is `page`.

A multi-part question (eval/datasets/multipart-dev.jsonl) also has `answers` (every string the answer needs)
and `evidence` (every place it needs: `{"source", "page"}` or, for Markdown/HTML, `{"source", "heading"}`);
it is scored by *full evidence* (the citations cover every needed place) and *answer recall* (the share of
the needed strings in the answer). `mode="agent"` answers through agent mode (`server.agent`).

The documents are ingested first (once; unchanged files are skipped) into a collection of their own,
then every question goes through the one answering entry every door uses (`server.answering.Answerer`), so
a curated answer or a collection's review policy holds here as it does over HTTP (a held answer is
counted as `held`: nothing was shown).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.errors import RagkbError
from ingest.pipeline import Ingestor
from server.answering.entry import Answerer, Asker, Held, Mode
from server.answering.service import QueryService
from server.schemas import Citation, QueryResponse

from .harness import metrics_table, percentile

QA_HEADLINE = ("right_page_cited", "answer_found", "abstention_precision", "abstention_recall", "citations_supported")
MODES = ("single", "agent")
OUTCOMES = ("answered", "low_confidence", "not_found")


class QuestionSetError(RagkbError):
    """A question set is missing or has a malformed line."""


@dataclass(frozen=True, slots=True)
class QAItem:
    id: str
    question: str
    answer: str | None
    source: str | None
    page: int | None
    kind: str = ""
    split: str = ""
    answers: tuple[str, ...] = ()  # every string a multi-part answer needs (default: `answer`)
    evidence: tuple[Evidence, ...] = ()  # every place it needs (default: `source` and `page`)
    labels: tuple[str, ...] = ()  # a table cell's row and column labels, which the answer must name too

    @property
    def answerable(self) -> bool:
        return self.answer is not None

    @property
    def needed_answers(self) -> tuple[str, ...]:
        return self.answers or ((self.answer,) if self.answer is not None else ())

    @property
    def needed_evidence(self) -> tuple[Evidence, ...]:
        if self.evidence:
            return self.evidence
        return (Evidence(self.source, self.page),) if self.source is not None else ()


@dataclass(frozen=True, slots=True)
class Evidence:
    """A place an answer needs: a page of a PDF, or a heading of a Markdown/HTML document."""

    source: str
    page: int | None = None
    heading: str | None = None

    def cited_by(self, citation: Citation) -> bool:
        if _file(citation.source) != self.source:
            return False
        if self.page is not None and citation.page != self.page:
            return False
        return self.heading is None or self.heading.casefold() in (citation.heading or "").casefold()


def _evidence(record: dict[str, Any]) -> tuple[Evidence, ...]:
    places = record.get("evidence") or []
    if not isinstance(places, list):
        raise TypeError("evidence must be a list")
    return tuple(
        Evidence(str(e["source"]), None if e.get("page") is None else int(e["page"]), e.get("heading")) for e in places
    )


def read_question_set(path: Path, *, half: str | None = None) -> list[QAItem]:
    """The questions of a set (only those of `half` when given), with line-numbered errors."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise QuestionSetError(f"cannot read {path}: {exc.strerror or exc}") from None
    items: list[QAItem] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            item = QAItem(
                id=str(record.get("id") or f"line{number}"),
                question=str(record["question"]),
                answer=None if record.get("answer") is None else str(record["answer"]),
                source=None if record.get("source") is None else str(record["source"]),
                page=None if record.get("page") is None else int(record["page"]),
                kind=str(record.get("kind") or ""),
                split=str(record.get("split") or ""),
                answers=tuple(str(a) for a in record.get("answers") or ()),
                evidence=_evidence(record),
                labels=tuple(str(label) for label in record.get("labels") or ()),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            message = f"{path}:{number}: expected an object with question/answer/source/page ({exc})"
            raise QuestionSetError(message) from None
        if item.answerable and (item.source is None or item.page is None) and not item.evidence:
            raise QuestionSetError(f"{path}:{number}: an answerable question needs its source and page (or evidence)")
        items.append(item)
    if half is not None:
        items = [item for item in items if item.split == half]
    if not items:
        raise QuestionSetError(f"{path}: no questions" + (f" in half {half!r}" if half else ""))
    return items


def normalized(text: str) -> str:
    """Case, width, dashes and spacing folded, so "737–8" in a PDF matches "737-8" in an answer key."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[\u2010-\u2015\u2212]", "-", text)
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one question."""

    id: str
    kind: str
    answerable: bool
    abstained: bool
    right_page: bool
    answer_found: bool
    citations: int
    unsupported: int
    confidence: float
    ms: float
    cited: list[str]
    full_evidence: bool = False  # the citations cover every place the answer needs
    answers_found: int = 0  # of the strings the answer needs
    answers_needed: int = 0
    steps: int = 0  # agent mode: steps taken
    truncated: bool = False
    origin: str = "generated"  # generated, cached, curated, reviewed; "held" when a reviewer must approve it
    labelled: bool | None = None  # a table cell: its value and every row and column label are in the answer
    outcome: str = "answered"  # answered, low_confidence or not_found (held: nothing was shown)


def judge_held(item: QAItem, ms: float) -> Outcome:
    """A held answer: nothing was shown, so nothing is cited, found or abstained."""
    return Outcome(
        item.id, item.kind, item.answerable, False, False, False, 0, 0, 0.0, ms, [], origin="held", outcome="held"
    )


def judge(item: QAItem, response: QueryResponse, ms: float) -> Outcome:
    cited = [f"{_file(c.source)}#{c.page}" for c in response.citations]
    right_page = item.source is not None and any(
        _file(c.source) == item.source and c.page == item.page for c in response.citations
    )
    found = item.answer is not None and normalized(item.answer) in normalized(response.answer)
    needed = item.needed_evidence
    full = bool(needed) and all(any(e.cited_by(c) for c in response.citations) for e in needed)
    answers_found = sum(normalized(a) in normalized(response.answer) for a in item.needed_answers)
    return Outcome(
        id=item.id,
        kind=item.kind,
        answerable=item.answerable,
        abstained=response.abstained,
        right_page=right_page and not response.abstained,
        answer_found=found and not response.abstained,
        citations=len(response.citations),
        unsupported=len(response.unsupported_citations),
        confidence=response.confidence,
        ms=ms,
        cited=cited,
        full_evidence=full and not response.abstained,
        answers_found=0 if response.abstained else answers_found,
        answers_needed=len(item.needed_answers),
        steps=len(response.steps),
        truncated=response.truncated,
        origin=response.origin,
        outcome=response.outcome,
        labelled=None
        if not item.labels
        else found and not response.abstained and all(_has(response.answer, label) for label in item.labels),
    )


def _has(answer: str, label: str) -> bool:
    return normalized(label) in normalized(answer)


def _share(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 4) if denominator else 0.0


def score(outcomes: Sequence[Outcome]) -> dict[str, float]:
    answerable = [o for o in outcomes if o.answerable]
    unanswerable = [o for o in outcomes if not o.answerable]
    abstained = [o for o in outcomes if o.abstained]
    labelled = [o for o in outcomes if o.labelled is not None]
    citations = sum(o.citations for o in outcomes)
    return {
        "right_page_cited": _share(sum(o.right_page for o in answerable), len(answerable)),
        "answer_found": _share(sum(o.answer_found for o in answerable), len(answerable)),
        "abstention_precision": _share(sum(not o.answerable for o in abstained), len(abstained)),
        "abstention_recall": _share(sum(o.abstained for o in unanswerable), len(unanswerable)),
        "false_abstention": _share(sum(o.abstained for o in answerable), len(answerable)),
        "citations_supported": _share(citations, citations + sum(o.unsupported for o in outcomes)),
        "full_evidence": _share(sum(o.full_evidence for o in answerable), len(answerable)),
        "answer_recall": _share(sum(o.answers_found for o in answerable), sum(o.answers_needed for o in answerable)),
        "held": _share(sum(o.origin == "held" for o in outcomes), len(outcomes)),
        "curated": _share(sum(o.origin in ("curated", "reviewed") for o in outcomes), len(outcomes)),
        "cell_with_labels": _share(sum(bool(o.labelled) for o in labelled), len(labelled)),
        # the three outcomes (issue 22): a confident answer holding the answer, and what was not confident
        "confident_answer_found": _share(
            sum(o.answer_found and o.outcome == "answered" for o in answerable), len(answerable)
        ),
        "answerable_low_confidence": _share(sum(o.outcome == "low_confidence" for o in answerable), len(answerable)),
        "answerable_not_found": _share(sum(o.outcome == "not_found" for o in answerable), len(answerable)),
        "unanswerable_not_confident": _share(
            sum(o.outcome in ("low_confidence", "not_found") for o in unanswerable), len(unanswerable)
        ),
        "unanswerable_not_found": _share(sum(o.outcome == "not_found" for o in unanswerable), len(unanswerable)),
        **{f"outcome_{name}": _share(sum(o.outcome == name for o in outcomes), len(outcomes)) for name in OUTCOMES},
    }


def score_by_kind(outcomes: Sequence[Outcome]) -> dict[str, dict[str, float]]:
    """`score` per kind of question, plus latency and steps (multi-part sets: multi-* against control)."""
    kinds: dict[str, list[Outcome]] = {}
    for o in outcomes:
        kinds.setdefault(o.kind or "-", []).append(o)
    table = {}
    for kind, group in sorted(kinds.items()):
        latencies = [o.ms for o in group]
        table[kind] = {
            **score(group),
            "questions": len(group),
            "steps_mean": round(sum(o.steps for o in group) / len(group), 2),
            "latency_p50_ms": round(percentile(latencies, 0.5), 1),
            "latency_p95_ms": round(percentile(latencies, 0.95), 1),
        }
    return table


def ingest_documents(ingestor: Ingestor, folders: Sequence[Path], collection: str, include: list[str]) -> None:
    report = ingestor.ingest_paths(list(folders), collection=collection, include=include)
    if report.added + report.updated + report.unchanged == 0:
        raise QuestionSetError(f"no documents matching {', '.join(include)} in {', '.join(map(str, folders))}")


async def _answer_all(
    answerer: Answerer,
    items: Sequence[QAItem],
    collection: str,
    on_item: Callable[[int, int], None] | None,
    mode: str = "single",
) -> list[Outcome]:
    outcomes = []
    for number, item in enumerate(items, start=1):
        started = time.perf_counter()
        query = answerer.query(item.question, collection=collection)
        result = await answerer.answer(query, mode=Mode(mode), asker=Asker(request_id=f"qa-{item.id}-{started:.6f}"))
        ms = (time.perf_counter() - started) * 1000
        outcomes.append(judge_held(item, ms) if isinstance(result, Held) else judge(item, result, ms))
        if on_item:
            on_item(number, len(items))
    return outcomes


def evaluate_qa(
    service: QueryService,
    question_set: Path,
    folders: Sequence[Path],
    *,
    half: str | None = None,
    collection: str = "eval-qa",
    include: list[str] | None = None,
    on_item: Callable[[int, int], None] | None = None,
    mode: str = "single",
    limit: int | None = None,
) -> dict[str, Any]:
    """Ingest the documents, answer every question (cache bypassed: a fresh answer each time) and score.
    `mode`: "single" (one retrieval per question) or "agent"; `limit`: only the first N questions."""
    if mode not in MODES:
        raise QuestionSetError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    items = read_question_set(question_set, half=half)[:limit]
    reader = service.reader
    ingest_documents(
        Ingestor(reader.settings, store=reader.store, embedder=reader.embedder),
        folders,
        collection,
        include or ["*.pdf"],
    )

    answerer = Answerer.open(reader.settings, service=service)

    async def run() -> list[Outcome]:
        try:
            return await _answer_all(answerer, items, collection, on_item, mode)
        finally:
            await answerer.aclose()

    service.cache.clear()
    outcomes = asyncio.run(run())
    latencies = [o.ms for o in outcomes]
    settings = service.settings
    return {
        "kind": "qa",
        "dataset": question_set.name,
        "split": half or "all",
        "mode": mode,
        "headline": list(QA_HEADLINE),
        **service.describe(),
        "retriever": settings.retriever,
        "settings": {"top_k": settings.top_k, "abstain_below": settings.abstain_below},
        "num_questions": len(items),
        "num_answerable": sum(item.answerable for item in items),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metrics": score(outcomes),
        "by_kind": score_by_kind(outcomes),
        "steps_mean": round(sum(o.steps for o in outcomes) / max(len(outcomes), 1), 2),
        "latency_ms": {"p50": round(percentile(latencies, 0.5), 1), "p95": round(percentile(latencies, 0.95), 1)},
        "questions": [asdict(o) for o in outcomes],
    }


def evaluate_pages(
    service: QueryService,
    question_set: Path,
    folders: Sequence[Path],
    *,
    retriever: str,
    half: str | None = None,
    collection: str = "eval-qa",
    include: list[str] | None = None,
    top_k: int = 10,
) -> dict[str, Any]:
    """Retrieval only: where the first chunk of the right page ranks for each answerable question
    (page hit@1, hit@5, MRR@10), the page-level counterpart of `ragkb eval run`'s document metrics."""
    items = [item for item in read_question_set(question_set, half=half) if item.answerable]
    reader = service.reader
    writer = Ingestor(reader.settings, store=reader.store, embedder=reader.embedder)
    ingest_documents(writer, folders, collection, include or ["*.pdf"])
    ranks: list[int | None] = []
    latencies: list[float] = []
    for item in items:
        query = service.query(item.question, collection=collection, top_k=top_k, retriever=retriever)
        started = time.perf_counter()
        chunks = service.retrieve(query).chunks
        latencies.append((time.perf_counter() - started) * 1000)
        ranks.append(
            next(
                (rank for rank, c in enumerate(chunks, 1) if _file(c.provenance().source) == item.source
                 and c.provenance().page == item.page),
                None,
            )
        )  # fmt: skip
    count = max(len(ranks), 1)
    return {
        "kind": "qa-pages",
        "dataset": question_set.name,
        "split": half or "all",
        "retriever": retriever,
        "num_questions": len(items),
        "metrics": {
            "page_hit@1": round(sum(r == 1 for r in ranks) / count, 4),
            "page_hit@5": round(sum(r is not None and r <= 5 for r in ranks) / count, 4),
            "page_mrr@10": round(sum(1 / r for r in ranks if r is not None) / count, 4),
        },
        "latency_ms": {"p50": round(percentile(latencies, 0.5), 1), "p95": round(percentile(latencies, 0.95), 1)},
    }


def _file(source: str) -> str:
    return source.replace("\\", "/").rsplit("/", 1)[-1]


def markdown_summary(report: dict[str, Any]) -> str:
    lines = [
        f"### Answer eval: {report['dataset']} ({report['split']}), provider `{report['provider']}`",
        "",
        f"{report['num_questions']} questions ({report['num_answerable']} answerable), retriever "
        f"`{report['retriever']}`, prompt {report['prompt']['name']} v{report['prompt']['version']}, "
        f"{report['created_at']}, mode `{report.get('mode', 'single')}`.",
        "",
        *metrics_table(report),
    ]
    kinds = report.get("by_kind") or {}
    if len(kinds) > 1:
        columns = ("questions", "outcome_answered", "outcome_low_confidence", "outcome_not_found",
                   "confident_answer_found", "right_page_cited", "full_evidence", "answer_recall", "steps_mean",
                   "latency_p50_ms", "latency_p95_ms")  # fmt: skip
        lines += ["| kind | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
        lines += [f"| {kind} | " + " | ".join(f"{row[c]:g}" for c in columns) + " |" for kind, row in kinds.items()]
        lines.append("")
    return "\n".join(lines)
