"""Prometheus metrics for ingestion progress; the query server exposes them on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

INGEST_FILES = Counter("ragkb_ingest_files_total", "Files processed by ingestion, by outcome.", ["outcome"])
INGEST_CHUNKS = Counter("ragkb_ingest_chunks_total", "Chunks embedded and written by ingestion.")
INGEST_SECONDS = Histogram("ragkb_ingest_stage_seconds", "Time spent per ingestion stage and batch.", ["stage"])
