"""`make bench`: the ingestion and query benchmarks in one run, one table at the end. Figures, not assertions."""

from __future__ import annotations

from . import bench_ingest, bench_query


def main() -> None:
    ingest = bench_ingest.measure(bench_ingest.DEFAULT_DATASET, 1000)
    query = bench_query.measure(bench_ingest.DEFAULT_DATASET, [1000, 10000], 150, 16, 10.0, 8765)
    print("\n== ingestion (1,000 SciFact abstracts) ==")
    bench_ingest.print_report(ingest)
    print("\n== query service (uvicorn on loopback, extractive provider, SQLite cache) ==")
    bench_query.print_report(query)


if __name__ == "__main__":
    main()
