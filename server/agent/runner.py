"""Agent mode: plan → tool calls → draft → review → answer, bounded, traced and cached.

`AgentRunner.prepare` does what must fail before a response starts (the question and options checked, the
collection opened, the answer cache looked up); `AgentRunner.run` yields a `StepEvent` as each step ends,
a `Failure` if the LLM breaks mid-draft, and one `Done` with the validated answer, its `steps` and
`truncated`. The answering itself (generation, fallback, citation validation, the response) is
`QueryService.run` on a plan built from the evidence (`drafting.py`).

Bounds (settings): at most `agent_max_steps` steps, `agent_seconds` of wall-clock time and
`agent_llm_tokens` LLM tokens per request. When one runs out, no further search or review is made; the
answer is the best validated one so far (a draft, or an extractive draft from the evidence found, without
calling the LLM) with `truncated: true`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Unpack

from starlette.concurrency import run_in_threadpool

from ingest.vectorstore import StoredChunk

from ..answering.cache import KeyMode, answer_key
from ..answering.prompting import PromptTemplate, load_template
from ..answering.providers import ExtractiveProvider
from ..answering.service import Done, Failure, Plan, Query, QueryOptions, QueryService
from ..answering.support import claim_sentences, has_claim
from ..metrics import AGENT_BUDGET_EXHAUSTED, AGENT_STEPS
from ..schemas import AgentStep, QueryResponse
from .drafting import Draft, draft_plan, elapsed_ms, without_unsupported
from .planning import LLMPlanner, Planner, PlanResult, RulePlanner, SubQuestion
from .tools import ToolArgumentError, Toolbox

log = logging.getLogger("ragkb.agent")

MAX_REVIEW_SEARCHES = 3  # extra searches one review may make (unanswered parts, unsupported claims)


@dataclass(frozen=True, slots=True)
class StepEvent:
    step: AgentStep


AgentEvent = StepEvent | Failure | Done


@dataclass(slots=True)
class Budget:
    """What one request may still spend; `exhausted` names the first bound that ran out."""

    max_steps: int
    seconds: float
    tokens: int
    started: float = field(default_factory=time.perf_counter)
    steps: int = 0
    tokens_used: int = 0
    tokens_out: bool = False  # an LLM call was skipped for want of tokens

    def exhausted(self) -> str | None:
        """The bound that stops further steps. The token budget stops only LLM calls (searches spend none);
        once one was skipped, it counts as spent too."""
        if self.steps >= self.max_steps:
            return "steps"
        if time.perf_counter() - self.started >= self.seconds:
            return "seconds"
        return "tokens" if self.tokens_out else None


@dataclass(frozen=True, slots=True)
class AgentPlan:
    """What `prepare` found: the checked query, the answer-cache key and, on a hit, the cached answer."""

    query: Query
    key: str
    started: float
    cached: dict[str, Any] | None = None


class AgentRunner:
    """Answers in agent mode with one `QueryService` (its retrieval, provider, cache and validation)."""

    def __init__(self, service: QueryService) -> None:
        self.service = service
        settings = service.settings
        self.plan_template: PromptTemplate = load_template(settings.agent_plan_template)
        self.rules = RulePlanner()
        self.llm_planner: LLMPlanner | None = None
        if not isinstance(service.provider, ExtractiveProvider):
            self.llm_planner = LLMPlanner(service.provider, self.plan_template, service.reader.count_tokens)

    # -- before the response starts ----------------------------------------------------

    def cache_key(self, query: Query) -> str:
        """The final answer's key: the single-shot fast path's material plus the mode, the planner and its
        prompt version and the agent's bounds that shape the answer."""
        settings = self.service.settings
        material = {
            **self.service.key_material(query, self.service.reader.generation(query.collection)),
            "mode": "agent",
            "planner": [self.planner.name, self.planner.version, self.plan_template.name, self.plan_template.version],
            "bounds": [settings.agent_max_subquestions, settings.agent_max_steps],
        }
        return answer_key(KeyMode.AGENT, material)

    @property
    def planner(self) -> Planner:
        if self.llm_planner is not None and self.service.breaker.allows():
            return self.llm_planner
        return self.rules

    def lookup(self, query: Query) -> AgentPlan:
        """Open the collection (errors here) and look the answer up in the cache (blocking)."""
        started = time.perf_counter()
        self.service.reader.collection(query.collection)  # unknown collection or another model: fail here
        key = self.cache_key(query)
        hit = self.service.cache.get(key)
        # an agent entry holds the whole response; anything else under its key is not one of its answers
        return AgentPlan(
            query, key, started, hit if hit is not None and isinstance(hit.get("response"), dict) else None
        )

    async def prepare(self, question: str, **options: Unpack[QueryOptions]) -> AgentPlan:
        query = self.service.query(question, **options)
        return await run_in_threadpool(self.lookup, query)

    # -- the steps ---------------------------------------------------------------------

    async def run(self, prepared: AgentPlan, *, request_id: str = "-") -> AsyncIterator[AgentEvent]:
        settings = self.service.settings
        budget = Budget(settings.agent_max_steps, settings.agent_seconds, settings.agent_llm_tokens, prepared.started)
        steps: list[AgentStep] = []

        def record(step: AgentStep) -> StepEvent:
            steps.append(step)
            budget.steps += 1
            log.info(
                "agent step %s: %s",
                step.kind,
                step.output,
                extra={"request_id": request_id, "step": step.kind, "ms": step.ms, "chunks": len(step.chunk_ids)},
            )
            return StepEvent(step)

        if prepared.cached is not None:
            yield record(AgentStep(kind="cache", input={"key": prepared.key[:18]}, output="answer found in the cache"))
            response = self._from_cache(prepared, request_id, steps)
            AGENT_STEPS.observe(len(steps))
            yield Done(response)
            return

        query = prepared.query
        # 1. plan
        started = time.perf_counter()
        planner = self.planner
        plan: PlanResult = await planner.plan(
            query.question, settings.agent_max_subquestions, token_budget=budget.tokens - budget.tokens_used
        )
        budget.tokens_used += plan.tokens
        yield record(
            AgentStep(
                kind="plan",
                input={"question": query.question, "planner": plan.planner, "version": plan.version},
                output=f"{len(plan.sub_questions)} sub-question(s): "
                + " | ".join(s.question for s in plan.sub_questions),
                ms=elapsed_ms(started),
                error="; ".join(plan.notes) or None,
            )
        )
        # 2. one tool call per sub-question
        toolbox = Toolbox(self.service, query)
        subs = plan.sub_questions
        rankings: list[list[StoredChunk]] = [[] for _ in subs]
        search_ms = 0.0
        truncated: str | None = None
        for number, sub in enumerate(subs):
            truncated = truncated or budget.exhausted()
            if truncated:
                break
            step, chunks = await self._call(toolbox, *sub.call())
            search_ms += step.ms
            rankings[number] = chunks
            yield record(step)
        # 3. draft
        truncated = truncated or budget.exhausted()
        draft = await self._draft(query, subs, rankings, prepared.started, search_ms)
        async for event in self._answer(draft, budget, request_id, extractive=truncated is not None):
            if isinstance(event, Done):
                response = event.response
            else:
                yield event
        yield record(self._draft_step(draft, response))
        # 4. review: look again for the parts left unanswered and the claims left unsupported, once
        truncated = truncated or budget.exhausted()
        if not truncated and not response.abstained:
            searches = self._review_searches(subs, draft, response)
            if searches:
                yield record(
                    AgentStep(
                        kind="review",
                        input={"unanswered": [subs[i].question for i in draft.unanswered]},
                        output=f"{len(searches)} more search(es): " + " | ".join(q for q, _ in searches),
                        ms=0.0,
                    )
                )
                found = False
                for _, args in searches:
                    truncated = truncated or budget.exhausted()
                    if truncated:
                        break
                    step, chunks = await self._call(toolbox, "search", args)
                    search_ms += step.ms
                    known = {c.chunk_id for ranking in rankings for c in ranking}
                    found = found or any(c.chunk_id not in known for c in chunks)
                    rankings.append(chunks)  # its own ranking: its best chunk is interleaved early
                    yield record(step)
                truncated = truncated or budget.exhausted()
                if found and not truncated:
                    redraft = await self._draft(query, subs, rankings, prepared.started, search_ms)
                    async for event in self._answer(redraft, budget, request_id, extractive=False):
                        if isinstance(event, Done):
                            if _better(event.response, response):
                                draft, response = redraft, event.response
                        else:
                            yield event
                    yield record(self._draft_step(redraft, response))
        if not response.abstained and not response.grounded:  # claims left without a supporting citation
            started = time.perf_counter()
            response, dropped = await run_in_threadpool(without_unsupported, response, draft.plan, self.service)
            outcome = f"dropped {dropped} unsupported claim(s); grounded={response.grounded}"
            if dropped and not response.citations and draft.plan.request is not None:
                response = await run_in_threadpool(self._extractive, draft.plan, request_id)
                outcome += "; nothing supported was left, so the answer is quoted from the evidence (extractive)"
            if dropped:
                yield record(
                    AgentStep(
                        kind="review",
                        input={"unsupported_citations": response.unsupported_citations},
                        output=outcome,
                        chunk_ids=[c.chunk_id for c in response.citations],
                        ms=elapsed_ms(started),
                    )
                )
        if truncated:
            AGENT_BUDGET_EXHAUSTED.labels(budget=truncated).inc()
            log.warning("agent budget %s ran out", truncated, extra={"request_id": request_id})
        response = response.model_copy(
            update={
                "steps": list(steps),
                "truncated": truncated is not None,
                "timings": response.timings.model_copy(update={"total_ms": elapsed_ms(prepared.started)}),
            }
        )
        AGENT_STEPS.observe(len(steps))
        if response.grounded and not truncated and not response.degraded and not response.abstained:
            await run_in_threadpool(self._remember, prepared.key, response)
        yield Done(response)

    async def _call(self, toolbox: Toolbox, tool: str, args: dict[str, Any]) -> tuple[AgentStep, list[StoredChunk]]:
        """One tool call as a step; invalid arguments are reported in the step and not executed."""
        started = time.perf_counter()
        kind = tool if tool in ("search", "read", "list_documents") else "search"
        try:
            result = await run_in_threadpool(toolbox.call, tool, args)
        except ToolArgumentError as exc:
            return AgentStep(kind=kind, input=args, output="not executed", ms=elapsed_ms(started), error=str(exc)), []  # type: ignore[arg-type]
        summary = result.summary + (" (cached in this request)" if result.cached else "")
        step = AgentStep(
            kind=kind,  # type: ignore[arg-type]
            input=result.args,
            output=summary,
            chunk_ids=[c.chunk_id for c in result.chunks],
            ms=elapsed_ms(started),
        )
        return step, result.chunks

    async def _draft(
        self,
        query: Query,
        subs: list[SubQuestion],
        rankings: list[list[StoredChunk]],
        started: float,
        search_ms: float,
    ) -> Draft:
        questions = [s.question for s in subs]
        return await run_in_threadpool(
            lambda: draft_plan(self.service, query, questions, rankings, started=started, search_ms=search_ms)
        )

    async def _answer(
        self, draft: Draft, budget: Budget, request_id: str, *, extractive: bool
    ) -> AsyncIterator[Failure | Done]:
        """`QueryService.run` on the draft's plan; extractive (no LLM call) when a budget ran out or the
        prompt would not fit in the LLM tokens left."""
        service = self.service
        plan = draft.plan
        request = plan.request
        uses_llm = not isinstance(service.provider, ExtractiveProvider) and request is not None and not plan.abstain
        if uses_llm and request is not None:
            estimate = sum(service.reader.count_tokens([request.prompt.system, request.prompt.user]))
            if extractive or budget.tokens_used + estimate + service.settings.llm_max_tokens > budget.tokens:
                budget.tokens_out = budget.tokens_out or not extractive
                yield Done(self._extractive(plan, request_id))
                return
            budget.tokens_used += estimate
        async for event in service.run(plan, request_id=request_id):
            if isinstance(event, Done):
                if uses_llm and not event.response.degraded:
                    budget.tokens_used += sum(service.reader.count_tokens([event.response.answer]))
                yield event
            elif isinstance(event, Failure):
                yield event

    def _extractive(self, plan: Plan, request_id: str) -> QueryResponse:
        """The draft's extractive answer, validated, shaped as the service shapes every answer (no LLM call)."""
        return self.service.extractive_answer(plan, request_id)

    def _draft_step(self, draft: Draft, response: QueryResponse) -> AgentStep:
        request = draft.plan.request
        contexts = [c.chunk_id for c in request.contexts] if request is not None else []
        state = "abstained" if response.abstained else f"grounded={response.grounded}"
        return AgentStep(
            kind="draft",
            input={"provider": response.provider, "contexts": len(contexts)},
            output=f"{state}, {len(response.citations)} citation(s): {response.answer[:160]}",
            chunk_ids=contexts,
            ms=round(response.timings.llm_ms, 3),
            error=response.error,
        )

    def _review_searches(
        self, subs: list[SubQuestion], draft: Draft, response: QueryResponse
    ) -> list[tuple[str, dict[str, Any]]]:
        """One more search for each part the draft left unanswered (with another retriever) and for each
        claim left without a supporting citation; at most `MAX_REVIEW_SEARCHES`, as (what, search arguments)."""
        searches: list[tuple[str, dict[str, Any]]] = []
        query = draft.plan.query
        other = "bm25" if query.retriever != "bm25" else "dense"
        for number in draft.unanswered:
            sub = subs[number]
            searches.append((sub.question, {"query": sub.question, "retriever": other}))
        if not response.grounded:  # a claim the model did not cite, or whose citation did not hold
            for sentence, numbers in claim_sentences(response.answer):
                if not numbers and has_claim(sentence):
                    searches.append((sentence, {"query": sentence[:500]}))
        return searches[:MAX_REVIEW_SEARCHES]

    # -- the answer cache --------------------------------------------------------------

    def _remember(self, key: str, response: QueryResponse) -> None:
        self.service.cache.remember_answer(
            [key],
            text=response.answer,
            citations=response.citations,
            confidence=response.confidence,
            response=response.model_dump(mode="json"),
        )

    def _from_cache(self, prepared: AgentPlan, request_id: str, steps: list[AgentStep]) -> QueryResponse:
        assert prepared.cached is not None
        response = QueryResponse.model_validate(prepared.cached["response"])
        return response.model_copy(
            update={
                "cached": True,
                "origin": "cached",
                "request_id": request_id,
                "steps": [*response.steps, *steps],
                "timings": response.timings.model_copy(
                    update={"retrieve_ms": 0.0, "llm_ms": 0.0, "total_ms": elapsed_ms(prepared.started)}
                ),
            }
        )

    # -- whole answers -----------------------------------------------------------------

    async def complete(self, prepared: AgentPlan, *, request_id: str = "-") -> QueryResponse:
        async for event in self.run(prepared, request_id=request_id):
            if isinstance(event, Done):
                return event.response
        raise RuntimeError("the agent stream ended without a Done event")

    async def answer(self, question: str, *, request_id: str = "-", **options: Unpack[QueryOptions]) -> QueryResponse:
        prepared = await self.prepare(question, **options)
        return await self.complete(prepared, request_id=request_id)


def _better(new: QueryResponse, old: QueryResponse) -> bool:
    """Whether a redraft replaces the draft: grounded beats ungrounded, then more citations win."""
    if new.abstained != old.abstained:
        return not new.abstained
    return (new.grounded, len(new.citations)) >= (old.grounded, len(old.citations))


__all__ = ["AgentEvent", "AgentPlan", "AgentRunner", "Budget", "StepEvent"]
