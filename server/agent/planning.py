"""Planning: a question split into at most N sub-questions, each with the tool call that looks for it.

Two planners behind one protocol. `RulePlanner` is deterministic and needs no model (the offline
`extractive` provider): it splits joined questions ("When was X issued, and how many Y?"), comparisons
("the difference between A and B in C") and lists of entities ("the cost of A, B and C"). `LLMPlanner`
asks an OpenAI-compatible model with the versioned prompt `server/prompts/plan.md` for JSON, validates
it against `PlanOutput`, tries one repair with the validation errors, and otherwise falls back to the
single-shot plan (the question itself). Planning never fails a request.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..answering.prompting import PromptTemplate, RenderedPrompt
from ..answering.providers import GenerationRequest, LLMError, LLMProvider
from .tools import ToolArgumentError, validate_call

RULES_VERSION = "rules-1"


class PlannedCall(BaseModel):
    """One sub-question and the tool call that looks for it (a search for the sub-question by default)."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=1000)
    tool: Literal["search", "read", "list_documents"] = "search"
    args: dict[str, Any] = Field(default_factory=dict)


class PlanOutput(BaseModel):
    """What the planning prompt must return."""

    model_config = ConfigDict(extra="forbid")

    sub_questions: list[PlannedCall] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class SubQuestion:
    question: str  # what the answer must say (the extractive selection uses it)
    tool: str = "search"
    args: dict[str, Any] = field(default_factory=dict)  # with the default search, {"query": question}

    def call(self) -> tuple[str, dict[str, Any]]:
        if self.tool == "search" and "query" not in self.args:
            return "search", {**self.args, "query": self.question}
        return self.tool, dict(self.args)


@dataclass(frozen=True, slots=True)
class PlanResult:
    sub_questions: list[SubQuestion]
    planner: str  # "rules", "llm" or "fallback" (the single-shot plan after a failed LLM plan)
    version: str
    tokens: int = 0  # LLM tokens spent planning
    notes: list[str] = field(default_factory=list)  # repairs, errors, parts left out


class Planner(Protocol):
    name: str
    version: str

    async def plan(self, question: str, limit: int, *, token_budget: int) -> PlanResult: ...


# -- the deterministic planner ------------------------------------------------------------

_ASK = (
    r"(?:what|which|who|whom|whose|when|where|why|how|is|are|was|were|does|do|did|can|could|should|will|would|"
    r"has|have|had)"
)
# a new question joined to the previous one: "...?", ";", ", and how ...", " and what ...", ", when ..."
_PREP = r"(?:in|under|on|at|for|by|from|with|to|of|about|after|before|during)"
_JOINED = re.compile(
    rf"\s*(?:\?|;|,?\s+(?:and|also|as well as|plus)\s+(?=(?:{_PREP}\s+)?{_ASK}\b)|,\s+(?={_ASK}\b))\s*", re.I
)
_COMPARE = re.compile(
    r"^(?P<frame>.*?)\b(?:compare|comparison of|differences? between|difference of)\s+(?P<a>.+?)\s+"
    r"(?:and|with|to|vs\.?|versus)\s+(?P<b>.+?)(?P<rest>\s+(?:in|on|for|regarding|by|at)\s+.+?)?\s*\??$",
    re.I,
)
_THAN = re.compile(
    r"^(?P<frame>(?:is|are|was|were|does|do|did)\s+)(?P<a>.+?)\s+(?P<cmp>(?:more|less|bigger|smaller|larger|"
    r"higher|lower|greater|longer|shorter|earlier|later|older|newer|cheaper)(?:\s+\w+)?)\s+than\s+(?P<b>.+?)\s*\??$",
    re.I,
)
_LIST = re.compile(
    r"^(?P<head>.*\s(?:of|for|in|on|about|by|from|to|with|between)\s+)(?P<items>[^,?;]+(?:,\s*[^,?;]+)*,?\s+"
    r"(?:and|or)\s+[^,?;]+?)\s*\??$",
    re.I,
)
_PARALLEL = re.compile(
    r"^(?P<head>.*?\s)(?P<prep>of|for|in|on|about|to|with)\s+(?P<a>.+?),?\s+and\s+(?P=prep)\s+(?P<b>.+?)\s*\??$", re.I
)
_SERIES_SPLIT = re.compile(r",\s+(?:and\s+|or\s+)?", re.I)
_FRAME = re.compile(r"^(?:what|which|who|when|where|how\s+\w+)(?:\s+(?:is|are|was|were|do|does|did))?\s+", re.I)
_LIST_SPLIT = re.compile(r"\s*,\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+", re.I)
_POINTER = re.compile(r"\b(?:it|its|they|their|them|this|that|these|those|he|she|his|her)\b", re.I)
_STOP = frozenset(
    {
        "a", "an", "the", "of", "in", "on", "at", "to", "for", "by", "from", "with", "and", "or", "is", "are",
        "was", "were", "be", "been", "does", "do", "did", "what", "which", "who", "whom", "whose", "when", "where",
        "why", "how", "many", "much", "it", "its", "this", "that", "these", "those", "there", "their", "they",
        "them", "as", "about", "into",
    }
)  # fmt: skip
MAX_ITEM_WORDS = 8


