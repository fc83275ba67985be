"""The query path: question -> retrieve -> prompt -> cache -> LLM -> validated citations -> response.

Shared by the HTTP API and `ragkb ask`, so both answer the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool

from ingest.config import Settings, get_settings
from ingest.errors import RagkbError
from ingest.pipeline import Ingestor
from ingest.store import StoredChunk

from .cache import AnswerCache, cache_key
from .citations import Citation, ValidatedAnswer, validate
from .metrics import LLM_ERRORS, LLM_SECONDS, LLM_TOKENS, RETRIEVE_SECONDS
from .prompting import fit_to_budget, format_context, load_template
from .providers import ExtractiveProvider, GenerationRequest, LLMError, LLMProvider, make_provider
from .retrieval import Filters, Retriever, get_retriever
from .schemas import PromptInfo, QueryResponse, Timings

log = logging.getLogger("ragkb.query")

NO_CONTEXT_ANSWER = "I could not find anything about this in the knowledge base."


class QuestionError(RagkbError):
    """The question is empty or too long (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class Retrieval:
    chunks: list[StoredChunk]
    retriever: str
    collection: str
    milliseconds: float


@dataclass(frozen=True, slots=True)
class _Plan:
    retrieval: Retrieval
    request: GenerationRequest | None  # None: nothing retrieved, or answered from the fast path
    keys: list[str]  # the fast-path key, then the exact key
    cached: ValidatedAnswer | None


class QueryService:
    """Answers questions over a collection; one per process, holding the model, store, provider and cache."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        ingestor: Ingestor | None = None,
        provider: LLMProvider | None = None,
        cache: AnswerCache | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.ingestor = ingestor or Ingestor(self.settings)
        self.provider = provider or make_provider(self.settings)
        self.fallback = ExtractiveProvider()
        self.cache = cache or AnswerCache.from_settings(self.settings)
        self.template = load_template(self.settings.prompt_template)
        self._retrievers: dict[str, Retriever] = {}

    # -- retrieval -------------------------------------------------------------------

    def check_question(self, question: str) -> str:
        """The question with its whitespace collapsed (so spacing never changes retrieval), or a QuestionError."""
        question = " ".join(question.split())
        if not question:
            raise QuestionError("the question is empty")
        if len(question) > self.settings.max_question_chars:
            raise QuestionError(
                f"the question is {len(question)} characters; the limit is {self.settings.max_question_chars} "
                "(RAGKB_MAX_QUESTION_CHARS)"
            )
        return question

    def retriever(self, name: str | None) -> Retriever:
        name = name or self.settings.retriever
        if name not in self._retrievers:
            self._retrievers[name] = get_retriever(name, self.ingestor)
        return self._retrievers[name]

    def retrieve(
        self,
        question: str,
        *,
        collection: str | None = None,
        top_k: int | None = None,
        filters: Filters | None = None,
        retriever: str | None = None,
    ) -> Retrieval:
        question = self.check_question(question)
        collection = collection or self.settings.default_collection
        strategy = self.retriever(retriever)
        started = time.perf_counter()
        chunks = strategy.retrieve(question, collection=collection, top_k=top_k or self.settings.top_k, filters=filters)
        elapsed = time.perf_counter() - started
        RETRIEVE_SECONDS.labels(retriever=strategy.name).observe(elapsed)
        return Retrieval(chunks, strategy.name, collection, elapsed * 1000)

    # -- answering -------------------------------------------------------------------

    def _prepare(self, question: str, retrieval: Retrieval) -> tuple[GenerationRequest, str]:
        contexts = fit_to_budget(retrieval.chunks, self.settings.context_tokens, self.ingestor.chunker.count_tokens)
        prompt = self.template.render(question=question, context=format_context(contexts))
        request = GenerationRequest(question=question, prompt=prompt, contexts=contexts)
        key = cache_key(
            question=question,
            collection=retrieval.collection,
            chunks=contexts,
            prompt_name=prompt.name,
            prompt_version=prompt.version,
            provider=self.provider.name,
            model=self.provider.model,
            parameters=self.provider.parameters(),
        )
        return request, key

    def _response(
        self,
        *,
        validated: ValidatedAnswer,
        retrieval: Retrieval,
        request_id: str,
        cached: bool,
        llm_ms: float,
        started: float,
        provider: LLMProvider,
        error: str | None = None,
    ) -> QueryResponse:
        return QueryResponse(
            answer=validated.text,
            citations=validated.citations,
            grounded=validated.grounded,
            cached=cached,
            model=provider.model,
            provider=provider.name,
            prompt=PromptInfo(name=self.template.name, version=self.template.version),
            timings=Timings(
                retrieve_ms=round(retrieval.milliseconds, 3),
                llm_ms=round(llm_ms, 3),
                total_ms=round((time.perf_counter() - started) * 1000, 3),
            ),
            request_id=request_id,
            collection=retrieval.collection,
            retriever=retrieval.retriever,
            degraded=error is not None,
            error=error,
            invalid_citations=validated.invalid_markers,
        )

    def _from_cache(self, key: str, *, count_miss: bool = True) -> ValidatedAnswer | None:
        hit = self.cache.get(key, count_miss=count_miss)
        if hit is None:
            return None
        return ValidatedAnswer(hit["answer"], [Citation(**c) for c in hit["citations"]], [])

    def _remember(self, keys: list[str], validated: ValidatedAnswer) -> None:
        if validated.grounded:  # only validated, grounded answers are ever cached
            value = {"answer": validated.text, "citations": [c.model_dump() for c in validated.citations]}
            for key in keys:
                self.cache.set(key, value)

    def _degrade(self, exc: LLMError, request: GenerationRequest, request_id: str) -> tuple[LLMProvider, str, str]:
        """After the LLM failed for good: the extractive answer instead, flagged with the error."""
        LLM_ERRORS.labels(provider=self.provider.name).inc()
        log.warning("LLM failed, answering extractively: %s", exc, extra={"request_id": request_id})
        return self.fallback, str(exc), self.fallback.answer(request)

    def _memo_key(self, question: str, collection: str, top_k: int, filters: Filters | None, retriever: str) -> str:
        """The fast path's key: the exact question and everything that shapes retrieval, plus the
        collection's generation, which every write or delete changes (so nothing stale is served)."""
        material = {
            "question": question,
            "collection": collection,
            "generation": self.ingestor.store.generation(collection),
            "top_k": top_k,
            "filters": repr(filters) if filters and not filters.empty else None,
            "retriever": retriever,
            "prompt": [self.template.name, self.template.version],
            "provider": [self.provider.name, self.provider.model, self.provider.parameters()],
            "context_tokens": self.settings.context_tokens,
        }
        return "memo:" + hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()

    def _plan(
        self,
        question: str,
        collection: str | None,
        top_k: int | None,
        filters: Filters | None,
        retriever: str | None,
    ) -> _Plan:
        """Cache lookups and retrieval (blocking; run it in a thread). A repeated question on an unchanged
        collection is answered from the fast path without retrieving at all."""
        question = self.check_question(question)
        collection = collection or self.settings.default_collection
        top_k = top_k or self.settings.top_k
        strategy = self.retriever(retriever)
        memo = self._memo_key(question, collection, top_k, filters, strategy.name)
        remembered = self._from_cache(memo, count_miss=False)
        if remembered is not None:
            return _Plan(Retrieval([], strategy.name, collection, 0.0), None, [memo], remembered)
        retrieval = self.retrieve(question, collection=collection, top_k=top_k, filters=filters, retriever=retriever)
        if not retrieval.chunks:
            return _Plan(retrieval, None, [], None)
        request, key = self._prepare(question, retrieval)
        return _Plan(retrieval, request, [memo, key], self._from_cache(key))

    async def answer(
        self,
        question: str,
        *,
        collection: str | None = None,
        top_k: int | None = None,
        filters: Filters | None = None,
        retriever: str | None = None,
        request_id: str = "-",
    ) -> QueryResponse:
        started = time.perf_counter()
        plan = await run_in_threadpool(self._plan, question, collection, top_k, filters, retriever)
        respond = partial(self._response, retrieval=plan.retrieval, request_id=request_id, started=started)
        if plan.cached is not None:
            if len(plan.keys) > 1:  # found by the exact key: let the fast path find it next time
                self._remember(plan.keys[:1], plan.cached)
            return respond(validated=plan.cached, cached=True, llm_ms=0.0, provider=self.provider)
        if plan.request is None:
            empty = ValidatedAnswer(NO_CONTEXT_ANSWER, [], [])
            return respond(validated=empty, cached=False, llm_ms=0.0, provider=self.provider)
        llm_started = time.perf_counter()
        provider: LLMProvider = self.provider
        error = None
        try:
            generation = await self.provider.generate(plan.request)
            text = generation.text
            LLM_TOKENS.labels(provider=provider.name, kind="prompt").inc(generation.prompt_tokens)
            LLM_TOKENS.labels(provider=provider.name, kind="completion").inc(generation.completion_tokens)
        except LLMError as exc:
            provider, error, text = self._degrade(exc, plan.request, request_id)
        llm_ms = (time.perf_counter() - llm_started) * 1000
        LLM_SECONDS.labels(provider=provider.name).observe(llm_ms / 1000)
        validated = validate(text, plan.request.contexts)
        if error is None:
            self._remember(plan.keys, validated)
        return respond(validated=validated, cached=False, llm_ms=llm_ms, provider=provider, error=error)

    async def stream(
        self,
        question: str,
        *,
        collection: str | None = None,
        top_k: int | None = None,
        filters: Filters | None = None,
        retriever: str | None = None,
        request_id: str = "-",
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event, data) pairs: `token` events as text arrives, then one `done` with the validated answer."""
        started = time.perf_counter()
        plan = await run_in_threadpool(self._plan, question, collection, top_k, filters, retriever)
        respond = partial(self._response, retrieval=plan.retrieval, request_id=request_id, started=started)
        if plan.cached is not None or plan.request is None:
            validated = plan.cached or ValidatedAnswer(NO_CONTEXT_ANSWER, [], [])
            yield "token", {"text": validated.text}
            done = respond(validated=validated, cached=plan.cached is not None, llm_ms=0.0, provider=self.provider)
            yield "done", done.model_dump()
            return
        llm_started = time.perf_counter()
        provider: LLMProvider = self.provider
        error = None
        pieces: list[str] = []
        try:
            async for piece in self.provider.stream(plan.request):
                pieces.append(piece)
                yield "token", {"text": piece}
        except LLMError as exc:
            provider, error, text = self._degrade(exc, plan.request, request_id)
            yield "error", {"error": error, "fallback": provider.name}
            pieces = [text]
            yield "token", {"text": text}
        llm_ms = (time.perf_counter() - llm_started) * 1000
        LLM_SECONDS.labels(provider=provider.name).observe(llm_ms / 1000)
        validated = validate("".join(pieces), plan.request.contexts)
        if error is None:
            self._remember(plan.keys, validated)
        done = respond(validated=validated, cached=False, llm_ms=llm_ms, provider=provider, error=error)
        yield "done", done.model_dump()

    async def aclose(self) -> None:
        await self.provider.aclose()
