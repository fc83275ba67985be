"""`ragkb review ...` (the review queue), `ragkb feedback ...` (list and export feedback) and
`ragkb collections set/show` (a collection's review policy), working on the state database of the
current settings, like `ragkb keys`. Actions here are audited with `key_name` None (the local operator).

Listing needs only the database; approving and retrying read the store and the model, as the server does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ingest.cli import JsonOption, console, exit_with_error
from ingest.cli import collections as list_collections
from ingest.config import get_settings
from ingest.errors import RagkbError
from ingest.store import open_store

from ..review.curation import Curation
from ..review.desk import Actor, ReviewDesk, detail_of, set_policy, summary_of
from ..review.errors import CuratedNotFound
from ..review.policy import ReviewPolicy
from ..state import Audit
from ..state.reviews import CURATED_STATUSES, STATUSES, ReviewStore
from .state import open_state

review_app = typer.Typer(
    help="The review queue: list, show, approve, reject (or retry) answers; list and withdraw curated answers.",
    no_args_is_help=True,
)
feedback_app = typer.Typer(help="Feedback on answers: list it, or export it as JSONL.", no_args_is_help=True)
collections_app = typer.Typer(
    help="List collections; `set` and `show` manage their review policy.", invoke_without_command=True
)

OPERATOR = Actor(None, None)  # the local operator sees every collection
_POLICIES = ", ".join(p.value for p in ReviewPolicy)


@contextmanager
def _store() -> Iterator[tuple[ReviewStore, Audit]]:
    """The migrated state database's reviews and audit trail (no model is loaded)."""
    with open_state() as db:
        yield ReviewStore(db), Audit(db)


@contextmanager
def _desk() -> Iterator[ReviewDesk]:
    """A review desk with the store and the model loaded, as the server has it (approve and retry)."""
    from ..answering.service import QueryService  # here: listing needs no answering stack

    settings = get_settings()
    with _store() as (store, audit):
        service = QueryService(settings)
        try:
            yield ReviewDesk(service, store, audit, settings)
        finally:
            asyncio.run(service.aclose())


# -- ragkb review ----------------------------------------------------------------------------------


