"""The ingestion commands of `ragkb` (ingest, delete, collections, documents, worker, formats).

The `ragkb` command itself is `ragkb/cli.py`, which mounts this app beside the server's and eval's.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import get_settings
from .errors import RagkbError
from .loaders import supported_extensions

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
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
    from .datadir import refuse_if_served
    from .pipeline import Ingestor

    name = _collection(collection)
    try:
        refuse_if_served(get_settings(), "ingest")
        ingestor = Ingestor()
        show_bar = err.is_terminal and not as_json
        with (
            Progress(
                TextColumn("[bold]ingest[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=err,
                disable=not show_bar,
                transient=True,
            ) as progress,
            _stopping_on_signals(ingestor.stop),
        ):
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
    if report.interrupted:
        err.print("[yellow]stopped:[/yellow] what was embedded is stored; run the same command again to finish")
        raise typer.Exit(130)
    raise typer.Exit(0 if report.ok else 1)


@contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and Ctrl-C ask ingestion to stop between files and batches (what is written stays consistent)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: object) -> None:
        err.print("[yellow]stopping after the current batch ...[/yellow]")
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command()
def delete(
    document: Annotated[str, typer.Argument(help="Document id or source path (see `ragkb documents`).")],
    collection: CollectionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a document and every one of its chunks."""
    from .datadir import refuse_if_served
    from .pipeline import Ingestor

    name = _collection(collection)
    try:
        refuse_if_served(get_settings(), "delete")
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
    from .store import open_store

    try:
        rows = open_store(get_settings()).collections()
    except RagkbError as exc:
        raise exit_with_error(str(exc)) from None
    if as_json:
        print(json.dumps([{"name": c.name, "chunks": c.chunks, "model": c.model} for c in rows]))
        return
    table = Table("collection", "documents", "chunks", "model")
    for c in rows:
        table.add_row(c.name, str(c.documents), str(c.chunks), c.model or "?")
    console.print(table)


@app.command()
def documents(collection: CollectionOption = None, as_json: JsonOption = False) -> None:
    """List the documents of a collection with their chunk counts."""
    from .store import open_store

    name = _collection(collection)
    try:
        store = open_store(get_settings())
        docs = store.documents(store.get(name))
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
    from .datadir import refuse_if_served
    from .pipeline import Ingestor
    from .queue import JobQueue

    settings = get_settings()
    if not settings.queue_url:
        raise exit_with_error(
            "RAGKB_QUEUE_URL is not set: there is no queue to work on (e.g. redis://127.0.0.1:6379/0)"
        )
    try:
        refuse_if_served(settings, "queued ingestion")
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
