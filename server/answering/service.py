"""The query path: question -> retrieve -> prompt -> cache -> LLM -> validated citations -> response.

There is one answering path. `prepare` does the blocking part (question check,
cache lookups, retrieval) and raises every request error before anything is
sent; `run` streams the rest as events (`Token`, `Failure`, then one `Done`);
`stream` is the two together and `answer` is `stream` consumed to its `Done`,
the way httpx's non-streaming send is a streaming send plus a read. The HTTP
API, `ragkb ask` and the eval harness all answer through it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict, Unpack

from starlette.concurrency import run_in_threadpool

from ingest.config import Settings, get_settings
from ingest.vectorstore import Filters, StoredChunk

from ..metrics import ABSTENTIONS, LLM_ERRORS, LLM_SECONDS, LLM_SKIPPED, LLM_TOKENS, RETRIEVE_SECONDS
from ..schemas import Citation, PromptInfo, QueryResponse, RetrievedChunk, Timings
from .breaker import CircuitBreaker
from .cache import AnswerCache, KeyMode, answer_key, cache_key
from .citations import SupportCheck, ValidatedAnswer, validate
from .outcomes import LOW_CONFIDENCE_LEAD, Outcome, decide
from .prompting import PromptTemplate, fit_to_budget, format_context, load_template
from .providers import ExtractiveProvider, GenerationRequest, LLMError, LLMProvider, Usage, make_provider
from .providers.extractive import NO_ANSWER, Selection
from .questions import clean_question, question_key
from .reader import Reader
from .recall import Recall
from .retrieval import Retriever, get_retriever

log = logging.getLogger("ragkb.query")

_MEMO_KEYS = 4096  # fast-path keys kept by `_memo_key`

ABSTAIN_ANSWER = "The documents do not contain an answer to this question."


class QueryOptions(TypedDict, total=False):
    """What may shape a question's retrieval; anything left out takes the server's default."""

    collection: str | None
    top_k: int | None
    filters: Filters | None
    retriever: str | None


@dataclass(frozen=True, slots=True)
class Query:
    """One question and the options that shape its retrieval."""

    question: str
    collection: str
    top_k: int
    retriever: str
    filters: Filters | None = None


@dataclass(frozen=True, slots=True)
class Retrieval:
    chunks: list[StoredChunk]
    retriever: str
    collection: str
    milliseconds: float


@dataclass(frozen=True, slots=True)
class Plan:
    """What `prepare` found: the retrieval, the generation request (None when there is nothing to
    generate: nothing retrieved, or the answer is cached) and the cache keys to remember it under."""

    query: Query
    retrieval: Retrieval
    request: GenerationRequest | None
    keys: list[str] = field(default_factory=list)  # the fast-path key, then the exact key
    cached: ValidatedAnswer | None = None
    cached_by_exact_key: bool = False
    started: float = 0.0
    confidence: float = 0.0  # how well the retrieved passages support an answer (the extractive evidence)
    abstain: bool = False  # too weak to answer: say the documents do not contain it
    related: list[RetrievedChunk] = field(default_factory=list)  # a remembered abstention's passages
    remembered: bool = False  # the outcome came from the cache
    outcome: Outcome = Outcome.ANSWERED  # not_found when `abstain`; low_confidence: quote the closest passages


@dataclass(frozen=True, slots=True)
class Token:
    text: str


@dataclass(frozen=True, slots=True)
class Failure:
    """The LLM failed mid-answer; the extractive fallback follows."""

    error: str
    fallback: str


@dataclass(frozen=True, slots=True)
class Done:
    response: QueryResponse


Event = Token | Failure | Done


def _lowered(validated: ValidatedAnswer) -> bool:
    """A generated answer is not a confident one when a citation was removed or a claim is left uncited."""
    return bool(validated.unsupported_markers or validated.invalid_markers) or not validated.grounded


def _validated(hit: dict[str, Any]) -> ValidatedAnswer:
    """A cached answer (only grounded, validated answers are cached)."""
    return ValidatedAnswer(hit["answer"], [Citation(**c) for c in hit["citations"]], [], grounded=True)


def _remembered(query: Query, memo: str, hit: dict[str, Any], started: float, recall: Recall) -> Plan:
    """The plan of a question answered before on the same documents (a fast-path cache hit)."""
    empty = Retrieval([], query.retriever, query.collection, 0.0)
    if hit.get("abstained"):  # asked before, and the documents did not answer it
        related = [RetrievedChunk(**chunk) for chunk in hit.get("related", [])]
        confidence = float(hit.get("confidence", 0.0))
        return Plan(query, empty, None, [memo], None, False, started, confidence, True, related, remembered=True)
    confidence = float(hit.get("confidence", 1.0))
    outcome = Outcome(hit.get("outcome", Outcome.ANSWERED))
    validated = recall.validated(memo, hit, _validated)
    return Plan(query, empty, None, [memo], validated, started=started, confidence=confidence, outcome=outcome)


class QueryService:
    """Answers questions over a collection; one per process, holding the reader, provider and cache."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        reader: Reader | None = None,
        provider: LLMProvider | None = None,
        cache: AnswerCache | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.reader = reader or Reader(self.settings)
        embed = self.reader.embedder.embed
        tokens = self.reader.embedder.embed_tokens
        question = self.reader.embedder.embed_query  # retrieval has just cached the question's vector
        self.provider = provider or make_provider(self.settings, embed, tokens, question)
        # the extractive selection is also the evidence every answer's confidence is read from
        self.fallback = (
            self.provider
            if isinstance(self.provider, ExtractiveProvider)
            else ExtractiveProvider(
                embed, max_embedded=self.settings.extractive_embedded, embed_tokens=tokens, embed_question=question
            )
        )
        self.support = SupportCheck(self.settings.support_threshold, embed)
        self.breaker = CircuitBreaker(self.settings.llm_breaker_failures, self.settings.llm_breaker_cooldown)
        self.cache = cache or AnswerCache.from_settings(self.settings)
        self.template = load_template(self.settings.prompt_template)
        self._retrievers: dict[str, Retriever] = {}
        self._memo_keys: dict[tuple[Any, ...], str] = {}
        self._recall = Recall(_MEMO_KEYS)  # a fast-path hit's citations and response, made once (recall.py)

    def describe(self) -> dict[str, Any]:
        """What answers are made with, for reports: provider, model and prompt template."""
        return {
            "provider": self.provider.name,
            "model": self.provider.model,
            "prompt": {"name": self.template.name, "version": self.template.version},
        }

    # -- retrieval -------------------------------------------------------------------

    def query(
        self,
        question: str,
        *,
        collection: str | None = None,
        top_k: int | None = None,
        filters: Filters | None = None,
        retriever: str | None = None,
    ) -> Query:
        """A checked query with the defaults filled in (`QuestionError`, `UnknownRetriever` otherwise)."""
        query = Query(
            question=clean_question(question, max_chars=self.settings.max_question_chars),
            collection=collection or self.settings.default_collection,
            top_k=top_k or self.settings.top_k,
            retriever=retriever or self.settings.retriever,
            filters=None if filters is None or filters.empty else filters,
        )
        self.retriever(query.retriever)
        return query

    def retriever(self, name: str) -> Retriever:
        if name not in self._retrievers:
            self._retrievers[name] = get_retriever(name, self.reader)
        return self._retrievers[name]

    def retrieve(self, query: Query) -> Retrieval:
        strategy = self.retriever(query.retriever)
        started = time.perf_counter()
        chunks = strategy.retrieve(
            query.question, collection=query.collection, top_k=query.top_k, filters=query.filters
        )
        elapsed = time.perf_counter() - started
        RETRIEVE_SECONDS.labels(retriever=strategy.name).observe(elapsed)
        return Retrieval(chunks, strategy.name, query.collection, elapsed * 1000)

    # -- planning (blocking: run it in a thread) --------------------------------------

    def plan_in_memory(self, query: Query) -> Plan | None:
        """The fast path without leaving the event loop: a repeated question whose collection generation and
        answer this process holds in memory (None: `plan` must run, in a thread)."""
        generation = self.reader.cached_generation(query.collection)
        if generation is None:
            return None
        memo = self._memo_key(query, generation)
        hit = self.cache.peek(memo)
        return None if hit is None else _remembered(query, memo, hit, time.perf_counter(), self._recall)

    def key_material(self, query: Query, generation: str) -> dict[str, Any]:
        """What the fast path's key covers: the question and everything that shapes retrieval, the collection's
        generation (every write or delete changes it, so nothing stale is served), and what decides an answer,
        an abstention or a dropped citation. Agent mode adds its own (`server/agent/runner.py`)."""
        return {
            "question": question_key(query.question),
            "collection": query.collection,
            "generation": generation,
            "top_k": query.top_k,
            "filters": query.filters.cache_token() if query.filters else None,
            "retriever": query.retriever,
            "prompt": [self.template.name, self.template.version],
            "provider": [self.provider.name, self.provider.model, self.provider.parameters()],
            "context_tokens": self.settings.context_tokens,
            "abstain_below": self.settings.abstain_below,
            "not_found_below": self.settings.not_found_below,
            "support_threshold": self.settings.support_threshold,
        }

    def _memo_key(self, query: Query, generation: str) -> str:
        """`key_material`'s hash, remembered: everything in it but the query and the generation is fixed for
        the life of the service, so the same question on the same generation has the same key (a cache hit
        then skips a JSON encoding and a SHA-256 of it)."""
        filters = query.filters.cache_token() if query.filters else None
        known = (query.question, query.collection, generation, query.top_k, filters, query.retriever)
        key = self._memo_keys.get(known)
        if key is None:
            if len(self._memo_keys) >= _MEMO_KEYS:
                self._memo_keys.clear()  # bounded; rebuilt as questions come
            key = self._memo_keys[known] = answer_key(KeyMode.MEMO, self.key_material(query, generation))
        return key

    def _from_cache(self, key: str, *, count_miss: bool = True) -> ValidatedAnswer | None:
        hit = self.cache.get(key, count_miss=count_miss)
        return None if hit is None or hit.get("abstained") else _validated(hit)

    def _remember(self, keys: list[str], validated: ValidatedAnswer, confidence: float) -> None:
        if validated.grounded:  # only validated, grounded answers are ever cached
            self.cache.remember_answer(keys, text=validated.text, citations=validated.citations, confidence=confidence)

    def _low_confidence(self, plan: Plan, request_id: str) -> Event:
        """The closest passages quoted with their citations, under a lead that says they may not answer the
        question; remembered under the fast-path key with their outcome, as an abstention is."""
        assert plan.request is not None
        quotes = self.fallback.answer(replace(plan.request, evidence=plan.request.evidence))
        validated = validate(f"{LOW_CONFIDENCE_LEAD} {quotes}", plan.request.contexts, self.support)
        if validated.citations and plan.keys:
            value = {
                "answer": validated.text,
                "citations": [c.model_dump() for c in validated.citations],
                "confidence": plan.confidence,
                "outcome": Outcome.LOW_CONFIDENCE.value,
            }
            self.cache.set(plan.keys[0], value)
        return Done(self._response(plan, validated, request_id, provider=self.fallback, llm_ms=0.0))

    def _remember_abstention(self, keys: list[str], response: QueryResponse) -> None:
        self.cache.remember_abstention(keys, confidence=response.confidence, related=response.related)

    def plan(
        self,
        query: Query,
        *,
        template: PromptTemplate | None = None,
        variables: Mapping[str, str] | None = None,
        use_cache: bool = True,
    ) -> Plan:
        """Cache lookups and retrieval. A repeated question on an unchanged collection is answered from
        the fast path without retrieving at all. Raises every error a request can have.

        A review's retry passes another `template` (with its extra `variables`, such as the reviewer's note)
        and `use_cache=False`: the answer is neither looked up nor remembered."""
        started = time.perf_counter()
        self.reader.collection(query.collection)  # unknown collection or another model: fail here
        memo = self._memo_key(query, self.reader.generation(query.collection))
        hit = self.cache.get(memo, count_miss=False) if use_cache else None
        if hit is not None:
            return _remembered(query, memo, hit, started, self._recall)
        retrieval = self.retrieve(query)
        if not retrieval.chunks:
            return Plan(query, retrieval, None, started=started)
        request = self.request_for(query.question, retrieval.chunks, template=template, variables=variables)
        evidence = self.evidence(request)[0]  # one batched embedding of the candidate sentences
        request = replace(request, evidence=evidence)
        contexts, prompt = request.contexts, request.prompt
        keys = [memo] if use_cache else []
        decision = decide(
            query.question,
            evidence,
            contexts,
            not_found_below=self.settings.not_found_below,
            abstain_below=self.settings.abstain_below,
        )
        if decision.outcome is not Outcome.ANSWERED:  # not_found: refuse; low_confidence: quote the closest
            abstain = decision.outcome is Outcome.NOT_FOUND
            return Plan(
                query, retrieval, request, keys, started=started, confidence=decision.answerability, abstain=abstain,
                outcome=decision.outcome,
            )  # fmt: skip
        if not use_cache:
            return Plan(query, retrieval, request, [], started=started, confidence=evidence.answerability)
        exact = cache_key(
            question=query.question,
            collection=query.collection,
            chunks=contexts,
            prompt_name=prompt.name,
            prompt_version=prompt.version,
            provider=self.provider.name,
            model=self.provider.model,
            parameters={**self.provider.parameters(), "support_threshold": self.settings.support_threshold},
        )
        cached = self._from_cache(exact)
        return Plan(
            query, retrieval, request, [memo, exact], cached, cached is not None, started, evidence.answerability
        )

    def request_for(
        self,
        question: str,
        chunks: Sequence[StoredChunk],
        *,
        template: PromptTemplate | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> GenerationRequest:
        """The generation request for a question over retrieved chunks: the chunks that fit the context
        budget, numbered into the prompt (the service's template, or a retry's)."""
        contexts = fit_to_budget(list(chunks), self.settings.context_tokens, self.reader.count_tokens)
        prompt = (template or self.template).render(
            question=question, context=format_context(contexts), **(variables or {})
        )
        return GenerationRequest(question=question, prompt=prompt, contexts=contexts)

    def evidence(self, request: GenerationRequest, parts: Sequence[str] = ()) -> list[Selection]:
        """The extractive selection every answer's confidence is read from: for the request's question, or
        one per part (agent mode's sub-questions), each one batched embedding."""
        if len(parts) <= 1:
            return [self.fallback.select(request)]
        return [self.fallback.select(replace(request, question=part)) for part in parts]

    def validate(self, text: str, contexts: Sequence[StoredChunk]) -> ValidatedAnswer:
        """Citation validation with this service's support check."""
        return validate(text, list(contexts), self.support)

    async def prepare(self, question: str, **options: Unpack[QueryOptions]) -> Plan:
        query = self.query(question, **options)
        return await run_in_threadpool(self.plan, query)

    # -- answering (the one path) -----------------------------------------------------

    async def run(self, plan: Plan, *, request_id: str = "-") -> AsyncIterator[Event]:
        """Stream a prepared plan: `Token`s as text arrives, a `Failure` if the LLM breaks (the extractive
        answer follows), then one `Done` with the validated answer."""
        if plan.abstain or (plan.request is None and plan.cached is None):
            response = self._abstained(plan, request_id)
            if plan.abstain and not plan.remembered:  # the same question on the same documents: same outcome
                await run_in_threadpool(self._remember_abstention, plan.keys[:1], response)
            yield Token(ABSTAIN_ANSWER)
            yield Done(response)
            return
        low = plan.outcome is Outcome.LOW_CONFIDENCE
        if low and plan.cached is None and plan.request is not None and self.provider is self.fallback:
            yield await run_in_threadpool(self._low_confidence, plan, request_id)
            return
        if plan.cached is not None:  # (a plan without a request has a cached answer: the rest abstained above)
            validated = plan.cached
            if plan.cached_by_exact_key:  # found by the exact key: let the fast path find it next time
                await run_in_threadpool(self._remember, plan.keys[:1], validated, plan.confidence)
            yield Token(validated.text)
            yield Done(self._cached_response(plan, validated, request_id))
            return
        assert plan.request is not None  # neither abstained nor cached: there is something to generate
        provider: LLMProvider = self.provider
        error: str | None = None
        pieces: list[str] = []
        usage = Usage()
        llm_started = time.perf_counter()
        try:
            if not self.breaker.allows():
                LLM_SKIPPED.inc()
                raise LLMError(
                    f"the LLM failed {self.breaker.failures} times in a row; answering extractively for "
                    f"{self.breaker.seconds_left():.0f} s more"
                )
            async for piece in provider.stream(plan.request, usage):
                pieces.append(piece)
                yield Token(piece)
            self.breaker.record(ok=True)
        except LLMError as exc:
            if self.breaker.allows():  # a real failure, not the breaker's refusal
                self.breaker.record(ok=False)
                LLM_ERRORS.labels(provider=provider.name).inc()
            log.warning("LLM failed, answering extractively: %s", exc, extra={"request_id": request_id})
            error, provider = exc.public, self.fallback
            yield Failure(error, provider.name)
            pieces = [self.fallback.answer(plan.request)]
            yield Token(pieces[0])
        llm_ms = (time.perf_counter() - llm_started) * 1000
        LLM_SECONDS.labels(provider=provider.name).observe(llm_ms / 1000)
        LLM_TOKENS.labels(provider=provider.name, kind="prompt").inc(usage.prompt_tokens)
        LLM_TOKENS.labels(provider=provider.name, kind="completion").inc(usage.completion_tokens)
        text = "".join(pieces)
        if self.template.is_refusal(text) or text == NO_ANSWER:  # the model says the context lacks it
            yield Done(self._abstained(plan, request_id, provider=provider, llm_ms=llm_ms, error=error))
            return
        validated = await run_in_threadpool(validate, text, plan.request.contexts, self.support)
        if provider is not self.fallback and _lowered(validated):  # a generated citation that does not hold
            plan = replace(plan, outcome=Outcome.LOW_CONFIDENCE)
        elif error is None and plan.outcome is Outcome.ANSWERED:  # only confident answers are cached here
            await run_in_threadpool(self._remember, plan.keys, validated, plan.confidence)
        yield Done(self._response(plan, validated, request_id, provider=provider, llm_ms=llm_ms, error=error))

    async def stream(
        self, question: str, *, request_id: str = "-", **options: Unpack[QueryOptions]
    ) -> AsyncIterator[Event]:
        plan = await self.prepare(question, **options)
        async for event in self.run(plan, request_id=request_id):
            yield event

    async def complete(self, plan: Plan, *, request_id: str = "-") -> QueryResponse:
        """A prepared plan's whole answer: `run` consumed to its `Done`."""
        async for event in self.run(plan, request_id=request_id):
            if isinstance(event, Done):
                return event.response
        raise RuntimeError("the answer stream ended without a Done event")

    async def answer(self, question: str, *, request_id: str = "-", **options: Unpack[QueryOptions]) -> QueryResponse:
        """The whole answer at once: the same stream as `stream`, consumed."""
        plan = await self.prepare(question, **options)
        return await self.complete(plan, request_id=request_id)

    def extractive_answer(self, plan: Plan, request_id: str) -> QueryResponse:
        """The extractive answer to a plan's request, validated, without calling the LLM (agent mode's drafts
        when its budget is spent)."""
        assert plan.request is not None
        validated = validate(self.fallback.answer(plan.request), plan.request.contexts, self.support)
        return self._response(plan, validated, request_id, provider=self.fallback, llm_ms=0.0)

    def _cached_response(self, plan: Plan, validated: ValidatedAnswer, request_id: str) -> QueryResponse:
        """A cached answer's response; a fast-path hit's (nothing retrieved) is the one made for its answer
        before, copied (recall.py)."""
        made = lambda: self._response(plan, validated, request_id, provider=self.provider, llm_ms=0.0)  # noqa: E731
        if plan.request is not None:  # found by the exact key, after a retrieval of its own
            return made()
        total_ms = round((time.perf_counter() - plan.started) * 1000, 3)
        return self._recall.response(plan.keys[0], validated, made, request_id=request_id, total_ms=total_ms)

    def _response(
        self,
        plan: Plan,
        validated: ValidatedAnswer,
        request_id: str,
        *,
        provider: LLMProvider,
        llm_ms: float,
        error: str | None = None,
        abstained: bool = False,
    ) -> QueryResponse:
        retrieval = plan.retrieval
        related = (plan.related or [RetrievedChunk.of(c) for c in retrieval.chunks]) if abstained else []
        used = plan.request.prompt if plan.request is not None else self.template  # a retry's own template
        prompt = PromptInfo(name=used.name, version=used.version)
        return QueryResponse(
            answer=validated.text,
            citations=validated.citations,
            grounded=validated.grounded,
            cached=plan.cached is not None or plan.remembered,
            origin="cached" if plan.cached is not None or plan.remembered else "generated",
            model=provider.model,
            provider=provider.name,
            prompt=prompt,
            timings=Timings(
                retrieve_ms=round(retrieval.milliseconds, 3),
                llm_ms=round(llm_ms, 3),
                total_ms=round((time.perf_counter() - plan.started) * 1000, 3),
            ),
            request_id=request_id,
            collection=retrieval.collection,
            retriever=retrieval.retriever,
            degraded=error is not None,
            error=error,
            invalid_citations=validated.invalid_markers,
            unsupported_citations=validated.unsupported_markers,
            confidence=round(min(1.0, max(0.0, plan.confidence)), 4),
            abstained=abstained,
            outcome=Outcome.NOT_FOUND if abstained else plan.outcome,
            related=related,
        )

    def _abstained(
        self,
        plan: Plan,
        request_id: str,
        *,
        provider: LLMProvider | None = None,
        llm_ms: float = 0.0,
        error: str | None = None,
    ) -> QueryResponse:
        """The documents do not hold the answer: say so, cite nothing, and return the closest passages."""
        ABSTENTIONS.inc()
        nothing = ValidatedAnswer(ABSTAIN_ANSWER, [], [])
        return self._response(
            plan, nothing, request_id, provider=provider or self.provider, llm_ms=llm_ms, error=error, abstained=True
        )

    async def aclose(self) -> None:
        self.cache.close()
        await self.provider.aclose()
