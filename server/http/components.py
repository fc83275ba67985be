"""The parts one server process is built from, made once at start-up and handed to routes by `Depends`."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.config import Settings
from ingest.extraction import ProcessExtractor
from ingest.pipeline import Ingestor
from ingest.queue import JobQueue, QueueNotConfigured

from ..agent.runner import AgentRunner
from ..answering.entry import Answerer
from ..answering.service import QueryService
from ..metrics import REVIEWS_PENDING
from ..review.desk import ReviewDesk
from ..state import Audit, KeyStore, RateLimiter, StateDB, make_rate_limiter
from ..state.reviews import ReviewStore


@dataclass(slots=True)
class Components:
    """Read side (`service`), write side (`ingestor`, sharing the reader's store and model), the job
    queue (None when uploads are ingested in-process), and access control: the state database (migrated
    at start-up), its API keys and audit trail, and the per-key rate limiter."""

    settings: Settings
    service: QueryService
    ingestor: Ingestor
    queue: JobQueue | None
    state: StateDB
    keys: KeyStore
    audit: Audit
    limiter: RateLimiter
    answerer: Answerer

    @property
    def desk(self) -> ReviewDesk:
        return self.answerer.desk

    @classmethod
    def build(cls, settings: Settings, service: QueryService | None = None) -> Components:
        service = service or QueryService(settings)
        reader = service.reader
        # large uploads are parsed in a worker process, so they never hold this process's GIL for long
        extractor = ProcessExtractor(timeout=settings.extract_timeout)
        ingestor = Ingestor(settings, store=reader.store, embedder=reader.embedder, extractor=extractor)
        queue = JobQueue(settings, blobs=ingestor.blobs) if settings.queue_url else None
        state = StateDB.from_settings(settings)
        state.migrate()
        limiter = make_rate_limiter(settings.rate_limit_per_minute, settings.rate_limit_burst, rate_limit_url(settings))
        audit = Audit(state)
        desk = ReviewDesk(service, ReviewStore(state, cache_seconds=settings.generation_cache_seconds), audit, settings)
        REVIEWS_PENDING.set(desk.store.pending_count())  # the gauge is right from start-up, not from the next change
        answerer = Answerer(service, desk, AgentRunner(service))
        keys = KeyStore(state, cache_ttl=settings.key_cache_seconds)
        return cls(settings, service, ingestor, queue, state, keys, audit, limiter, answerer)

    def close(self) -> None:
        """Stop in-flight ingestion between batches, end the extraction worker, close the state database."""
        self.ingestor.stop.set()
        if self.queue is not None:
            self.queue.close()
        if isinstance(self.ingestor.extract, ProcessExtractor):
            self.ingestor.extract.close()
        self.answerer.close()  # what is queued behind the responses is written first
        self.state.dispose()

    def require_queue(self) -> JobQueue:
        if self.queue is None:
            raise QueueNotConfigured(
                "no job queue is configured (RAGKB_QUEUE_URL), so uploads are ingested at once and have no jobs"
            )
        return self.queue


def rate_limit_url(settings: Settings) -> str | None:
    """Where rate limits are shared: RAGKB_RATE_LIMIT_URL, else the cache's or the queue's Redis, else
    nowhere (None: in this process only)."""
    if settings.rate_limit_url:
        return settings.rate_limit_url
    for url in (settings.cache_url, settings.queue_url):
        if url and url.startswith(("redis://", "rediss://", "unix://")):
            return url
    return None
