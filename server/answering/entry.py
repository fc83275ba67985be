"""The one answering entry. Every way in (the HTTP API, `ragkb ask`, the eval harness, and every door to
come) asks `Answerer.ask`, so curated answers, review policies and recording hold for all of them:

    ask(query, mode, asker)
      ├─ a curated answer for the question (unfiltered queries only) ─► its events; recorded
      ├─ review policy `required`  ─► the candidate is made and held for a reviewer ─► `Held` (a review id)
      ├─ mode `agent`              ─► the agent's events (steps, then the answer); recorded, queued if doubtful
      └─ single-shot               ─► `QueryService.run`'s events; recorded, queued if doubtful (`flagged`)

`ask` raises every request error (unknown collection, bad filter, ...) before anything is returned; what
it returns is either `Held` or an `Answering` whose events end in one `Done`. A door shapes those: JSON,
Server-Sent Events, a 202, a terminal's lines. Recording is queued behind the answer (the desk's writer),
so no asker waits on the state database.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Unpack

from starlette.concurrency import run_in_threadpool

from ingest.config import Settings

from ..agent.runner import AgentPlan, AgentRunner, StepEvent
from ..review.curated import NO_LOOKUP
from ..review.desk import ReviewDesk
from ..review.policy import ReviewPolicy
from ..review.schemas import HeldAnswer
from ..schemas import QueryResponse
from ..state import Audit, StateDB
from ..state.reviews import ReviewStore
from .service import Done, Failure, Plan, Query, QueryOptions, QueryService, Token

AnswerEvent = Token | StepEvent | Failure | Done


class Mode(StrEnum):
    SINGLE = "single"  # one retrieval, one generation
    AGENT = "agent"  # plan, search per sub-question, review (docs/agent.md)

    @classmethod
    def parse(cls, value: str) -> Mode:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown mode {value!r}: use one of {', '.join(m.value for m in cls)}") from None


@dataclass(frozen=True, slots=True)
class Asker:
    """Who asks (the API key's name; None on a server without keys) and the request id to answer under."""

    key_name: str | None = None
    request_id: str = "-"


@dataclass(frozen=True, slots=True)
class Held:
    """The collection's policy is `required`: the answer waits for a reviewer."""

    review_id: str
    request_id: str

    def model(self) -> HeldAnswer:
        return HeldAnswer(
            review_id=self.review_id,
            request_id=self.request_id,
            answer_url=f"/v1/answers/{self.review_id}",
            events_url=f"/v1/answers/{self.review_id}/events",
        )


@dataclass(frozen=True, slots=True)
class Answering:
    """An answer under way: `events` yields tokens (single-shot) or steps (agent), maybe a `Failure`, then
    one `Done`; `response()` consumes them to the final answer."""

    events: AsyncIterator[AnswerEvent]

    async def response(self) -> QueryResponse:
        # to the end, not just to the Done: a generator left open is closed by the loop's finalizer hook, a
        # wake-up from another thread per generator (two per cached answer, most of a cache hit's overhead)
        final: QueryResponse | None = None
        async for event in self.events:
            if isinstance(event, Done):
                final = event.response
        if final is None:
            raise RuntimeError("the answer stream ended without a Done event")
        return final


Reply = Answering | Held


@dataclass(frozen=True, slots=True)
class _Decision:
    policy: ReviewPolicy
    curated: QueryResponse | None = None
    agent: AgentPlan | None = None
    plan: Plan | None = None
    withdrawn: bool = False


class Answerer:
    """Owns the decision of how a question is answered; one per process (`Answerer.open`, or the server's
    `Components`)."""

    def __init__(self, service: QueryService, desk: ReviewDesk, agent: AgentRunner) -> None:
        self.service = service
        self.desk = desk
        self.agent = agent

    @classmethod
    def open(cls, settings: Settings, *, service: QueryService | None = None, state: StateDB | None = None) -> Answerer:
        """Everything answering needs, for a process that is not the server (the CLI, the eval harness): the
        query service and the state database (migrated) with its review desk. `close()` releases them."""
        service = service or QueryService(settings)
        if state is None:
            state = StateDB.from_settings(settings)
            state.migrate()
        store = ReviewStore(state, cache_seconds=settings.generation_cache_seconds)
        desk = ReviewDesk(service, store, Audit(state), settings)
        return cls(service, desk, AgentRunner(service))

    def query(self, question: str, **options: Unpack[QueryOptions]) -> Query:
        """A checked query with the server's defaults filled in (`QueryService.query`)."""
        return self.service.query(question, **options)

    async def ask(self, query: Query, *, mode: Mode = Mode.SINGLE, asker: Asker | None = None) -> Reply:
        asker = asker or Asker()
        found = self._decide_in_memory(query, mode)
        if found is None:
            found = await run_in_threadpool(self._decide, query, mode, asker.request_id)  # one hop off the loop
        desk, request_id = self.desk, asker.request_id
        if found.curated is not None:
            desk.record_later(found.curated, asker.key_name, query.question)
            return Answering(_single(found.curated))
        if found.agent is not None:
            return Answering(
                _recorded(
                    self.agent.run(found.agent, request_id=request_id),
                    lambda response: desk.record_later(response, asker.key_name, query.question, found.policy),
                )
            )
        plan = found.plan
        assert plan is not None
        if found.policy is ReviewPolicy.REQUIRED:
            candidate = await self.service.complete(plan, request_id=request_id)
            review = await run_in_threadpool(
                desk.hold, plan, candidate, key_name=asker.key_name, withdrawn=found.withdrawn
            )
            return Held(review.id, request_id)
        return self._single_shot(plan, found, asker)

    def ask_in_memory(self, query: Query, *, asker: Asker | None = None) -> Answering | None:
        """`ask` for a question whose whole decision is in this process's memory (a repeated single-shot
        question on an unchanged collection, no review, no curated answer): the same answer, recorded the same
        way, without awaiting anything; None when `ask` must decide (it reads the databases)."""
        found = self._decide_in_memory(query, Mode.SINGLE)
        if found is None or found.plan is None:
            return None
        return self._single_shot(found.plan, found, asker or Asker())

    def _single_shot(self, plan: Plan, found: _Decision, asker: Asker) -> Answering:
        desk = self.desk
        return Answering(
            _recorded(
                self.service.run(plan, request_id=asker.request_id),
                lambda response: desk.after_answer_later(
                    plan, response, key_name=asker.key_name, policy=found.policy, withdrawn=found.withdrawn
                ),
            )
        )

    def _decide_in_memory(self, query: Query, mode: Mode) -> _Decision | None:
        """`_decide` for a repeated single-shot question when everything it needs is in this process's memory
        (the policy, that no curated answer exists, the generation and the answer): no thread, no I/O."""
        if mode is not Mode.SINGLE:
            return None
        policy = self.desk.cached_policy(query.collection)
        if policy is None or policy is ReviewPolicy.REQUIRED:
            return None
        if query.filters is None and self.desk.may_have_curated(query.collection):
            return None
        plan = self.service.plan_in_memory(query)
        return None if plan is None else _Decision(policy, plan=plan)

    def _decide(self, query: Query, mode: Mode, request_id: str) -> _Decision:
        """The blocking part, in one call: the policy, a curated answer, then the plan (single-shot) or the
        agent's cache lookup. A repeated question on an unchanged collection reads only memory and the cache."""
        started = time.perf_counter()
        policy = self.desk.policy(query.collection)
        # a curated answer was approved for the question, not for a filtered view of the collection
        curated, lookup = (
            self.desk.curated_answer(query, request_id, started) if query.filters is None else (None, NO_LOOKUP)
        )
        if curated is not None:
            return _Decision(policy, curated=curated)
        if mode is Mode.AGENT and policy is not ReviewPolicy.REQUIRED:
            return _Decision(policy, agent=self.agent.lookup(query))
        # a withdrawn curated answer went stale: its question is reviewed again
        return _Decision(policy, plan=self.service.plan(query), withdrawn=bool(lookup.withdrawn))

    async def answer(
        self, query: Query, *, mode: Mode = Mode.SINGLE, asker: Asker | None = None
    ) -> QueryResponse | Held:
        """`ask`, with an answer's events consumed: the final answer, or `Held`."""
        reply = await self.ask(query, mode=mode, asker=asker)
        return reply if isinstance(reply, Held) else await reply.response()

    def close(self) -> None:
        """Write what is still queued (records, reviews) and close the desk's writer."""
        self.desk.close()

    async def aclose(self) -> None:
        self.close()
        await self.service.aclose()


async def _single(response: QueryResponse) -> AsyncIterator[AnswerEvent]:
    yield Token(response.answer)
    yield Done(response)


async def _recorded(
    events: AsyncIterator[AnswerEvent], record: Callable[[QueryResponse], None]
) -> AsyncIterator[AnswerEvent]:
    """The events, with the final answer handed to `record` (non-blocking) as it goes out."""
    async for event in events:
        if isinstance(event, Done):
            record(event.response)
        yield event
