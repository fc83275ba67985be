"""The query-side commands of `ragkb`: serve, ask, cache and llm (mounted by `ragkb/cli.py`)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any
from uuid import uuid4

import typer

from ingest.cli import CollectionOption, JsonOption, console, err, exit_with_error
from ingest.config import get_settings
from ingest.errors import RagkbError

cache_app = typer.Typer(help="Inspect or clear the answer cache.", no_args_is_help=True)
llm_app = typer.Typer(
    help="Run a local OpenAI-compatible LLM server (optional extra: local-llm).", no_args_is_help=True
)
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(cache_app, name="cache")
app.add_typer(llm_app, name="llm")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Worker processes (each loads the model; /metrics sums all of them).")
    ] = 1,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Serve beyond loopback without any API key (everyone may do anything).")
    ] = False,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs). Beyond loopback it needs an API key (`ragkb keys create`)."""
    import uvicorn

    from ingest.datadir import hold_for_server, refuse_queue_without_workers

    from ..http.observability import configure_logging

    configure_logging()
    settings = get_settings()
    if workers > 1 and not settings.chroma_url:
        raise exit_with_error(
            "--workers > 1 needs a Chroma server (RAGKB_CHROMA_URL): each worker process would hold its own copy "
            "of the embedded store and miss the others' writes"
        )
    require_keys = _check_access(host, insecure)  # before anything is bound or locked
    try:
        refuse_queue_without_workers(settings)  # a queue on an embedded store: no worker could run its jobs
        lock = hold_for_server(settings)  # workers and CLI writers on this embedded store now refuse, saying why
    except RagkbError as exc:
        raise exit_with_error(str(exc)) from None
    if require_keys:  # read by server/auth.py in this process and the workers it starts
        import os

        from ..http.auth import REQUIRE_KEYS_ENV

        os.environ[REQUIRE_KEYS_ENV] = "1"
    if workers > 1:
        _prometheus_multiprocess_dir()
    console.print(f"ragkb serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    console.print(
        f"try: curl -s http://{host}:{port}/v1/query -H 'content-type: application/json' "
        f'-d \'{{"question": "How do I install ragkb?", "collection": "{settings.default_collection}"}}\''
    )
    try:
        uvicorn.run(
            "server.http.app:app",
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            access_log=False,
            timeout_keep_alive=settings.keep_alive_seconds,
        )
    finally:
        if lock is not None:
            lock.release()


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def _check_access(host: str, insecure: bool) -> bool:
    """Secure by default: beyond loopback, refuse to start without an API key unless --insecure (then warn at
    every start); on loopback without keys, serve openly and say so. Migrates the state database first.
    True when the server must keep refusing everyone should every key be revoked later."""
    import logging

    from ..state import KeyStore
    from .state import open_state

    log = logging.getLogger("ragkb.serve")
    with open_state() as db:
        has_keys = KeyStore(db, cache_ttl=0).any_keys()
    local = is_loopback(host)
    if not local and not insecure:
        if not has_keys:
            raise exit_with_error(
                f"refusing to serve on {host} (beyond loopback) without an API key: anyone who can reach the port "
                "could read and change everything. Create one with `ragkb keys create --name NAME --scope admin "
                "--all`, listen on 127.0.0.1, or pass --insecure to serve openly anyway"
            )
    elif not has_keys and not local:
        log.warning("serving on %s WITHOUT authentication (--insecure): anyone who can reach it may do anything", host)
    elif not has_keys:
        log.info("no API keys exist: serving openly on loopback (create one with `ragkb keys create`)")
    return not local and not insecure


def _prometheus_multiprocess_dir() -> None:
    """Give the worker processes a fresh, shared directory for prometheus_client's multiprocess mode
    (set before they start, which is when prometheus_client reads it)."""
    import os
    import tempfile

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ragkb-metrics-")


_OUTCOME_LINES = {
    "low_confidence": "Low confidence: the closest passages are quoted below; they may not answer the question.",
    "not_found": "Not found: the documents do not seem to contain the answer.",
}


