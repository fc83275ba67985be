"""Follow-up questions in a conversation (`ragkb eval conversations SET -d DOCS`): every turn is asked through
the one answering entry, a follow-up first made standalone from the earlier turns
(`server/answering/followup.py`), and each follow-up is scored like `ragkb eval qa` scores a question: the
right page cited and the answer string found (answerable ones), abstention (those no document answers).
The same follow-ups asked as they are, with no rewrite, are scored beside them for comparison.

A set is JSONL, one conversation a line: `{"id", "split", "turns": [{"question", "answer"|null, "source"|null,
"page"|null}, ...]}`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from ingest.errors import RagkbError
from ingest.pipeline import Ingestor
from server.answering.entry import Answerer, Asker, Held
from server.answering.followup import FollowUps, Turn
from server.answering.service import QueryService
from server.schemas import QueryResponse

from .qa import _file, ingest_documents, normalized


class ConversationSetError(RagkbError):
    """A conversation set that cannot be read (the message names the line and the field)."""


@dataclass(frozen=True, slots=True)
class ConversationTurn:
    question: str
    answer: str | None
    source: str | None
    page: int | None


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    split: str | None
    turns: tuple[ConversationTurn, ...]


@dataclass(frozen=True, slots=True)
class FollowUp:
    """What happened to one follow-up (turn 2 and later)."""

    conversation: str
    turn: int
    question: str
    asked: str  # the standalone question retrieval was made for
    how: str  # rule, llm, llm_fallback (the rule after an unusable reply), as_asked
    answerable: bool
    right_page: bool
    answer_found: bool
    abstained: bool
    held: bool
    cited: list[str]
    retrieved: bool = False  # the right page is among the chunks retrieved for `asked` (before any answer)


def read_conversations(path: Path, *, half: str | None = None) -> list[Conversation]:
    if not path.is_file():
        raise ConversationSetError(f"{path}: no such file")
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            turns = tuple(
                ConversationTurn(str(t["question"]), t.get("answer"), t.get("source"), t.get("page"))
                for t in record["turns"]
            )
            conversation = Conversation(str(record["id"]), record.get("split"), turns)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConversationSetError(
                f"{path}:{number}: expected {{id, split, turns: [{{question, answer, source, page}}]}} ({exc})"
            ) from None
        if len(turns) < 2:
            raise ConversationSetError(f"{path}:{number}: a conversation needs at least two turns")
        found.append(conversation)
    if half is not None:
        found = [c for c in found if c.split == half]
    if not found:
        raise ConversationSetError(f"{path}: no conversations" + (f" in half {half!r}" if half else ""))
    return found


def judge(
    conversation: str,
    number: int,
    turn: ConversationTurn,
    asked: str,
    how: str,
    reply: QueryResponse | Held | None,
    retrieved: list[tuple[str, int | None]],
) -> FollowUp:
    """`reply` None: retrieval only (no answer was asked for)."""
    answerable = turn.answer is not None
    in_retrieved = answerable and (turn.source, turn.page) in retrieved
    if reply is None or isinstance(reply, Held):
        held = reply is not None
        return FollowUp(
            conversation, number, turn.question, asked, how, answerable, False, False, False, held, [], in_retrieved
        )
    right_page = any(_file(c.source) == turn.source and c.page == turn.page for c in reply.citations)
    found = turn.answer is not None and normalized(turn.answer) in normalized(reply.answer)
    return FollowUp(
        conversation=conversation,
        turn=number,
        question=turn.question,
        asked=asked,
        how=how,
        answerable=answerable,
        right_page=right_page and not reply.abstained,
        answer_found=found and not reply.abstained,
        abstained=reply.abstained,
        held=False,
        cited=[f"{_file(c.source)}#{c.page}" for c in reply.citations],
        retrieved=in_retrieved,
    )


def _share(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 4) if denominator else 0.0


def score(follow_ups: Sequence[FollowUp], *, answers: bool = True) -> dict[str, float]:
    answerable = [f for f in follow_ups if f.answerable]
    unanswerable = [f for f in follow_ups if not f.answerable]
    retrieved = {"right_page_retrieved": _share(sum(f.retrieved for f in answerable), len(answerable))}
    if not answers:
        return retrieved
    return {
        "right_page": _share(sum(f.right_page for f in answerable), len(answerable)),
        "answer_found": _share(sum(f.answer_found for f in answerable), len(answerable)),
        "right_page_and_answer": _share(sum(f.right_page and f.answer_found for f in answerable), len(answerable)),
        "abstention_recall": _share(sum(f.abstained for f in unanswerable), len(unanswerable)),
        "false_abstention": _share(sum(f.abstained for f in answerable), len(answerable)),
        **retrieved,
    }


async def _converse(
    answerer: Answerer,
    conversations: Sequence[Conversation],
    collection: str,
    rewrite: bool,
    answers: bool,
    rewriter: QueryService,
) -> list[FollowUp]:
    follow_ups = []
    for conversation in conversations:
        history: list[Turn] = []
        for number, turn in enumerate(conversation.turns, start=1):
            request_id = f"conv-{conversation.id}-{number}-{time.perf_counter():.6f}"
            how: str
            if rewrite:
                made = await FollowUps.of(rewriter).standalone(history, turn.question, request_id)
                asked, how = made.question, made.how
            else:
                asked, how = turn.question, "as_asked"
            query = answerer.query(asked, collection=collection)
            reply = await answerer.answer(query, asker=Asker(request_id=request_id)) if answers else None
            history.append(Turn(asked, reply.answer if isinstance(reply, QueryResponse) else ""))
            if number > 1:
                found = await run_in_threadpool(answerer.service.retrieve, query)
                pages = [(_file(c.provenance().display_source), c.provenance().page) for c in found.chunks]
                follow_ups.append(judge(conversation.id, number, turn, asked, how, reply, pages))
    return follow_ups


def evaluate_conversations(
    service: QueryService,
    conversation_set: Path,
    folders: Sequence[Path],
    *,
    half: str | None = None,
    collection: str = "eval-conversations",
    include: list[str] | None = None,
    on_pass: Callable[[str], None] | None = None,
    as_asked: bool = True,
    answers: bool = True,
    rewriter: QueryService | None = None,
) -> dict[str, Any]:
    """Ingest the documents, hold every conversation twice (follow-ups made standalone, and asked as they
    are), cache bypassed, and score the follow-ups. `rewriter`: the query service whose provider makes the
    follow-ups standalone (an LLM's prompt, or the rule for the extractive one) when it is not `service`, so
    that a model's rewrites are measured with the same answers."""
    conversations = read_conversations(conversation_set, half=half)
    reader = service.reader
    ingest_documents(
        Ingestor(reader.settings, store=reader.store, embedder=reader.embedder),
        folders,
        collection,
        include or ["*.pdf"],
    )
    answerer = Answerer.open(reader.settings, service=service)
    runs: dict[str, list[FollowUp]] = {}

    async def run() -> None:
        try:
            for name, rewrite in (("standalone", True), ("as_asked", False))[: 2 if as_asked else 1]:
                if on_pass:
                    on_pass(name)
                service.cache.clear()
                runs[name] = await _converse(answerer, conversations, collection, rewrite, answers, rewriter or service)
        finally:
            await answerer.aclose()

    asyncio.run(run())
    follow_ups = runs["standalone"]
    return {
        "kind": "conversations",
        "dataset": conversation_set.name,
        "split": half or "all",
        **service.describe(),
        "rewritten_with": (rewriter or service).describe(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "num_conversations": len(conversations),
        "num_follow_ups": len(follow_ups),
        "num_answerable": sum(f.answerable for f in follow_ups),
        "answers": answers,
        "metrics": score(follow_ups, answers=answers),
        "as_asked": score(runs["as_asked"], answers=answers) if as_asked else None,
        "rewrites": {how: sum(f.how == how for f in follow_ups) for how in sorted({f.how for f in follow_ups})},
        "follow_ups": [asdict(f) for f in follow_ups],
    }


def markdown_summary(report: dict[str, Any]) -> str:
    baseline = report.get("as_asked")
    rewritten = report.get("rewritten_with") or report
    rows = ["| follow-ups | standalone (rewritten) | as asked |", "| --- | --- | --- |"]
    for name, value in report["metrics"].items():
        rows.append(f"| {name} | {value:.3f} | {baseline[name]:.3f} |" if baseline else f"| {name} | {value:.3f} | - |")
    head = (
        f"{report['dataset']} ({report['split']}): {report['num_conversations']} conversations, "
        f"{report['num_follow_ups']} follow-ups ({report['num_answerable']} answerable), provider "
        f"{report.get('provider', '?')} {report.get('model', '')}; follow-ups rewritten with "
        f"{rewritten.get('provider', '?')} {rewritten.get('model', '')}; rewrites: {report.get('rewrites', {})}"
    )
    return head + "\n\n" + "\n".join(rows)
