"""`ragkb`: the single command-line entry point (ingestion commands live here; others are mounted)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import get_settings
from .errors import CollectionNotFound, RagkbError
from .loaders import supported_extensions

app = typer.Typer(
    name="ragkb",
    help="ragkb: a self-hosted knowledge base that answers questions from your documents, with citations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

CollectionOption = Annotated[
    str | None,
    typer.Option("--collection", "-c", help="Collection (knowledge base) name. [default: RAGKB_DEFAULT_COLLECTION]"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def _collection(name: str | None) -> str:
    return name or get_settings().default_collection


def exit_with_error(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files and directories (searched recursively).")],
    collection: CollectionOption = None,
    include: Annotated[
        list[str] | None,
        typer.Option("--include", "-i", help="Glob of files to take from directories (repeatable)."),
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", "-x", help="Glob of paths to leave out (repeatable).")
    ] = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="Also delete documents from these directories whose files are gone.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Ingest documents (PDF, Markdown, text, HTML) into a collection.

    Unchanged files are skipped without re-embedding; changed files replace their old chunks.
    Exits non-zero when any file failed; one bad file never stops the others.
    """
    from .pipeline import Ingestor

    name = _collection(collection)
    try:
        ingestor = Ingestor()
        show_bar = err.is_terminal and not as_json
        with Progress(
            TextColumn("[bold]ingest[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=err,
            disable=not show_bar,
            transient=True,
        ) as progress:
            task = progress.add_task("discovering", total=None)
            report = ingestor.ingest_paths(
                paths,
                collection=name,
                include=include,
                exclude=exclude,
                on_discovered=lambda total: progress.update(task, total=total),
                on_file_done=lambda path: progress.update(task, advance=1, description=Path(path).name[:40]),
                prune=prune,
            )
    except RagkbError as exc:
        raise exit_with_error(str(exc)) from None
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        summary = (
            f"[bold]{name}[/bold]: {report.added} added, {report.updated} updated, "
            f"{report.unchanged} unchanged, {report.failed} failed, {report.skipped} skipped, "
            f"{report.deleted} deleted; "
            f"{report.chunks_added} chunks embedded in {report.seconds:.1f}s"
        )
        console.print(summary)
        for warning in report.warnings:
            err.print(f"[yellow]warning:[/yellow] {warning}")
        for failure in report.failures:
            err.print(f"[red]failed:[/red] {failure.path}: {failure.error}")
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def delete(
    document: Annotated[str, typer.Argument(help="Document id or source path (see `ragkb documents`).")],
    collection: CollectionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a document and every one of its chunks."""
    from .pipeline import Ingestor

    name = _collection(collection)
    try:
        info, removed = Ingestor().delete(name, document)
    except RagkbError as exc:
        raise exit_with_error(str(exc), 1) from None
    if as_json:
        print(json.dumps({"document_id": info.document_id, "source": info.source, "chunks_deleted": removed}))
    else:
        console.print(f"deleted {info.source} ({info.document_id}): {removed} chunks")


@app.command()
def collections(as_json: JsonOption = False) -> None:
    """List collections with their chunk counts and embedding model."""
    from .store import ChunkStore

    try:
        rows = ChunkStore(get_settings()).collections()
    except RagkbError as exc:
        raise exit_with_error(str(exc)) from None
    if as_json:
        print(json.dumps([{"name": n, "chunks": c, "model": m.get("ragkb_embed_model")} for n, c, m in rows]))
        return
    table = Table("collection", "chunks", "model")
    for name, count, meta in rows:
        table.add_row(name, str(count), str(meta.get("ragkb_embed_model", "?")))
    console.print(table)


@app.command()
def documents(collection: CollectionOption = None, as_json: JsonOption = False) -> None:
    """List the documents of a collection with their chunk counts."""
    from .store import ChunkStore

    name = _collection(collection)
    try:
        store = ChunkStore(get_settings())
        if name not in store.collection_names():
            raise CollectionNotFound(name, store.collection_names())
        docs = store.documents(store.client.get_collection(name, embedding_function=None))
    except RagkbError as exc:
        raise exit_with_error(str(exc), 1) from None
    if as_json:
        print(json.dumps([dataclasses.asdict(d) for d in docs], indent=2))
        return
    table = Table("document id", "chunks", "kind", "title", "source")
    for doc in docs:
        table.add_row(doc.document_id, str(doc.chunk_count), doc.kind, doc.title[:40], doc.source)
    console.print(table)


@app.command()
def worker(
    once: Annotated[bool, typer.Option("--once", help="Exit when the queue is empty instead of waiting.")] = False,
    requeue_stalled: Annotated[
        bool, typer.Option(help="First put back jobs a dead worker left half-done (only when no other worker runs).")
    ] = False,
) -> None:
    """Process queued ingestion jobs (uploads made while RAGKB_QUEUE_URL is set). Run as many as you like."""
    from .pipeline import Ingestor
    from .queue import JobQueue

    settings = get_settings()
    if not settings.queue_url:
        raise exit_with_error(
            "RAGKB_QUEUE_URL is not set: there is no queue to work on (e.g. redis://127.0.0.1:6379/0)"
        )
    try:
        queue = JobQueue(settings.queue_url)
        ingestor = Ingestor()
        if requeue_stalled:
            err.print(f"requeued {queue.requeue_stalled()} stalled jobs")
    except RagkbError as exc:
        raise exit_with_error(str(exc)) from None

    def ingest(collection: str, name: str, source: str, data: bytes) -> dict[str, object]:
        return ingestor.ingest_items([(name, source, data)], collection=collection).as_dict()

    err.print(f"worker waiting for jobs on {settings.queue_url} (Ctrl-C to stop)")
    try:
        while True:
            job_id = queue.work_one(ingest)
            if job_id:
                console.print(f"job {job_id}: {queue.status(job_id)['status']}")
            elif once:
                break
    except KeyboardInterrupt:
        pass


@app.command()
def formats() -> None:
    """List the file types ragkb can ingest."""
    console.print(" ".join(supported_extensions()))


if __name__ == "__main__":
    app()
