"""`ragkb eval ...`: offline retrieval and answer evaluation, and the regression gate."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ingest.errors import RagkbError

from .metrics import HEADLINE

eval_app = typer.Typer(
    help="Offline evaluation on BEIR-format datasets, and the regression gate.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)

DatasetArg = Annotated[
    Path, typer.Argument(help="BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).")
]


@contextmanager
def _progress() -> Iterator[Callable[[str], Callable[[int, int], None]]]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    ) as progress:
        tasks: dict[str, object] = {}

        def tracker(label: str) -> Callable[[int, int], None]:
            def update(done: int, total: int) -> None:
                if label not in tasks:
                    tasks[label] = progress.add_task(label, total=total)
                progress.update(tasks[label], completed=done, total=total)  # type: ignore[arg-type]

            return update

        yield tracker


def _write_report(out: Path, report: dict[str, Any], summary: str) -> None:
    """The JSON report at `out`, its Markdown summary beside it, and the summary on the terminal."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(summary)
    console.print(summary, markup=False, highlight=False)
    console.print(f"report: {out} and {out.with_suffix('.md')}")


def _gate(base: dict[str, Any], cand: dict[str, Any], max_drop: float, headline: tuple[str, ...]) -> None:
    """Print the deltas; exit 1 when a headline metric dropped by more than `max_drop`."""
    from .harness import compare_reports

    table, regressions = compare_reports(base, cand, max_drop, headline)
    console.print(table, markup=False, highlight=False)
    if regressions:
        console.print(f"REGRESSION: {', '.join(regressions)} dropped by more than {max_drop}", markup=False)
        raise typer.Exit(1)
    console.print(f"OK: no headline metric dropped by more than {max_drop}")


@eval_app.command("run")
def run(
    dataset: DatasetArg,
    split: Annotated[str, typer.Option(help="qrels split to score (qrels/<split>.tsv).")] = "test",
    retriever: Annotated[str, typer.Option(help="Retrieval strategy from the server's registry.")] = "dense",
    top_k: Annotated[int, typer.Option("--top-k", help="Documents ranked per query.")] = 100,
    limit: Annotated[int | None, typer.Option(help="Score only the first N queries (smoke runs).")] = None,
    query_ids: Annotated[
        Path | None,
        typer.Option(
            "--query-ids",
            help="Score only the query ids in this file, one a line (e.g. eval/splits/scifact-train-check.txt).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the JSON report (Markdown goes beside it).")] = Path(
        "reports/eval.json"
    ),
) -> None:
    """Score retrieval (nDCG@10, recall@k, MRR@10, MAP@100, latency) and write a JSON + Markdown report."""
    from server.answering.reader import Reader
    from server.answering.retrieval import get_retriever

    from .harness import EvalOptions, markdown_summary, run_eval

    try:
        reader = Reader()
        get_retriever(retriever, reader)  # an unknown name fails before minutes of ingestion
        with _progress() as track:
            report = run_eval(
                reader,
                dataset,
                EvalOptions(split, retriever, top_k, limit, query_ids),
                on_ingest=track("ingest corpus"),
                on_query=track("score queries"),
            )
    except RagkbError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    _write_report(out, report, markdown_summary(report))


@eval_app.command("compare")
def compare(
    baseline: Annotated[Path, typer.Argument(help="Baseline report (JSON from `ragkb eval run`).")],
    candidate: Annotated[Path, typer.Argument(help="Candidate report to check against the baseline.")],
    max_drop: Annotated[float, typer.Option(help="Largest allowed absolute drop of a headline metric.")] = 0.01,
) -> None:
    """Print metric deltas; exit 1 when a headline metric drops more than --max-drop."""

    try:
        base, cand = (json.loads(p.read_text()) for p in (baseline, candidate))
    except (OSError, json.JSONDecodeError) as exc:
        err.print(f"[red]error:[/red] cannot read report: {exc}")
        raise typer.Exit(2) from None
    for name, report in (("baseline", base), ("candidate", cand)):
        if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
            err.print(f"[red]error:[/red] the {name} is not a ragkb eval report (no 'metrics' object)")
            raise typer.Exit(2)
    if (base.get("dataset"), base.get("split")) != (cand.get("dataset"), cand.get("split")):
        err.print("[yellow]warning:[/yellow] the reports are for different datasets or splits")
    headline = tuple(cand.get("headline") or base.get("headline") or HEADLINE)
    _gate(base, cand, max_drop, headline)


@eval_app.command("answers")
def answers(
    dataset: DatasetArg,
    split: Annotated[str, typer.Option(help="qrels split to sample queries from.")] = "test",
    sample: Annotated[
        int, typer.Option(help="Number of queries to answer (twice: the second pass checks the cache).")
    ] = 50,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON report here.")] = None,
) -> None:
    """Run the full query path (configured provider) and score grounding, citations, cache and latency."""
    from server.answering.service import QueryService

    from .answers import evaluate_answers

    try:
        with _progress() as track:
            report = evaluate_answers(QueryService(), dataset, split=split, sample=sample, on_query=track("answer"))
    except RagkbError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    text = json.dumps(report, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)


