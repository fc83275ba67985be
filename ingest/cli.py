"""The ingestion commands of `ragkb` (ingest, crawl, delete, collections, documents, worker, formats).

The `ragkb` command itself is `ragkb/cli.py`, which mounts this app beside the server's and eval's.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import get_settings
from .errors import RagkbError
from .loaders import supported_extensions

if TYPE_CHECKING:
    from .pipeline import IngestReport

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


def _progress(label: str, *, show: bool) -> Progress:
    """The progress bar of a long command on stderr (hidden when stderr is not a terminal, or with --json)."""
    return Progress(
        TextColumn(f"[bold]{label}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err,
        disable=not show,
        transient=True,
    )


@app.command()
def ingest(
    targets: Annotated[
        list[str], typer.Argument(help="Files, directories (searched recursively) or http(s) URLs of pages.")
    ],
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
    watch: Annotated[
        bool,
        typer.Option(
            "--watch", help="Keep watching: ingest new and changed files, remove deleted ones, until SIGTERM."
        ),
    ] = False,
    debounce: Annotated[
        float, typer.Option("--debounce", min=0.0, help="With --watch: seconds of quiet before a burst is ingested.")
    ] = 2.0,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="With --watch: seconds between looks at the folders.")
    ] = 1.0,
    as_json: JsonOption = False,
) -> None:
    """Ingest documents (PDF, Office, e-mail, EPUB, images, Markdown, text, HTML; `ragkb formats`).

    Unchanged files are skipped without re-embedding; changed files replace their old chunks.
    Exits non-zero when any file failed; one bad file never stops the others.
    """
    from .datadir import refuse_if_served
    from .pipeline import Ingestor

    name = _collection(collection)
    urls = [t for t in targets if t.startswith(("http://", "https://"))]
    paths = [Path(t) for t in targets if t not in urls]
    if urls:
        if paths or watch:
            raise exit_with_error("give web pages and local files in separate commands (and --watch only folders)")
        _ingest_urls(urls, name, as_json)
        return
    if watch:
        _watch(paths, name, include, exclude, debounce=debounce, interval=interval, as_json=as_json)
        return
    try:
        refuse_if_served(get_settings(), "ingest")
        ingestor = Ingestor()
        show_bar = err.is_terminal and not as_json
        with (
            _progress("ingest", show=show_bar) as progress,
            _stopping_on_signals(ingestor.stop),
        ):
            task = progress.add_task("discovering", total=None)
            meter = _ChunkMeter(lambda text: progress.update(task, description=text))
            report = ingestor.ingest_paths(
                paths,
                collection=name,
                include=include,
                exclude=exclude,
                on_discovered=lambda total: progress.update(task, total=total),
                on_file_done=lambda path: progress.update(task, advance=1),
                on_stage=meter,
                prune=prune,
            )
    except RagkbError as exc:
        raise exit_with_error(str(exc)) from None
    _print_report(name, report, as_json)
    if report.interrupted:
        err.print("[yellow]stopped:[/yellow] what was embedded is stored; run the same command again to finish")
        raise typer.Exit(130)
    raise typer.Exit(0 if report.ok else 1)


def _print_report(name: str, report: IngestReport, as_json: bool, *, compact: bool = False) -> None:
    if as_json:
        print(json.dumps(report.as_dict(), indent=None if compact else 2), flush=True)
        return
    summary = (
        f"[bold]{name}[/bold]: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.failed} failed, {report.skipped} skipped, "
        f"{report.deleted} deleted; "
        + (f"{report.attachments} attachments stored; " if report.attachments else "")
        + f"{report.chunks_added} chunks embedded in {report.seconds:.1f}s"
    )
    console.print(summary)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}")
    for failure in report.failures:
        err.print(f"[red]failed:[/red] {failure.path}: {failure.error}")


def _ingest_urls(urls: list[str], name: str, as_json: bool) -> None:
    from .datadir import refuse_if_served
    from .pipeline import Ingestor
    from .web import WebIngest

    try:
        refuse_if_served(get_settings(), "ingest")
        report = WebIngest(Ingestor()).ingest_urls(urls, collection=name)
    except RagkbError as exc:
        raise exit_with_error(str(exc)) from None
    _print_report(name, report, as_json)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def crawl(
    url: Annotated[str, typer.Argument(help="Start page; the crawl stays on its scheme, host and port.")],
    collection: CollectionOption = None,
    depth: Annotated[int, typer.Option("--depth", min=0, help="Links followed from the start page.")] = 2,
    max_pages: Annotated[int, typer.Option("--max-pages", min=1, help="Pages fetched at most.")] = 100,
    prune: Annotated[
        bool, typer.Option("--prune", help="Delete this site's stored pages that are gone (404/410, or unlinked).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Ingest a website: same origin, robots.txt honoured, sitemap read, a polite delay (RAGKB_WEB_DELAY);
    re-crawls skip unchanged pages (ETag, Last-Modified, content)."""
    from .datadir import refuse_if_served
    from .pipeline import Ingestor
    from .web import WebIngest

    name = _collection(collection)
    if not url.startswith(("http://", "https://")):
        raise exit_with_error(f"not an http(s) URL: {url}")
    try:
        refuse_if_served(get_settings(), "crawl")
        report = WebIngest(Ingestor()).crawl(url, collection=name, depth=depth, max_pages=max_pages, prune=prune)
    except RagkbError as exc:
        raise exit_with_error(str(exc)) from None
    _print_report(name, report, as_json)
    raise typer.Exit(0 if report.ok else 1)


