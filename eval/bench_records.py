"""What writing an answer record costs the background writer, per row: the shipped insert
(`ReviewStore.record_answers`, SQLAlchemy Core, one `INSERT ... ON CONFLICT DO NOTHING` per round) against
the SQLite driver's own `executemany` of the same rows, in the same process and database, alternating.

Each round inserts `--rows` new records (a cache hit's row: the answer, one citation, the shown passages) into
a fresh SQLite state database in WAL mode, as the writer does; the figure is the median time per row.

    .venv/bin/python -m eval.bench_records [--rows 20 100 500] [--rounds 15]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from server import jsontext
from server.state.db import StateDB, sqlite_url
from server.state.models import utcnow
from server.state.reviews import ReviewStore

JSON_COLUMNS = ("citations", "chunk_ids", "detail")
CITATION = {
    "n": 1,
    "chunk_id": "guide.md:0003",
    "document": "guide.md",
    "page": None,
    "heading": "Keys",
    "quote": "An API key can be limited to named collections.",
    "start": 120,
    "end": 168,
}


def record() -> dict[str, Any]:
    return {
        "request_id": uuid.uuid4().hex, "at": utcnow(), "key_name": None, "collection": "demo",
        "question": "How are API keys limited to collections?",
        "answer": "An API key can be limited to named collections [1].", "citations": [CITATION],
        "chunk_ids": ["guide.md:0003"], "prompt": "answer:3", "provider": "extractive", "model": "extractive",
        "confidence": 0.83, "origin": "cache", "abstained": False,
        "detail": {"unsupported_citations": [], "retriever": "hybrid",
                   "passages": [{"n": 1, "chunk_id": "guide.md:0003", "text_hash": None}]},
    }  # fmt: skip


def driver_insert(path: Path) -> Callable[[Sequence[dict[str, Any]]], None]:
    """The same rows through sqlite3's executemany (SQLAlchemy's SQLite date format, JSON as text)."""
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    columns = list(record())
    sql = (
        f"INSERT INTO answers ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        "ON CONFLICT (request_id) DO NOTHING"
    )

    def value(column: str, row: dict[str, Any]) -> Any:
        if column in JSON_COLUMNS:
            return jsontext.dumps(row[column])
        if column == "at":
            return row[column].strftime("%Y-%m-%d %H:%M:%S.%f")
        return row[column]

    def insert(rows: Sequence[dict[str, Any]]) -> None:
        with connection:
            connection.executemany(sql, [tuple(value(c, row) for c in columns) for row in rows])

    return insert


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20, 100, 500], help="rows per round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per insert path and round size")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.db"
        db = StateDB(sqlite_url(path))
        db.migrate()
        paths = {"sqlalchemy core": ReviewStore(db).record_answers, "driver executemany": driver_insert(path)}
        print(f"{'rows/round':>10}  {'sqlalchemy core us/row':>22}  {'driver executemany us/row':>25}  ratio")
        for size in args.rows:
            times: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, insert in paths.items():
                    rows = [record() for _ in range(size)]
                    start = time.perf_counter()
                    insert(rows)
                    times[name].append((time.perf_counter() - start) / size * 1e6)
            core, driver = (statistics.median(times[name]) for name in paths)
            print(f"{size:>10}  {core:>22.1f}  {driver:>25.1f}  {driver / core:.2f}")
        db.dispose()


if __name__ == "__main__":
    main()
