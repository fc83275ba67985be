"""A follow-up question made standalone before retrieval ("And in the other crash?" → "How many people died in
the other crash?"), from the conversation's earlier turns. The rule here needs no LLM (the extractive
provider's way; docs/doors.md has the method and its figures):

1. a question that refers to nothing before it (no opening "And ...", "What about ...", no pronoun, long
   enough) is asked as it is;
2. an elliptical one ("And X?", "What about X?", "And for X?") puts X into the previous standalone question in
   place of the phrase it stands for: the phrase after the same preposition ("in the other crash" for "in the
   Lion Air crash"), a name of the same shape ("Indiana" for "Kentucky", "USER_TYPE" for "FUNCTION_ID"), a
   word with the same head ("long guns" for "handgun"); failing that, X with the previous question after it;
3. a pronoun ("its part number", "Who did they send it to?") becomes the previous question's first name,
   and when it has none the previous question follows in brackets, so retrieval keeps its subject.

The previous *standalone* question is used, so a chain of follow-ups keeps its subject.

With an LLM provider, `FollowUps.standalone` asks the model instead (`prompts/followup.md`): the reply must be
one question; anything else, an LLM error or an open circuit breaker falls back to the rule. Each rewrite is
counted by how it was made (`ragkb_followups_total{how}`).
"""

from __future__ import annotations

import logging
import re
import weakref
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter

from .prompting import load_template
from .providers.base import GenerationRequest, LLMError
from .providers.extractive import ExtractiveProvider
from .service import QueryService

log = logging.getLogger("ragkb.followup")
FOLLOWUPS = Counter(
    "ragkb_followups", "Questions asked after an earlier turn, by how they were made standalone.", ["how"]
)
HISTORY_TURNS = 3  # earlier turns shown to the model
ANSWER_CHARS = 300  # of each earlier answer
How = Literal["first", "rule", "llm", "llm_fallback"]