def _clean(part: str) -> str:
    part = part.strip(" ,;:.?")
    return part[:1].upper() + part[1:] + "?" if part else ""


def _topic(text: str) -> str:
    """The content words of a part, to carry into a later part that points back at it ("it", "they")."""
    return " ".join(w for w in re.findall(r"[\w.'’–-]+", text) if w.lower() not in _STOP)


def split_joined(question: str) -> list[str]:
    parts = [p for p in _JOINED.split(question) if p and len(p.split()) >= 2]
    return parts if len(parts) > 1 else [question]


def split_comparison(question: str) -> list[str]:
    match = _COMPARE.match(question.strip())
    if match:
        rest = match.group("rest") or ""
        a, b = match.group("a"), match.group("b")
        extra = len(b.split()) - len(a.split())
        if extra > 0 and len(a.split()) <= 3:  # "the IAS and the AOA alert thresholds": both are thresholds
            a = f"{a} {' '.join(b.split()[-extra:])}"
        return [f"{a}{rest}", f"{b}{rest}"]
    match = _THAN.match(question.strip())
    if match:
        return [match.group("a"), match.group("b")]
    return [question]


def split_list(question: str) -> list[str]:
    parallel = _PARALLEL.match(question.strip())
    if parallel:  # "the types of A and of B"
        head, prep = parallel.group("head"), parallel.group("prep")
        return [f"{head}{prep} {parallel.group('a')}", f"{head}{prep} {parallel.group('b')}"]
    series = [p for p in _SERIES_SPLIT.split(question.strip()) if p.strip()]
    frame = _FRAME.match(question.strip())
    if len(series) >= 3 and re.search(r",\s+(?:and|or)\s+", question) and frame:  # "A of X, the B, and the C"
        return [series[0], *(frame.group(0) + part for part in series[1:])]
    match = _LIST.match(question.strip())
    if not match:
        return [question]
    items = [i for i in _LIST_SPLIT.split(match.group("items")) if i.strip()]
    if len(items) < 2 or any(len(i.split()) > MAX_ITEM_WORDS for i in items):
        return [question]
    return [f"{match.group('head')}{item}" for item in items]


class RulePlanner:
    """Deterministic sub-questions: joined questions first, then comparisons and lists inside each part."""

    name = "rules"
    version = RULES_VERSION

    def split(self, question: str, limit: int) -> tuple[list[SubQuestion], list[str]]:
        parts: list[str] = []
        for part in split_joined(question):
            pieces = split_comparison(part)
            parts.extend(pieces if len(pieces) > 1 else split_list(part))
        notes = []
        if len(parts) > limit:
            notes.append(f"{len(parts)} parts, kept the first {limit} (RAGKB_AGENT_MAX_SUBQUESTIONS)")
            parts = [*parts[: limit - 1], " and ".join(parts[limit - 1 :])]
        if len(parts) == 1:
            return [SubQuestion(question)], notes
        subs = []
        first_topic = _topic(parts[0])
        for i, part in enumerate(parts):
            text = _clean(part)
            query = text
            if i > 0 and (_POINTER.search(part) or len(_topic(part).split()) < 2):
                query = f"{text} ({first_topic})"  # "how many does it affect" needs what "it" is to be found
            subs.append(SubQuestion(text, "search", {"query": query}))
        return subs, notes

    async def plan(self, question: str, limit: int, *, token_budget: int = 0) -> PlanResult:
        subs, notes = self.split(question, limit)
        return PlanResult(subs, self.name, self.version, 0, notes)


