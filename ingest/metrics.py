"""Prometheus metrics for ingestion progress; the query server exposes them on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

INGEST_FILES = Counter("ragkb_ingest_files_total", "Files processed by ingestion, by outcome.", ["outcome"])
INGEST_CHUNKS = Counter("ragkb_ingest_chunks_total", "Chunks embedded and written by ingestion.")
INGEST_SECONDS = Histogram("ragkb_ingest_stage_seconds", "Time spent per ingestion stage and batch.", ["stage"])
OCR_PAGES = Counter(
    "ragkb_ocr_pages_total",
    "Pages and images given to Tesseract, by outcome (read, empty, failed, timeout).",
    ["outcome"],
)
OCR_SECONDS = Histogram(
    "ragkb_ocr_page_seconds", "Tesseract time per page or image.", buckets=(0.5, 1, 2, 4, 8, 15, 30, 60, 120)
)
OCR_SKIPPED = Counter(
    "ragkb_ocr_skipped_pages_total", "Scanned pages not OCRed, by reason (unavailable, budget).", ["reason"]
)
WEB_FETCHES = Counter(
    "ragkb_web_fetches_total",
    "Web requests of `ingest URL` and `crawl`, by outcome (ok, not_modified, http_error, blocked, failed).",
    ["outcome"],
)
INGEST_ATTACHMENTS = Counter(
    "ragkb_ingest_attachments_total",
    "E-mail attachments as documents of their own, by outcome (added, updated, unchanged, dropped, not_stored).",
    ["outcome"],
)
WEB_MAIN_TEXT = Counter(
    "ragkb_web_main_text_total",
    "Fetched HTML pages by how they were read (main: trafilatura's main content; whole: the whole page).",
    ["outcome"],
)
