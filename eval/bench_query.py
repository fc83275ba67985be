"""Query benchmark over a real uvicorn server on loopback, per collection size and embedding backend.

    python -m eval.bench_query [--dataset DIR] [--sizes 10000 50000] [--backends torch onnx-int8]
                               [--queries 150] [--concurrency 16]

For each size and backend (side by side, in one run, so ratios compare like with like) it reports
/v1/retrieve p50/p95 per retriever, /v1/query p50/p95 (extractive provider, first time each question
is asked), cache-hit p50 (the same questions again), cached requests/s from a concurrent client and the
server's peak resident memory. Every backend gets the same questions, each server starts with an empty
question-vector cache, and every retriever gets its own slice of questions (a retriever measured on
questions another one already embedded would look faster than it is).

Collections persist under .ragkb/bench (one per size and backend), so later runs skip the embedding.
Sizes past the SciFact corpus (5,183 abstracts, ~11.9k chunks) are filled with deterministic variants
of its abstracts: each mixes the sentences of two abstracts, so every chunk is new text of the same
kind and length, and no vector is a duplicate of another.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from ingest.config import EMBED_BACKENDS, Settings
from ingest.embedder import get_embedder
from ingest.pipeline import Ingestor
from ingest.store import open_store

from .beir import BeirDocument, read_corpus, read_queries
from .bench_ingest import DEFAULT_DATASET
from .harness import percentile

RETRIEVERS = ("dense", "bm25", "hybrid")
DATA_DIR = Path(".ragkb") / "bench"
CHUNKS_PER_DOCUMENT = 2.3  # SciFact abstracts average ~2.3 chunks at 200 tokens
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def bench_documents(corpus: list[BeirDocument], count: int, dataset: str) -> Iterator[tuple[str, str, bytes]]:
    """`count` documents as (name, source, bytes): the corpus first, then its variants (see the module doc)."""
    n = len(corpus)
    for i in range(count):
        base = corpus[i % n]
        if i < n:
            yield f"{base.doc_id}.txt", f"beir://{dataset}/{base.doc_id}", base.content.encode()
            continue
        variant = i // n
        other = corpus[(i * 7919 + variant * 104_729) % n]
        if other.doc_id == base.doc_id:
            other = corpus[(i + 1) % n]
        ours, theirs = _SENTENCE_END.split(base.text), _SENTENCE_END.split(other.text)
        mixed = [s for pair in zip(ours, theirs + [""] * len(ours), strict=False) for s in pair if s][: len(ours)]
        text = f"{base.title}\n\n{' '.join(mixed)}"
        yield f"{base.doc_id}-v{variant}.txt", f"beir://{dataset}/{base.doc_id}~v{variant}", text.encode()


def collection_name(size: int, backend: str) -> str:
    return f"bench-{size}-{backend}"


def build_collection(ingestor: Ingestor, dataset: Path, target_chunks: int, backend: str) -> tuple[str, int]:
    """A collection of about `target_chunks` chunks embedded with `backend` (reused when present)."""
    name = collection_name(target_chunks, backend)
    documents = max(1, round(target_chunks / CHUNKS_PER_DOCUMENT))
    report = ingestor.ingest_items(bench_documents(read_corpus(dataset), documents, dataset.name), collection=name)
    if report.added:
        print(f"  embedded {report.chunks_added} chunks with {backend} in {report.seconds:.0f} s", flush=True)
    return name, ingestor.store.count(ingestor.open_collection(name))


def _serve(data_dir: Path, port: int, backend: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RAGKB_DATA_DIR": str(data_dir), "RAGKB_EMBED_BACKEND": backend}
    env.pop("RAGKB_CACHE_URL", None)  # the benchmark measures the default SQLite cache
    # one client sends thousands of requests: the limiter still runs, but must not refuse them
    env["RAGKB_RATE_LIMIT_BURST"] = "1000000"
    env["RAGKB_RATE_LIMIT_PER_MINUTE"] = "1000000"
    log = open(Path(tempfile.gettempdir()) / "ragkb-bench-server.log", "wb")  # noqa: SIM115
    command = [str(Path(sys.executable).with_name("ragkb")), "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.terminate()
    raise RuntimeError("the server did not become ready")


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MB; NaN where /proc does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _timed(client: httpx.Client, path: str, body: dict[str, object]) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    response = client.post(path, json=body)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed, response.json()


async def _throughput(base: str, bodies: list[dict[str, object]], concurrency: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < deadline:
                response = await client.post("/v1/query", json=bodies[i % len(bodies)])
                response.raise_for_status()
                done += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return done / (time.perf_counter() - started)


def _measure_server(
    data_dir: Path,
    port: int,
    backend: str,
    collection: str,
    slices: list[list[str]],
    concurrency: int,
    seconds: float,
) -> dict[str, float]:
    (data_dir / "cache.sqlite3").unlink(missing_ok=True)
    server = _serve(data_dir, port, backend)
    try:
        base = f"http://127.0.0.1:{port}"
        bodies: list[dict[str, object]] = [{"question": q, "collection": collection} for q in slices[-1]]
        with httpx.Client(base_url=base, timeout=60) as client:
            # the lexical index is loaded (or built) on first use: not part of any question's latency
            _timed(client, "/v1/retrieve", {"question": "warm-up", "collection": collection, "retriever": "bm25"})
            by_retriever = {
                name: [
                    _timed(client, "/v1/retrieve", {"question": q, "collection": collection, "retriever": name})[0]
                    for q in chunk
                ]
                for name, chunk in zip(RETRIEVERS, slices, strict=False)
            }
            query = [_timed(client, "/v1/query", b)[0] for b in bodies]
            hits = []
            for body in bodies:
                elapsed, data = _timed(client, "/v1/query", body)
                if data["cached"]:
                    hits.append(elapsed)
        rps = asyncio.run(_throughput(base, bodies, concurrency, seconds))
        rss = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        **{f"{name}_p50": percentile(values, 0.5) for name, values in by_retriever.items()},
        **{f"{name}_p95": percentile(values, 0.95) for name, values in by_retriever.items()},
        "query_p50": percentile(query, 0.5),
        "query_p95": percentile(query, 0.95),
        "hit_p50": statistics.median(hits) if hits else float("nan"),
        "hits": len(hits),
        "questions": len(bodies),
        "cached_rps": rps,
        "peak_rss_mb": rss,
    }


def measure(
    dataset: Path,
    sizes: list[int],
    queries: int,
    concurrency: int,
    seconds: float,
    port: int,
    backends: list[str] | None = None,
    build_only: bool = False,
    existing: dict[str, tuple[Path, str]] | None = None,
) -> list[dict[str, object]]:
    """One row per (size, backend); sizes outside, backends inside, so both see the machine alike. `existing`
    maps a backend to a (data dir, collection) measured as it is, before the sizes."""
    chosen = backends or ["torch"]
    settings = Settings(data_dir=DATA_DIR)
    ingestors = {
        backend: Ingestor(settings, embedder=get_embedder(backend=backend, settings=settings))
        for backend in (chosen if sizes else [])
    }
    questions = list(read_queries(dataset).values())[: queries * (len(RETRIEVERS) + 1)]
    slices = [questions[i * queries : (i + 1) * queries] for i in range(len(RETRIEVERS) + 1)]
    rows: list[dict[str, object]] = []
    for backend, (data_dir, collection) in (existing or {}).items():
        # a collection built elsewhere (e.g. by `ragkb eval run` with this backend): measured as it is
        store = open_store(Settings(data_dir=data_dir))
        chunks = store.count(store.get(collection))
        print(f"measuring {collection} under {data_dir} ({chunks} chunks, {backend}) ...", flush=True)
        row = _measure_server(data_dir, port, backend, collection, slices, concurrency, seconds)
        rows.append({"size": "existing", "backend": backend, "chunks": chunks, **row})
    for size in sizes:
        for backend in chosen:
            print(f"building/reusing a collection of ~{size} chunks embedded with {backend} ...", flush=True)
            collection, chunks = build_collection(ingestors[backend], dataset, size, backend)
            if build_only:
                continue
            print(f"measuring {collection} ({chunks} chunks) ...", flush=True)
            row = _measure_server(DATA_DIR, port, backend, collection, slices, concurrency, seconds)
            rows.append({"size": size, "backend": backend, "chunks": chunks, **row})
    return rows


def print_report(rows: list[dict[str, object]]) -> None:
    def num(row: dict[str, object], key: str) -> float:
        value = row[key]
        return float(value) if isinstance(value, int | float) else float("nan")

    torch_rows = {row["size"]: row for row in rows if row["backend"] == "torch"}
    print("/v1/retrieve latency by retriever, p50 / p95 (ms):")
    print(
        f"{'chunks':>8} {'backend':<10}"
        + "".join(f"{name:>18}" for name in RETRIEVERS)
        + f"{'hybrid p50 vs torch':>21}"
    )
    for r in rows:
        cells = "".join(f"{num(r, name + '_p50'):>9.1f} / {num(r, name + '_p95'):>5.1f}" for name in RETRIEVERS)
        reference = torch_rows.get(r["size"])
        ratio = f"{num(r, 'hybrid_p50') / num(reference, 'hybrid_p50'):>20.2f}x" if reference else f"{'':>21}"
        print(f"{num(r, 'chunks'):>8.0f} {r['backend']!s:<10}{cells}{ratio}")
    print("/v1/query (default retriever, extractive provider), server peak RSS:")
    print(
        f"{'chunks':>8} {'backend':<10} {'query p50':>10} {'p95':>8} {'hit p50':>8} {'hits':>9} "
        f"{'cached req/s':>13} {'peak RSS':>10}"
    )
    for r in rows:
        print(
            f"{num(r, 'chunks'):>8.0f} {r['backend']!s:<10} "
            f"{num(r, 'query_p50'):>8.1f}ms {num(r, 'query_p95'):>6.1f}ms "
            f"{num(r, 'hit_p50'):>6.1f}ms {num(r, 'hits'):>4.0f}/{num(r, 'questions'):<4.0f} "
            f"{num(r, 'cached_rps'):>13.0f} {num(r, 'peak_rss_mb'):>8.0f}MB"
        )
    print("goals (default backend, 2 cores): hybrid p50 <= 25 ms at 10k chunks and <= 40 ms at 50k,")
    print("       cache-hit p50 <= 5 ms, >= 300 cached req/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=[10000, 50000],
        help="collection sizes in chunks (none: only --existing)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["torch", "onnx-int8"],
        choices=EMBED_BACKENDS,
        help="embedding backends measured side by side (RAGKB_EMBED_BACKEND)",
    )
    parser.add_argument("--queries", type=int, default=150, help="questions per measurement (each gets its own)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the throughput run")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--build-only", action="store_true", help="only build (or update) the collections")
    parser.add_argument(
        "--existing",
        nargs="*",
        default=[],
        metavar="BACKEND=DATA_DIR:COLLECTION",
        help="also measure a collection already embedded with BACKEND (e.g. the one `ragkb eval run` built)",
    )
    args = parser.parse_args()
    existing: dict[str, tuple[Path, str]] = {}
    for item in args.existing:
        backend, _, place = item.partition("=")
        data_dir, _, collection = place.rpartition(":")
        if backend not in EMBED_BACKENDS or not data_dir or not collection:
            parser.error(f"--existing {item!r}: expected BACKEND=DATA_DIR:COLLECTION, BACKEND one of {EMBED_BACKENDS}")
        existing[backend] = (Path(data_dir), collection)
    rows = measure(
        args.dataset,
        args.sizes,
        args.queries,
        args.concurrency,
        args.seconds,
        args.port,
        args.backends,
        args.build_only,
        existing,
    )
    if rows:
        print_report(rows)


if __name__ == "__main__":
    main()