# -- the LLM planner ----------------------------------------------------------------------

_JSON_OBJECT = re.compile(r"\{.*\}", re.S)


def parse_plan(text: str, limit: int) -> tuple[list[SubQuestion], list[str]]:
    """The sub-questions of a model's reply, or `ValueError` naming every problem. The JSON may sit inside
    prose or a code fence; every tool call's arguments are validated here, before anything is executed."""
    found = _JSON_OBJECT.search(text)
    if not found:
        raise ValueError("the reply holds no JSON object")
    try:
        data = json.loads(found.group(0))
    except json.JSONDecodeError as exc:
        raise ValueError(f"the JSON does not parse: {exc.msg} at character {exc.pos}") from None
    try:
        output = PlanOutput.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise ValueError(f"the JSON does not match the schema: {detail}") from None
    if len(output.sub_questions) > limit:
        raise ValueError(f"{len(output.sub_questions)} sub-questions; at most {limit} are allowed")
    subs = [SubQuestion(p.question.strip(), p.tool, p.args) for p in output.sub_questions]
    problems: list[str] = []
    for number, sub in enumerate(subs, start=1):
        try:
            validate_call(*sub.call())
        except ToolArgumentError as exc:
            problems.append(f"sub_questions.{number}: {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return subs, []


class LLMPlanner:
    """Plans with the answering model and `server/prompts/plan.md`; one repair, then the single-shot plan."""

    name = "llm"

    def __init__(self, provider: LLMProvider, template: PromptTemplate, count_tokens: Any) -> None:
        self.provider = provider
        self.template = template
        self.version = f"{template.name}-{template.version}"
        self.count_tokens = count_tokens  # estimates a call's tokens when the server does not report them

    async def _ask(self, prompt: RenderedPrompt, question: str) -> tuple[str, int]:
        generation = await self.provider.generate(GenerationRequest(question=question, prompt=prompt, contexts=[]))
        tokens = generation.prompt_tokens + generation.completion_tokens
        if not tokens:
            tokens = sum(self.count_tokens([prompt.system, prompt.user, generation.text]))
        return generation.text, tokens

    async def plan(self, question: str, limit: int, *, token_budget: int) -> PlanResult:
        prompt = self.template.render(question=question, max_steps=str(limit))
        notes: list[str] = []
        spent = 0
        single = [SubQuestion(question)]
        started = time.perf_counter()
        try:
            if token_budget <= 0:
                raise LLMError("no LLM tokens left for planning (RAGKB_AGENT_LLM_TOKENS)")
            reply, spent = await self._ask(prompt, question)
            try:
                subs, _ = parse_plan(reply, limit)
                return PlanResult(subs, self.name, self.version, spent, notes)
            except ValueError as exc:
                notes.append(f"invalid plan ({exc}); asked the model to repair it")
            if spent >= token_budget:
                raise LLMError("the LLM token budget ran out before the repair (RAGKB_AGENT_LLM_TOKENS)")
            repair = RenderedPrompt(
                prompt.name,
                prompt.version,
                prompt.system,
                f"{prompt.user}\n{reply.strip()}\n\nThat reply is invalid: {notes[-1]}. Reply with corrected JSON "
                "only.\nJSON:",
            )
            reply, more = await self._ask(repair, question)
            spent += more
            try:
                subs, _ = parse_plan(reply, limit)
                notes.append("the repaired plan is valid")
                return PlanResult(subs, self.name, self.version, spent, notes)
            except ValueError as exc:
                notes.append(f"the repair is invalid too ({exc}); planning the question as one search")
        except LLMError as exc:
            notes.append(f"planning failed ({exc.public}); planning the question as one search")
        notes.append(f"planning took {(time.perf_counter() - started) * 1000:.0f} ms")
        return PlanResult(single, "fallback", self.version, spent, notes)