MONTHS = {
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
}
QUESTION_WORDS = {"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "is", "are", "was", "were"}
QUESTION_WORDS |= {"do", "does", "did", "can", "could", "should", "would", "will", "i", "a", "an", "the", "and"}
QUESTION_WORDS |= {"many", "much", "long", "far", "often"}
PREPOSITIONS = {"in", "for", "with", "on", "at", "to", "from", "by", "of", "about", "during", "under", "after"}
# subject pronouns and the possessives (which become "<name>'s")
PRONOUNS = {"it", "they", "them", "he", "him", "she", "that one", "this one", "those", "these", "that", "there"}
POSSESSIVES = {"its", "their", "his", "her"}
ELLIPSIS = re.compile(
    r"^\s*(?:and|what about|how about|and what about|same for|also)\b[\s,]*(?P<rest>.*?)\s*\??\s*$", re.I
)
WORD = re.compile(r"[\w'’./–-]+")
# a name: capitalised or identifier-shaped words in a row ("Lion Air", "CLIENT_HOST", "Knowles v. Mirzayance")
NAME = re.compile(
    r"(?:(?<=\s)|^)((?:[A-Z][\w'’./–-]*|[A-Z0-9_]*[A-Z_][A-Z0-9_]+|\d+[A-Z]\w*)"
    r"(?:\s+(?:v\.|of|de|[A-Z][\w'’./–-]*|\d[\w.–-]*))*)"
)


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier exchange: the question as it was asked (or made standalone) and the answer given."""

    question: str
    answer: str = ""


def standalone_question(history: list[Turn], question: str) -> str:
    """`question` made standalone from `history` (oldest first; each turn's question already standalone)."""
    question = question.strip()
    if not history or not question:
        return question
    previous = history[-1].question.strip()
    if not previous:
        return question
    ellipsis = ELLIPSIS.match(question)
    if ellipsis is not None and ellipsis.group("rest") and not _starts_with_question_word(ellipsis.group("rest")):
        return _substitute(previous, ellipsis.group("rest"))
    if ellipsis is not None and ellipsis.group("rest"):
        question = ellipsis.group("rest")[0].upper() + ellipsis.group("rest")[1:].rstrip("?") + "?"
    return _resolve_pronouns(previous, question)


def _starts_with_question_word(text: str) -> bool:
    first = text.split(maxsplit=1)[0].lower() if text.split() else ""
    return first in {"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "is", "are", "can", "do"}


def _names(text: str) -> list[tuple[int, int, str]]:
    """Names in `text` (start, end, text), months and a sentence's first question word left out."""
    found = []
    for match in NAME.finditer(text):
        name = match.group(1).rstrip(".,;:?")
        words = name.split()
        while words and (words[0].lower() in QUESTION_WORDS or words[0].lower() in MONTHS):
            words = words[1:]
        while words and (words[-1].lower() in MONTHS or words[-1].lower() in {"of", "de", "v."}):
            words = words[:-1]
        if not words:
            continue
        name = " ".join(words)
        start = text.find(name, match.start())
        found.append((start, start + len(name), name))
    return found


def _shape(name: str) -> str:
    if "_" in name or (name.isupper() and len(name) > 1):
        return "code"
    return "name"


def _clean(rest: str) -> str:
    rest = re.sub(r"['’]s$", "", rest.strip().rstrip("?").strip())
    return rest


def _substitute(previous: str, rest: str) -> str:
    """The previous question with `rest` in place of the phrase it stands for."""
    rest = _clean(rest)
    body = previous.rstrip().rstrip("?")
    words = rest.split()
    first = words[0].lower() if words else ""
    # (a) "in the other crash" replaces "in the Lion Air crash": from the same preposition to the next one
    if first in PREPOSITIONS:
        tokens = body.split()
        for i, token in enumerate(tokens):
            if token.lower() == first:
                end = next((j for j in range(i + 1, len(tokens)) if tokens[j].lower() in PREPOSITIONS), len(tokens))
                return " ".join([*tokens[:i], rest, *tokens[end:]]) + "?"
        # a preposition the previous question lacks: the rest of the phrase is the thing itself
        rest = " ".join(words[1:]) or rest
        words = rest.split()
    # (b) a name replaces a name of the same shape ("Indiana" for "Kentucky")
    resolved = _resolve_possessives(previous, rest)
    core = [w for w in resolved.split() if w.lower() not in {"the", "a", "an", "one"}]
    candidate = " ".join(core)
    if candidate and _names(candidate):
        own = _names(candidate)[0][2]
        names = [n for n in _names(body) if n[2] != own]
        same = [n for n in names if _shape(n[2]) == _shape(own)]
        if same or names:
            start, end, _ = (same or names)[0]
            return f"{body[:start]}{resolved if resolved != rest else candidate}{body[end:]}?"
    # (c) a word with the same head: "long guns" for "handgun", "the wiring change" for "the stabilizer wiring change"
    head = _stem(words[-1]) if words else ""
    if head:
        tokens = body.split()
        for i, token in enumerate(tokens):
            if len(head) >= 3 and head in _stem(token):
                start = i
                while start > 0 and tokens[start - 1].lower() not in QUESTION_WORDS | PREPOSITIONS and start > i - 3:
                    start -= 1
                if words[0].lower() in {"the", "a", "an"} and start > 0 and tokens[start - 1].lower() == "the":
                    start -= 1
                return " ".join([*tokens[:start], rest, *tokens[i + 1 :]]) + "?"
    # (d) the thing asked about, then what it is asked like
    return f"{rest[0].upper() + rest[1:]}: {previous.rstrip()}"


def _stem(word: str) -> str:
    word = word.lower().strip(".,;:?'’")
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)]
    return word


def _referent(previous: str) -> str | None:
    names = _names(previous.rstrip("?"))
    return re.sub(r"['’]s$", "", names[0][2]) if names else None


POSSESSIVE = re.compile(r"\b(?:its|his|her|their)\b", re.I)
SUBJECT = re.compile(r"\b(?:that one|this one|it|they|them|he|him|she)\b", re.I)


def _resolve_possessives(previous: str, text: str) -> str:
    referent = _referent(previous)
    return text if referent is None else POSSESSIVE.sub(f"{referent}'s", text, count=1)


def _resolve_pronouns(previous: str, question: str) -> str:
    lowered = f" {question.lower().rstrip('?')} "
    has_pronoun = any(f" {p} " in lowered for p in PRONOUNS | POSSESSIVES)
    content = [w for w in WORD.findall(question) if w.lower() not in QUESTION_WORDS]
    if not has_pronoun and len(content) >= 4:
        return question  # it stands on its own
    referent = _referent(previous)
    if referent is not None and has_pronoun:
        # the first pronoun in the question stands for the name; a later possessive is left as it is
        found = [m for m in (POSSESSIVE.search(question), SUBJECT.search(question)) if m is not None]
        if found:
            first = min(found, key=lambda m: m.start())
            replacement = f"{referent}'s" if first.re is POSSESSIVE else referent
            return question[: first.start()] + replacement + question[first.end() :]
    return f"{question.rstrip()} ({previous.rstrip()})"


@dataclass(frozen=True, slots=True)
class Standalone:
    question: str
    how: How


class FollowUps:
    """Makes follow-ups standalone for one query service: the rule (extractive provider), or the model."""

    def __init__(self, service: QueryService) -> None:
        self.service = service
        extractive = isinstance(service.provider, ExtractiveProvider)
        self.template = None if extractive else load_template("followup")

    @classmethod
    def of(cls, service: QueryService) -> FollowUps:
        """The one instance for `service` (made on first use)."""
        found = _INSTANCES.get(service)
        if found is None:
            found = _INSTANCES[service] = cls(service)
        return found

    async def standalone(self, history: list[Turn], question: str, request_id: str = "-") -> Standalone:
        if not history:
            return Standalone(question.strip(), "first")
        rule = standalone_question(history, question)
        if self.template is None or not self.service.breaker.allows():
            FOLLOWUPS.labels(how="rule").inc()
            return Standalone(rule, "rule")
        shown = "\n".join(
            f"Q: {turn.question}\nA: {' '.join(turn.answer.split())[:ANSWER_CHARS]}"
            for turn in history[-HISTORY_TURNS:]
        )
        prompt = self.template.render(history=shown, question=question.strip())
        try:
            generation = await self.service.provider.generate(
                GenerationRequest(question=question, prompt=prompt, contexts=[])
            )
            rewritten = _one_question(generation.text, question)
        except LLMError as exc:
            log.warning("follow-up rewrite failed, using the rule: %s", exc, extra={"request_id": request_id})
            rewritten = None
        if rewritten is None:
            FOLLOWUPS.labels(how="llm_fallback").inc()
            return Standalone(rule, "llm_fallback")
        FOLLOWUPS.labels(how="llm").inc()
        return Standalone(rewritten, "llm")


_INSTANCES: weakref.WeakKeyDictionary[QueryService, FollowUps] = weakref.WeakKeyDictionary()


def _one_question(reply: str, question: str) -> str | None:
    """The model's reply as one question, or None when it is not one (empty, prose, far too long) or drops
    what the follow-up itself names ("And the stabilizer wiring change?" must keep "stabilizer wiring change")."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        return None
    text = re.sub(r"^(?:standalone question|question|q)\s*:\s*", "", lines[0], flags=re.I).strip().strip("\"'")
    if not text or len(text) > max(300, 4 * len(question)) or len(text.split()) < 2:
        return None
    kept = {_stem(w) for w in WORD.findall(text)}
    own = [_stem(w) for w in WORD.findall(question) if w.lower() not in IGNORED]
    if any(word not in kept for word in own if word):
        return None
    return text


# words a rewrite may drop or replace: question words, pronouns, the glue of an elliptical follow-up
IGNORED = QUESTION_WORDS | PRONOUNS | POSSESSIVES | PREPOSITIONS | {"about", "what's", "one", "other", "also", "same"}