@review_app.command("list")
def review_list(
    status: Annotated[str, typer.Option("--status", help=f"One of: {', '.join(STATUSES)}.")] = "pending",
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50,
    as_json: JsonOption = False,
) -> None:
    """Reviews with this status, oldest first."""
    if status not in STATUSES:
        raise exit_with_error(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    with _store() as (store, _):
        reviews = [summary_of(r, n) for r, n in store.reviews(status=status, collections=None, limit=limit)]
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in reviews]))
        return
    if not reviews:
        console.print(f"no {status} reviews")
        return
    table = Table("id", "collection", "question", "reasons", "confidence", "attempts", "held", "created")
    for r in reviews:
        table.add_row(
            r.id,
            r.collection,
            r.question[:60],
            ", ".join(r.reasons),
            f"{r.confidence:.2f}",
            str(r.attempts),
            "yes" if r.held else "no",
            r.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@review_app.command("show")
def review_show(review_id: Annotated[str, typer.Argument(help="The review id.")], as_json: JsonOption = False) -> None:
    """The question, the newest candidate with each cited passage, every numbered passage, and the history."""
    with _store() as (store, _):
        found = store.review(review_id)
    if found is None:
        raise exit_with_error(f"no review with id {review_id!r}: see `ragkb review list`")
    detail = detail_of(*found)
    if as_json:
        print(json.dumps(detail.model_dump(mode="json")))
        return
    console.print(
        f"[bold]{detail.question}[/bold]  ({detail.collection}; {detail.status}; {', '.join(detail.reasons)})"
    )
    console.print(
        f"\n[bold]Candidate {len(detail.history)}[/bold] (confidence {detail.confidence:.2f}):\n{detail.answer}"
    )
    console.print("\n[bold]Passages[/bold] (cite them as [n] in an edited answer):")
    for p in detail.context:
        where = f"p. {p.page}" if p.page else (p.heading or "")
        console.print(f"[{p.n}] {p.source} {where} ({p.chunk_id})\n    {p.text[:300]}")
    if len(detail.history) > 1:
        console.print("\n[bold]History[/bold]")
        for a in detail.history:
            console.print(f"  {a.n}. {a.strategy}  note: {a.note or '-'}\n     {a.answer[:120]}")


@review_app.command("approve")
def review_approve(
    review_id: Annotated[str, typer.Argument(help="The review id.")],
    answer_file: Annotated[
        Path | None, typer.Option("--answer-file", help="An edited answer (UTF-8 text citing passages as [n]).")
    ] = None,
    extra_chunk: Annotated[
        list[str] | None, typer.Option("--chunk", help="A chunk id the edited answer may cite beyond the passages.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Approve the newest candidate, or the edited answer in --answer-file (validated like model output)."""
    answer = None
    if answer_file is not None:
        try:
            answer = answer_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise exit_with_error(f"cannot read {answer_file}: {exc}") from None
    with _desk() as desk:
        detail = desk.approve(review_id, OPERATOR, answer=answer, extra_chunks=extra_chunk or [])
    if as_json:
        print(json.dumps(detail.model_dump(mode="json")))
        return
    console.print(f"approved review {review_id}; it is now the curated answer to: {detail.question}")


@review_app.command("reject")
def review_reject(
    review_id: Annotated[str, typer.Argument(help="The review id.")],
    retry: Annotated[bool, typer.Option("--retry", help="Make another candidate and queue it again.")] = False,
    note: Annotated[str | None, typer.Option("--note", help="What was wrong (passed to the retry).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Reject for good (the asker is told it was not answered), or --retry with a new candidate."""
    with _desk() as desk:
        detail = asyncio.run(desk.reject(review_id, OPERATOR, retry=retry, note=note))
    if as_json:
        print(json.dumps(detail.model_dump(mode="json")))
        return
    if retry:
        console.print(f"candidate {len(detail.history)} queued for review {review_id}:\n{detail.answer}")
    else:
        console.print(f"rejected review {review_id}")


@review_app.command("curated")
def review_curated(
    collection: Annotated[str | None, typer.Option("--collection", help="Only this collection.")] = None,
    status: Annotated[str, typer.Option("--status", help=f"One of: {', '.join(CURATED_STATUSES)}, all.")] = "active",
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50,
    as_json: JsonOption = False,
) -> None:
    """Curated answers (approved answers served for the same question), newest approval first."""
    if status not in (*CURATED_STATUSES, "all"):
        raise exit_with_error(f"unknown status {status!r}: use one of {', '.join(CURATED_STATUSES)}, all")
    with _store() as (store, audit):
        found = Curation(store, audit).list(
            OPERATOR, collection=collection, status=None if status == "all" else status, limit=limit
        )
    if as_json:
        print(json.dumps([c.model_dump(mode="json") for c in found]))
        return
    if not found:
        console.print("no curated answers" if status == "all" else f"no {status} curated answers")
        return
    table = Table("id", "collection", "question", "answer", "reviewer", "approved", "status")
    for c in found:
        table.add_row(
            str(c.id),
            c.collection,
            c.question[:50],
            c.answer[:50],
            c.reviewer or "-",
            c.approved_at.strftime("%Y-%m-%d %H:%M"),
            c.status if c.withdrawn_at is None else f"{c.status} {c.withdrawn_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@review_app.command("withdraw")
def review_withdraw(
    curated_id: Annotated[int, typer.Argument(help="The curated answer's id (see `ragkb review curated`).")],
    as_json: JsonOption = False,
) -> None:
    """Withdraw a curated answer: its question is answered afresh (and reviewed as the collection's policy says)."""
    with _store() as (store, audit):
        try:
            withdrawn = Curation(store, audit).withdraw(curated_id, OPERATOR)
        except CuratedNotFound as exc:
            raise exit_with_error(f"{exc}: see `ragkb review curated --status all`") from None
    if as_json:
        print(json.dumps(withdrawn.model_dump(mode="json")))
        return
    console.print(f"withdrew curated answer {curated_id} ({withdrawn.collection}): {withdrawn.question}")


# -- ragkb feedback ------------------------------------------------------------------------------


@feedback_app.command("list")
def feedback_list(
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 50,
    rating: Annotated[str | None, typer.Option("--rating", help="up or down.")] = None,
    collection: Annotated[str | None, typer.Option("--collection")] = None,
    as_json: JsonOption = False,
) -> None:
    """Feedback, newest first, with the question and answer it is about."""
    rows = _feedback(limit, rating, collection)
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        console.print("no feedback")
        return
    table = Table("at", "rating", "collection", "question", "comment", "request id")
    for row in rows:
        table.add_row(
            row["at"][:16],
            row["rating"],
            row["collection"],
            row["question"][:50],
            (row["comment"] or "")[:40],
            row["request_id"],
        )
    console.print(table)


@feedback_app.command("export")
def feedback_export(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the JSONL ('-' for stdout).")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=1_000_000)] = 100_000,
    rating: Annotated[str | None, typer.Option("--rating", help="up or down.")] = None,
    collection: Annotated[str | None, typer.Option("--collection")] = None,
) -> None:
    """One JSON object per feedback: rating, comment, citation verdicts, and the answer exactly as shown
    (question, answer, citations, retrieved chunk ids, prompt version, provider, model, confidence)."""
    rows = _feedback(limit, rating, collection)
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    if str(output) == "-":
        print(lines, end="")
        return
    try:
        output.write_text(lines, encoding="utf-8")
    except OSError as exc:
        raise exit_with_error(f"cannot write {output}: {exc}") from None
    console.print(f"wrote {len(rows)} feedback records to {output}")


def _feedback(limit: int, rating: str | None, collection: str | None) -> list[dict[str, Any]]:
    if rating is not None and rating not in ("up", "down"):
        raise exit_with_error(f"unknown rating {rating!r}: use up or down")
    with _store() as (store, _):
        found = store.feedback(limit=limit, rating=rating, collection=collection)
    return [
        {
            "feedback_id": fb.id,
            "at": fb.at.isoformat(),
            "rating": fb.rating,
            "comment": fb.comment,
            "citation_verdicts": fb.citations or [],
            "key": fb.key_name,
            "request_id": answer.request_id,
            "collection": answer.collection,
            "question": answer.question,
            "answer": answer.answer,
            "citations": answer.citations,
            "chunk_ids": answer.chunk_ids,
            "prompt": answer.prompt,
            "provider": answer.provider,
            "model": answer.model,
            "confidence": answer.confidence,
            "origin": answer.origin,
            "abstained": answer.abstained,
        }
        for fb, answer in found
    ]


# -- ragkb collections -----------------------------------------------------------------------------


@collections_app.callback()
def collections_main(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List collections with their chunk counts and embedding model; `set NAME --review POLICY` and `show`
    manage each collection's review policy."""
    if ctx.invoked_subcommand is None:
        list_collections(as_json=as_json)


@collections_app.command("set")
def collections_set(
    name: Annotated[str, typer.Argument(help="The collection.")],
    review: Annotated[str, typer.Option("--review", help=f"Review policy: {_POLICIES}.")],
) -> None:
    """Set a collection's review policy: off (answers go out), flagged (doubtful and thumbs-down answers are
    queued after they go out) or required (every answer is held until a reviewer approves it)."""
    try:
        known = open_store(get_settings()).collection_names()
    except RagkbError as exc:
        raise exit_with_error(str(exc)) from None
    if name not in known:
        raise exit_with_error(f"no collection {name!r}: collections are {', '.join(sorted(known)) or 'none yet'}")
    with _store() as (store, audit):
        policy = set_policy(store, audit, name, review, None)
    console.print(f"collection {name}: review {policy.value}")


@collections_app.command("show")
def collections_show(as_json: JsonOption = False) -> None:
    """Every collection that has a review policy other than the default (off)."""
    with _store() as (store, _):
        policies = store.policies()
    if as_json:
        print(json.dumps(policies))
        return
    if not policies:
        console.print("every collection has review policy off")
    for name, policy in sorted(policies.items()):
        console.print(f"{name}: review {policy}")