def _print_answer(data: dict[str, Any]) -> None:
    outcome = data.get("outcome") or ("not_found" if data.get("abstained") else "answered")
    if outcome in _OUTCOME_LINES:
        console.print(_OUTCOME_LINES[outcome], markup=False, highlight=False, soft_wrap=True)
    console.print(data["answer"], markup=False, highlight=False, soft_wrap=True)
    console.print()
    for c in data["citations"]:
        console.print(f"[{c['n']}] {_place(c)}", markup=False, highlight=False, soft_wrap=True)
    if outcome == "not_found" and data.get("related"):
        console.print("Closest passages:", markup=False, highlight=False)
        for n, c in enumerate(data["related"], start=1):
            console.print(f"  {n}. {_place(c)}", markup=False, highlight=False, soft_wrap=True)
    for step in data.get("steps") or []:  # agent mode: the trace, on stderr
        err.print(f"  {step['kind']:<14} {step['ms']:>9.1f} ms  {step['output'][:100]}", markup=False, highlight=False)
    flags = [f"outcome={outcome}", f"model={data['model']}", f"grounded={data['grounded']}", f"cached={data['cached']}"]
    if data.get("truncated"):
        flags.append("truncated")
    if data.get("degraded"):
        flags.append(f"degraded: {data.get('error')}")
    err.print(" ".join(flags))


def _place(c: dict[str, Any]) -> str:
    where = (
        c["source"]
        + (f", page {c['page']}" if c.get("page") else "")
        + (f", {c['heading']}" if c.get("heading") else "")
    )
    return f"{c['title']} ({where})"


def _print_held(held: dict[str, Any], waited: float) -> None:
    note = f" (waited {waited:.0f} s)" if waited else ""
    console.print(
        f"Held for review{note}: this collection's answers are approved by a person before they are shown.",
        markup=False,
        highlight=False,
    )
    err.print(
        f"review id {held['review_id']}; ask again later, or: ragkb ask ... --wait SECONDS, GET {held['answer_url']}",
        markup=False,
        highlight=False,
    )


def _ask_server(
    server: str, question: str, options: dict[str, Any], mode: str, api_key: str | None, wait: float
) -> tuple[int, dict[str, Any]]:
    """Ask through `ragkb.client.Client` (POST /v1/query); a held answer (202) is polled for up to `wait`
    seconds. Returns (status, the answer's JSON)."""
    from ragkb.client import ApiError, Client, Unreachable
    from ragkb.client_models import HeldAnswer

    try:
        with Client(server, api_key=api_key or None) as client:
            reply = client.ask(question, mode="agent" if mode == "agent" else "single", **options)
            if not isinstance(reply, HeldAnswer):
                return 200, reply.model_dump(mode="json")
            if wait <= 0:
                return 202, reply.model_dump(mode="json")
            outcome = client.wait_for_review(reply, timeout=wait)
    except Unreachable as exc:
        raise exit_with_error(str(exc)) from None
    except ApiError as exc:
        hint = " (pass --api-key or set RAGKB_API_KEY)" if exc.status == 401 else ""
        raise exit_with_error(f"{exc.message}{hint}", 1) from None
    if outcome.status == "approved" and outcome.answer is not None:
        return 200, outcome.answer.model_dump(mode="json")
    if outcome.status == "rejected":
        return 200, {**outcome.model_dump(mode="json"), "rejected": True}
    return 202, reply.model_dump(mode="json")