def _watch(
    paths: list[Path],
    name: str,
    include: list[str] | None,
    exclude: list[str] | None,
    *,
    debounce: float,
    interval: float,
    as_json: bool,
) -> None:
    """`ingest --watch`: a pass now and after every burst of changes (one JSON line per pass with --json);
    SIGTERM or Ctrl-C stops it between batches, exit status 0."""
    from .datadir import refuse_if_served
    from .pipeline import Ingestor
    from .watch import FolderWatcher

    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise exit_with_error(f"--watch takes directories; not a directory: {', '.join(missing)}")
    try:
        refuse_if_served(get_settings(), "ingest")
        ingestor = Ingestor()
        watcher = FolderWatcher(
            ingestor, paths, collection=name, include=include, exclude=exclude, interval=interval,
            debounce=debounce, on_report=lambda report: _print_report(name, report, as_json, compact=True),
        )  # fmt: skip
        if not as_json:
            err.print(f"watching {', '.join(map(str, paths))} (Ctrl-C or SIGTERM to stop)")
        with _stopping_on_signals(ingestor.stop):
            watcher.run(ingestor.stop)
    except RagkbError as exc:
        raise exit_with_error(str(exc)) from None
    if not as_json:
        err.print(f"stopped watching after {watcher.passes} pass(es)")


class _ChunkMeter:
    """The progress bar's text: chunks embedded, their rate, and the file being parsed."""

    def __init__(self, show: Callable[[str], None]) -> None:
        self.show = show
        self.chunks = 0
        self.file = ""
        self.started = time.perf_counter()

    def __call__(self, stage: str, name: str, chunks: int) -> None:
        if stage == "parsing":
            self.file = Path(name).name[:40]
        elif stage == "written":
            self.chunks += chunks
        rate = self.chunks / max(time.perf_counter() - self.started, 1e-6)
        self.show(f"{self.chunks:,} chunks, {rate:,.0f} chunks/s  {stage} {self.file}")


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


def collections(as_json: bool = False) -> None:
    """List collections with their chunk counts and embedding model (`ragkb collections`, mounted with the
    collection settings commands in server/review_cli.py)."""
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
    for doc in docs:  # an attachment's source names its message (`MESSAGE#attachment/NAME`)
        table.add_row(doc.document_id, str(doc.chunk_count), doc.kind, doc.title[:40], doc.source)
    console.print(table)


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-n", min=1, max=64, help="Worker processes (each loads the model once).")
    ] = 1,
    shutdown_timeout: Annotated[
        float,
        typer.Option(help="Seconds SIGTERM waits for running jobs to finish; past it they are left to be redelivered."),
    ] = 600.0,
) -> None:
    """Run ingestion workers on the task engine (Dramatiq) for jobs queued while RAGKB_QUEUE_URL is set.

    Run as many as you like, on as many machines as share the data dir. A job is acknowledged only when it
    ends: a worker that dies leaves its job to another (see `ragkb jobs`, docs/ingestion.md).
    """
    import os

    from .datadir import hold_for_worker
    from .lifeline import PARENT_ENV

    settings = get_settings()
    if not settings.queue_url:
        raise exit_with_error(
            "RAGKB_QUEUE_URL is not set: there is no queue to work on (e.g. redis://127.0.0.1:6379/0 or "
            "amqp://guest:guest@127.0.0.1:5672/)"
        )
    try:
        # embedded store: held shared while we run (each worker process takes it too), so no server starts beside
        store_lock = hold_for_worker(settings)
    except RagkbError as exc:
        raise exit_with_error(str(exc)) from None
    os.environ[PARENT_ENV] = str(os.getpid())  # the worker processes die with this one (ingest/lifeline.py)
    import logging

    logging.getLogger().setLevel(logging.INFO)  # a worker says when it is ready and what its jobs do
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Chroma request otherwise
    # one job at a time per process: a busy worker does not hold jobs that an idle one could run
    os.environ.setdefault("dramatiq_queue_prefetch", "1")
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    from .queue import QUEUE_NAME

    args = make_argument_parser().parse_args(
        ["ingest.tasks", "--processes", str(concurrency), "--threads", "1", "--queues", QUEUE_NAME,
         "--worker-shutdown-timeout", str(int(shutdown_timeout * 1000))]
    )  # fmt: skip
    err.print(f"{concurrency} ingestion worker(s) on {_redacted(settings.queue_url)} (Ctrl-C or SIGTERM to stop)")
    try:
        code = dramatiq_main(args) or 0
    finally:
        if store_lock is not None:
            store_lock.release()
    raise typer.Exit(code)


