"""Prometheus metrics for the query service (ingestion's own live in ingest.metrics)."""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram

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
AGENT_STEPS = Histogram(
    "ragkb_agent_steps", "Steps per agent-mode request.", buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)
)
AGENT_TOOL_CALLS = Counter(
    "ragkb_agent_tool_calls_total", "Agent tool calls by tool and outcome (ok, cached, invalid).", ["tool", "outcome"]
)
AGENT_BUDGET_EXHAUSTED = Counter(
    "ragkb_agent_budget_exhausted_total", "Agent requests cut short by a budget (steps, seconds, tokens).", ["budget"]
)

REVIEWS_QUEUED = Counter("ragkb_reviews_queued_total", "Answers that entered the review queue, by reason.", ["reason"])
REVIEWS_PENDING = Gauge(
    "ragkb_reviews_pending", "Reviews waiting for a decision (read at each change).", multiprocess_mode="mostrecent"
)
REVIEW_DECISIONS = Counter(
    "ragkb_review_decisions_total", "Review actions by outcome (approved, edited, rejected, retried).", ["decision"]
)
REVIEW_SECONDS = Histogram(
    "ragkb_review_seconds",
    "Time from an answer entering the queue to its decision.",
    buckets=(10, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400),
)
REVIEW_RETRIES = Counter(
    "ragkb_review_retries_total", "Reject-and-retry outcomes (answered, abstained, limit).", ["outcome"]
)
FEEDBACK = Counter("ragkb_feedback_total", "Feedback received, by rating.", ["rating"])
CURATED = Counter(
    "ragkb_curated_answers_total", "Curated answers served (exact, similar) or withdrawn (withdrawn).", ["event"]
)


RECORDS_WRITTEN = Counter(
    "ragkb_records_written_total", "Answer records and review bookkeeping written behind the response."
)
RECORDS_DROPPED = Counter(
    "ragkb_records_dropped_total",
    "Records not written: the writer's queue was full (the newest are dropped) or the write failed.",
    ["reason"],
)
RECORDS_QUEUED = Gauge("ragkb_records_queued", "Records waiting for the background writer.")

FAST_LANE = Counter(
    "ragkb_fast_lane_total",
    "POST /v1/query requests the cached answer lane served itself (served) or handed on to the route (passed).",
    ["result"],
)


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
