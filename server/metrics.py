"""Prometheus metrics for the query service (ingestion's own live in ingest.metrics)."""

from __future__ import annotations

import os

from prometheus_client import Counter, Histogram

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5, 5, 10, 30, 60)

REQUEST_SECONDS = Histogram(
    "ragkb_http_request_seconds",
    "HTTP request latency by route.",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
)
RETRIEVE_SECONDS = Histogram(
    "ragkb_retrieve_seconds", "Retrieval latency by retriever.", ["retriever"], buckets=_LATENCY_BUCKETS
)
LLM_SECONDS = Histogram("ragkb_llm_seconds", "LLM call latency by provider.", ["provider"], buckets=_LATENCY_BUCKETS)
LLM_TOKENS = Counter("ragkb_llm_tokens_total", "Tokens reported by the LLM.", ["provider", "kind"])
LLM_ERRORS = Counter("ragkb_llm_errors_total", "LLM calls that failed after retries.", ["provider"])
LLM_SKIPPED = Counter(
    "ragkb_llm_skipped_total", "Answers given extractively without calling the LLM (circuit breaker open)."
)
CACHE_EVENTS = Counter("ragkb_cache_events_total", "Answer cache lookups by outcome (hit, miss, error).", ["outcome"])
ABSTENTIONS = Counter("ragkb_abstentions_total", "Answers that said the documents do not contain the answer.")
ERRORS = Counter("ragkb_errors_total", "Requests answered with an error, by kind.", ["kind"])


def metrics_payload() -> tuple[bytes, str]:
    """The exposition text of this process, or of every worker process when `ragkb serve --workers N`
    set PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode: each worker writes its samples
    to files there, and whichever worker answers /metrics sums them all)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