def _redacted(url: str) -> str:
    """A broker URL without its password, for logs."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


@app.command()
def jobs(
    job_id: Annotated[str | None, typer.Argument(help="One job's id: show it in full.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many recent jobs to list.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Show queued ingestion jobs: status, stage, files done, chunks embedded, attempts, worker."""
    import time

    from .queue import job_records

    records = job_records(get_settings())
    try:
        rows = [records.status(job_id)] if job_id else records.recent(limit)
    except RagkbError as exc:
        raise exit_with_error(str(exc), 1) from None
    if as_json or job_id:
        print(json.dumps(rows[0] if job_id else rows, indent=2))
        return
    table = Table("job", "collection", "status", "stage", "files", "chunks", "attempts", "updated", "error")
    now = time.time()
    for row in rows:
        table.add_row(
            str(row["id"]), str(row.get("collection", "")), str(row.get("status", "")), str(row.get("stage", "")),
            f"{row.get('files_done', 0)}/{row.get('files_total', 0)}", str(row.get("chunks_embedded", 0)),
            str(row.get("attempts", 0)), f"{now - float(row.get('updated_at') or now):.0f}s ago",
            str(row.get("error") or "")[:60],
        )  # fmt: skip
    console.print(table)


@app.command()
def reindex(
    collection: Annotated[str, typer.Option("--collection", "-c", help="The collection to rebuild.")],
    model: Annotated[str | None, typer.Option("--model", help="Embedding model to rebuild with.")] = None,
    chunk_tokens: Annotated[
        int | None, typer.Option("--chunk-tokens", min=16, help="Chunk size in embedder tokens.")
    ] = None,
    chunk_overlap: Annotated[
        int | None, typer.Option("--chunk-overlap", min=0, help="Tokens shared by chunks.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Rebuild a collection from its kept originals with new settings, then switch to it at once.

    No re-upload. Queries keep being answered from the current version during the rebuild; the old
    version is dropped after the switch. A server that should answer from a new --model needs that
    model as its RAGKB_EMBED_MODEL too.
    """
    from .datadir import refuse_if_served
    from .reindex import Reindexer, describe, reindex_settings

    settings = get_settings()
    try:
        refuse_if_served(settings, "reindex (use POST /v1/collections/{name}/reindex on the server)")
        new = reindex_settings(settings, model=model, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap)
        show_bar = err.is_terminal and not as_json
        with _progress("reindex", show=show_bar) as progress:
            task = progress.add_task("starting", total=None)

            def show(p: Any) -> None:
                progress.update(task, total=p.documents_total or None, completed=p.documents_done,
                                description=describe(p))  # fmt: skip

            result = Reindexer(new, collection, on_progress=show).run()
    except RagkbError as exc:
        raise exit_with_error(str(exc), 1) from None
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
        return
    seconds = (result.finished_at or result.updated_at) - result.started_at
    console.print(
        f"[bold]{collection}[/bold]: rebuilt {result.documents_done} documents into {result.chunks_after:,} chunks "
        f"(was {result.chunks_before:,}) with {result.settings} in {seconds:.1f}s; switched, old version dropped"
    )


@app.command()
def formats() -> None:
    """List the file types ragkb can ingest."""
    console.print(" ".join(supported_extensions()))