@eval_app.command("qa")
def qa(
    question_set: Annotated[Path, typer.Argument(help="JSONL: {question, answer|null, source, page} per line.")],
    documents: Annotated[
        list[Path], typer.Option("--documents", "-d", help="Folder or file holding the documents (repeatable).")
    ],
    half: Annotated[
        str | None, typer.Option(help="Only questions whose `split` is this (tune or check); all when omitted.")
    ] = None,
    include: Annotated[list[str] | None, typer.Option(help="Glob of documents to ingest [default: *.pdf].")] = None,
    collection: Annotated[str, typer.Option(help="Collection the documents are ingested into.")] = "eval-qa",
    retrieval_only: Annotated[
        bool, typer.Option(help="Score where the right page ranks (page hit@1/@5, MRR@10); no answers.")
    ] = False,
    retriever: Annotated[str | None, typer.Option(help="Retriever for --retrieval-only [default: configured].")] = None,
    mode: Annotated[
        str, typer.Option(help="single (one retrieval per question) or agent (plan, search, review; docs/agent.md).")
    ] = "single",
    limit: Annotated[int | None, typer.Option(help="Answer only the first N questions (smoke runs).")] = None,
    baseline: Annotated[Path | None, typer.Option(help="A previous qa report to gate against.")] = None,
    max_drop: Annotated[float, typer.Option(help="Largest allowed drop of a headline metric vs --baseline.")] = 0.02,
    out: Annotated[Path, typer.Option(help="Where to write the JSON report (Markdown goes beside it).")] = Path(
        "reports/qa.json"
    ),
) -> None:
    """Answer-level eval: right page cited, answer found, abstention precision/recall, citations supported,
    latency; exit 1 when --baseline is given and a headline metric dropped by more than --max-drop."""
    from server.answering.service import QueryService

    from .qa import QA_HEADLINE, evaluate_pages, evaluate_qa, markdown_summary

    if retrieval_only:
        try:
            service = QueryService()
            pages = evaluate_pages(
                service, question_set, documents, retriever=retriever or service.settings.retriever, half=half,
                collection=collection, include=include,
            )  # fmt: skip
        except RagkbError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(pages, indent=2) + "\n")
        console.print(json.dumps(pages, indent=2), markup=False, highlight=False)
        return
    try:
        with _progress() as track:
            report = evaluate_qa(
                QueryService(), question_set, documents, half=half, collection=collection, include=include,
                on_item=track("answer"), mode=mode, limit=limit,
            )  # fmt: skip
    except RagkbError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    _write_report(out, report, markdown_summary(report))
    if baseline is not None:
        try:
            base = json.loads(baseline.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            err.print(f"[red]error:[/red] cannot read the baseline: {exc}")
            raise typer.Exit(2) from None
        _gate(base, report, max_drop, QA_HEADLINE)


@eval_app.command("conversations")
def conversations(
    conversation_set: Annotated[
        Path, typer.Argument(help="JSONL: {id, split, turns: [{question, answer|null, source, page}]} per line.")
    ],
    documents: Annotated[
        list[Path], typer.Option("--documents", "-d", help="Folder or file holding the documents (repeatable).")
    ],
    half: Annotated[
        str | None, typer.Option(help="Only conversations whose `split` is this (tune or check); all when omitted.")
    ] = None,
    include: Annotated[list[str] | None, typer.Option(help="Glob of documents to ingest [default: *.pdf].")] = None,
    collection: Annotated[str, typer.Option(help="Collection the documents are ingested into.")] = "eval-conv",
    as_asked: Annotated[
        bool, typer.Option(help="Also ask the follow-ups as they are, for comparison (a second pass).")
    ] = True,
    retrieval_only: Annotated[
        bool, typer.Option(help="Rewrite and retrieve only (no answers): the right page among the retrieved chunks.")
    ] = False,
    answers_with: Annotated[
        str | None,
        typer.Option(
            help="Answer with this provider (e.g. extractive) while the follow-ups are rewritten with the configured "
            "one (RAGKB_LLM_PROVIDER): a model's rewrites measured with the same answers as the rule's."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the JSON report (Markdown goes beside it).")] = Path(
        "reports/conversations.json"
    ),
) -> None:
    """Follow-ups in conversations: each made standalone from the earlier turns, then scored for the right page
    cited and the answer string found; the same follow-ups asked as they are, beside them."""
    from server.answering.service import QueryService

    from .conversations import evaluate_conversations
    from .conversations import markdown_summary as conversation_summary

    try:
        rewriter = QueryService()
        service = rewriter
        if answers_with is not None:
            settings = rewriter.settings.model_copy(update={"llm_provider": answers_with})
            service = QueryService(settings, reader=rewriter.reader)
        report = evaluate_conversations(
            service, conversation_set, documents, half=half, collection=collection, include=include,
            on_pass=lambda name: err.print(f"asking every turn ({name})"), as_asked=as_asked,
            answers=not retrieval_only, rewriter=rewriter,
        )  # fmt: skip
    except RagkbError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    _write_report(out, report, conversation_summary(report))