def _ask_here(question: str, options: dict[str, Any], mode: str) -> tuple[int, dict[str, Any]]:
    """Answer in this process through the one answering entry (curated answers and review policies hold)."""
    from ..answering.entry import Answerer, Asker, Held, Mode

    async def run() -> tuple[int, dict[str, Any]]:
        answerer = Answerer.open(get_settings())
        try:
            query = answerer.query(question, **options)
            result = await answerer.answer(query, mode=Mode(mode), asker=Asker(request_id=f"cli-{uuid4().hex[:12]}"))
            if isinstance(result, Held):
                return 202, result.model().model_dump(mode="json")
            return 200, result.model_dump(mode="json")
        finally:
            await answerer.aclose()

    try:
        return asyncio.run(run())
    except RagkbError as exc:
        raise exit_with_error(str(exc), 1) from None


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    collection: CollectionOption = None,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="Chunks to retrieve.")] = None,
    retriever: Annotated[str | None, typer.Option(help="Retrieval strategy (e.g. dense).")] = None,
    server: Annotated[str | None, typer.Option(help="Ask a running server (e.g. http://127.0.0.1:8000).")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="RAGKB_API_KEY", help="The server's API key (with --server).")
    ] = None,
    wait: Annotated[
        float, typer.Option(min=0, help="With --server: seconds to wait for a reviewer when the answer is held.")
    ] = 0.0,
    agent: Annotated[
        bool, typer.Option("--agent", help="Agent mode: plan sub-questions, search for each, review (docs/agent.md).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Answer a question with numbered sources, in-process or through a running server. An answer held for
    review (the collection's policy is `required`) is reported with its review id (exit status 0)."""
    options: dict[str, Any] = {"collection": collection, "top_k": top_k, "retriever": retriever}
    options = {k: v for k, v in options.items() if v is not None}
    mode = "agent" if agent else "single"
    if server:
        started = time.monotonic()
        status, data = _ask_server(server, question, options, mode, api_key, wait)
        waited = time.monotonic() - started if wait else 0.0
    else:
        status, data = _ask_here(question, options, mode)
        waited = 0.0
    if as_json:
        print(json.dumps(data, indent=2))
    elif status == 202:
        _print_held(data, waited)
    elif data.get("rejected"):
        console.print(data.get("message") or "A reviewer declined to answer this question.", markup=False)
    else:
        _print_answer(data)


@app.command("mcp")
def mcp_stdio(
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="RAGKB_API_KEY", help="A key with scope read (needed once any key exists)."),
    ] = None,
) -> None:
    """Serve ragkb's read-only MCP tools over stdio (for Claude Desktop, Cursor, Claude Code; docs/doors.md):
    search, ask, list_collections, read_passage, get_document_outline, over the collections the key may read.
    The server's Streamable HTTP endpoint is `/mcp` of `ragkb serve`."""
    from server.answering.entry import Answerer
    from server.mcp.tools import Access, NoAccess, StdioParts, build_server, identify
    from server.state import KeyStore, StateDB

    settings = get_settings()
    try:
        state = StateDB.from_settings(settings)
        state.migrate()
        keys = KeyStore(state)
        identify(keys, api_key)  # refuse a bad key at start, not at the first tool call
        parts = StdioParts(settings, Answerer.open(settings, state=state), keys)
    except (RagkbError, NoAccess) as exc:
        raise exit_with_error(str(exc)) from None
    server = build_server(lambda _ctx: Access(parts, identify(parts.keys, api_key)))
    try:
        server.run("stdio")
    finally:
        parts.answerer.close()
        state.dispose()


def _cache() -> Any:
    from ..answering.cache import AnswerCache

    try:
        return AnswerCache.from_settings(get_settings())
    except ValueError as exc:
        raise exit_with_error(str(exc)) from None


@cache_app.command("stats")
def cache_stats(as_json: JsonOption = False) -> None:
    """Entries, hits, misses and hit rate of the configured cache."""
    cache = _cache()
    try:
        stats = cache.stats()
    except Exception as exc:  # Redis down, disk unreadable: say so, no traceback
        raise exit_with_error(f"cannot reach the cache ({cache.backend.name}): {exc}") from None
    if as_json:
        print(json.dumps(stats))
    else:
        for key, value in stats.items():
            console.print(f"{key}: {value}")


@cache_app.command("clear")
def cache_clear() -> None:
    """Remove every cached answer (recorded in the audit trail)."""
    from ..state import Audit
    from .state import open_state

    cache = _cache()
    try:
        removed = cache.clear()
    except Exception as exc:
        raise exit_with_error(f"cannot reach the cache ({cache.backend.name}): {exc}") from None
    console.print(f"removed {removed} cache entries")
    with open_state("the cache was cleared, but the audit record was not written: {error}") as db:
        Audit(db).record("cache.clear", None, detail={"removed": removed, "via": "cli"})


@llm_app.command("serve")
def llm_serve(
    gguf: Annotated[Path, typer.Option("--gguf", help="Path to a GGUF model file.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    alias: Annotated[str, typer.Option(help="Model name clients send (RAGKB_LLM_MODEL).")] = "local",
    context: Annotated[int, typer.Option(help="Context window in tokens.")] = 4096,
    threads: Annotated[int, typer.Option(help="CPU threads for generation.")] = 1,
) -> None:
    """Serve a GGUF model over an OpenAI-compatible API with llama.cpp (until Ctrl-C)."""
    from ..local_llm import start_server

    try:
        server = start_server(gguf, host=host, port=port, alias=alias, context=context, threads=threads)
    except RagkbError as exc:
        raise exit_with_error(str(exc)) from None
    console.print(f"serving {gguf.name} as {alias!r} at http://{host}:{port}/v1")
    console.print(
        f"use it: RAGKB_LLM_PROVIDER=openai RAGKB_LLM_BASE_URL=http://{host}:{port}/v1 RAGKB_LLM_MODEL={alias}"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        del server
