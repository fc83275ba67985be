"""Query benchmark over a real uvicorn server on loopback, at two collection sizes.

    python -m eval.bench_query [--dataset DIR] [--sizes 1000 10000] [--queries 200] [--concurrency 16]

For each size it reports /v1/retrieve p50/p95, /v1/query p50/p95 (extractive
provider, first time each question is asked), cache-hit p50 (the same questions
again) and cached requests/s from a concurrent client. Goals: retrieval p50 <=
40 ms, cache-hit p50 <= 5 ms, >= 300 cached req/s on 2 cores. The collections
persist under .ragkb/bench, so later runs skip the embedding.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ingest.config import Settings
from ingest.pipeline import Ingestor

from .beir import read_corpus, read_queries
from .bench_ingest import DEFAULT_DATASET
from .harness import percentile

RETRIEVERS = ("dense", "bm25", "hybrid")


def build_collection(ingestor: Ingestor, dataset: Path, target_chunks: int) -> tuple[str, int]:
    """A collection of about `target_chunks` chunks from the dataset's first documents (reused when present)."""
    name = f"bench-{target_chunks}"
    corpus = read_corpus(dataset)
    docs = max(1, round(target_chunks / 2.3))  # SciFact abstracts average ~2.3 chunks at 200 tokens
    items = ((f"{d.doc_id}.txt", f"beir://{dataset.name}/{d.doc_id}", d.content.encode()) for d in corpus[:docs])
    ingestor.ingest_items(items, collection=name)
    return name, ingestor.store.count(ingestor.open_collection(name))


def _serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RAGKB_DATA_DIR": str(data_dir)}
    env.pop("RAGKB_CACHE_URL", None)  # the benchmark measures the default SQLite cache
    # one client sends thousands of requests: the limiter still runs, but must not refuse them
    env["RAGKB_RATE_LIMIT_BURST"] = "1000000"
    env["RAGKB_RATE_LIMIT_PER_MINUTE"] = "1000000"
    log = open(Path(tempfile.gettempdir()) / "ragkb-bench-server.log", "wb")  # noqa: SIM115
    command = [str(Path(sys.executable).with_name("ragkb")), "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.terminate()
    raise RuntimeError("the server did not become ready")


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


def measure(
    dataset: Path, sizes: list[int], queries: int, concurrency: int, seconds: float, port: int
) -> list[dict[str, float]]:
    data_dir = Path(".ragkb") / "bench"
    ingestor = Ingestor(Settings(data_dir=data_dir))
    questions = list(read_queries(dataset).values())[: queries * (len(RETRIEVERS) + 1)]
    rows = []
    for size in sizes:
        print(f"building/reusing a collection of ~{size} chunks ...", flush=True)
        collection, chunks = build_collection(ingestor, dataset, size)
        (data_dir / "cache.sqlite3").unlink(missing_ok=True)
        server = _serve(data_dir, port)
        try:
            base = f"http://127.0.0.1:{port}"
            # a fresh slice of questions per measurement: the embedder caches question vectors, and a
            # retriever measured on questions another one already embedded would look faster than it is
            slices = [questions[i * queries : (i + 1) * queries] for i in range(len(RETRIEVERS) + 1)]
            bodies: list[dict[str, object]] = [{"question": q, "collection": collection} for q in slices[-1]]
            with httpx.Client(base_url=base, timeout=60) as client:
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
        finally:
            server.terminate()
            server.wait(timeout=30)
        rows.append(
            {
                "chunks": chunks,
                **{f"{name}_p50": percentile(values, 0.5) for name, values in by_retriever.items()},
                **{f"{name}_p95": percentile(values, 0.95) for name, values in by_retriever.items()},
                "query_p50": percentile(query, 0.5),
                "query_p95": percentile(query, 0.95),
                "hit_p50": statistics.median(hits) if hits else float("nan"),
                "hits": len(hits),
                "questions": len(bodies),
                "cached_rps": rps,
            }
        )
    return rows


def print_report(rows: list[dict[str, float]]) -> None:
    print("/v1/retrieve latency by retriever, p50 / p95 (ms):")
    print(f"{'chunks':>8}" + "".join(f"{name:>18}" for name in RETRIEVERS))
    for r in rows:
        cells = "".join(f"{r[name + '_p50']:>9.1f} / {r[name + '_p95']:>5.1f}" for name in RETRIEVERS)
        print(f"{r['chunks']:>8.0f}{cells}")
    print("/v1/query (default retriever, extractive provider):")
    print(f"{'chunks':>8} {'query p50':>10} {'p95':>8} {'hit p50':>8} {'hits':>9} {'cached req/s':>13}")
    for r in rows:
        print(
            f"{r['chunks']:>8.0f} {r['query_p50']:>8.1f}ms {r['query_p95']:>6.1f}ms {r['hit_p50']:>6.1f}ms "
            f"{r['hits']:>4.0f}/{r['questions']:<4.0f} {r['cached_rps']:>13.0f}"
        )
    print("goals: dense retrieve p50 <= 40 ms, hybrid p50 <= 60 ms at 10k chunks, cache-hit p50 <= 5 ms,")
    print("       >= 300 cached req/s (2 cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--queries", type=int, default=150, help="questions per measurement (each gets its own)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the throughput run")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    print_report(measure(args.dataset, args.sizes, args.queries, args.concurrency, args.seconds, args.port))


if __name__ == "__main__":
    main()
