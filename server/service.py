"""The query path: question -> retrieve -> prompt -> cache -> LLM -> validated citations -> response.

Shared by the HTTP API and `ragkb ask`, so both answer the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from ingest.config import Settings, get_settings
from ingest.errors import RagkbError
from ingest.pipeline import Ingestor
from ingest.store import StoredChunk

from .cache import AnswerCache, cache_key
from .citations import ValidatedAnswer, validate
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


class QueryService:
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

    def _from_cache(self, key: str) -> ValidatedAnswer | None:
        hit = self.cache.get(key)
        if hit is None:
            return None
        from .citations import Citation

        return ValidatedAnswer(hit["answer"], [Citation(**c) for c in hit["citations"]], [])

    def _remember(self, key: str, validated: ValidatedAnswer) -> None:
        if validated.grounded:  # only validated, grounded answers are ever cached
            self.cache.set(key, {"answer": validated.text, "citations": [c.model_dump() for c in validated.citations]})

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
        question = self.check_question(question)
        retrieval = await run_in_threadpool(
            self.retrieve, question, collection=collection, top_k=top_k, filters=filters, retriever=retriever
        )
        if not retrieval.chunks:
            return self._response(
                validated=ValidatedAnswer(NO_CONTEXT_ANSWER, [], []),
                retrieval=retrieval,
                request_id=request_id,
                cached=False,
                llm_ms=0.0,
                started=started,
                provider=self.provider,
            )
        request, key = self._prepare(question, retrieval)
        cached = self._from_cache(key)
        if cached is not None:
            return self._response(
                validated=cached,
                retrieval=retrieval,
                request_id=request_id,
                cached=True,
                llm_ms=0.0,
                started=started,
                provider=self.provider,
            )
        llm_started = time.perf_counter()
        provider: LLMProvider = self.provider
        error = None
        try:
            generation = await self.provider.generate(request)
            text = generation.text
            LLM_TOKENS.labels(provider=provider.name, kind="prompt").inc(generation.prompt_tokens)
            LLM_TOKENS.labels(provider=provider.name, kind="completion").inc(generation.completion_tokens)
        except LLMError as exc:
            LLM_ERRORS.labels(provider=provider.name).inc()
            log.warning("LLM failed, answering extractively: %s", exc, extra={"request_id": request_id})
            provider, error = self.fallback, str(exc)
            text = self.fallback.answer(request)
        llm_ms = (time.perf_counter() - llm_started) * 1000
        LLM_SECONDS.labels(provider=provider.name).observe(llm_ms / 1000)
        validated = validate(text, request.contexts)
        if error is None:
            self._remember(key, validated)
        return self._response(
            validated=validated,
            retrieval=retrieval,
            request_id=request_id,
            cached=False,
            llm_ms=llm_ms,
            started=started,
            provider=provider,
            error=error,
        )

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
        question = self.check_question(question)
        retrieval = await run_in_threadpool(
            self.retrieve, question, collection=collection, top_k=top_k, filters=filters, retriever=retriever
        )
        if not retrieval.chunks:
            yield "token", {"text": NO_CONTEXT_ANSWER}
            done = self._response(
                validated=ValidatedAnswer(NO_CONTEXT_ANSWER, [], []),
                retrieval=retrieval,
                request_id=request_id,
                cached=False,
                llm_ms=0.0,
                started=started,
                provider=self.provider,
            )
            yield "done", done.model_dump()
            return
        request, key = self._prepare(question, retrieval)
        cached = self._from_cache(key)
        if cached is not None:
            yield "token", {"text": cached.text}
            yield (
                "done",
                self._response(
                    validated=cached,
                    retrieval=retrieval,
                    request_id=request_id,
                    cached=True,
                    llm_ms=0.0,
                    started=started,
                    provider=self.provider,
                ).model_dump(),
            )
            return
        llm_started = time.perf_counter()
        provider: LLMProvider = self.provider
        error = None
        pieces: list[str] = []
        try:
            async for piece in self.provider.stream(request):
                pieces.append(piece)
                yield "token", {"text": piece}
        except LLMError as exc:
            LLM_ERRORS.labels(provider=provider.name).inc()
            provider, error = self.fallback, str(exc)
            yield "error", {"error": error, "fallback": self.fallback.name}
            pieces = [self.fallback.answer(request)]
            yield "token", {"text": pieces[0]}
        llm_ms = (time.perf_counter() - llm_started) * 1000
        LLM_SECONDS.labels(provider=provider.name).observe(llm_ms / 1000)
        validated = validate("".join(pieces), request.contexts)
        if error is None:
            self._remember(key, validated)
        yield (
            "done",
            self._response(
                validated=validated,
                retrieval=retrieval,
                request_id=request_id,
                cached=False,
                llm_ms=llm_ms,
                started=started,
                provider=provider,
                error=error,
            ).model_dump(),
        )

    async def aclose(self) -> None:
        await self.provider.aclose()
