"""What an answer may claim: `answered`, `low_confidence` or `not_found`, decided from the extractive evidence.

- `not_found`: the absolute evidence is weak: nothing retrieved, or the best sentence's MiniLM similarity to
  the question is under `RAGKB_NOT_FOUND_BELOW` (the passages are about something else; set on off-topic
  questions) while the answerability is low too. The answer says the documents do not contain it and cites
  nothing; the closest passages come back in `related`.
- `low_confidence`: the passages are on the question's topic but may not answer it: answerability under
  `RAGKB_ABSTAIN_BELOW`, or a *near miss*, a year, month, number or name the question asks about that no
  retrieved passage mentions ("Texas checks in *October* 2015" over a November table). The closest passages
  are quoted with their citations under "These passages may not answer the question:".
- `answered`: a confident answer.

A refusal only when nothing relevant was found: quoting the closest passages lets a person see that the
documents cover the topic, where a refusal shows nothing (issue 22). Thresholds and figures: docs/answers.md.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ingest.vectorstore import StoredChunk

from .providers.extractive import Selection


class Outcome(StrEnum):
    ANSWERED = "answered"
    LOW_CONFIDENCE = "low_confidence"
    NOT_FOUND = "not_found"


LOW_CONFIDENCE_LEAD = "These passages may not answer the question:"

_YEAR = re.compile(r"\b(?:1[5-9]|20)\d\d\b")
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
# case-sensitive: "may" is a verb
_MONTH = re.compile(rf"\b(?:{_MONTHS}|(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\.?)\b")
_NUMBER = re.compile(r"(?<![\w.])[$€£]?\d[\d,.–-]*\d%?|(?<![\w.])\d%?(?![\w])")
_CAPITALISED = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of\s+)?[A-Z][\w'’-]*)*")
# Capitalised words that name no particular thing (a question's first word, pronouns, question words).
_NOT_NAMES = frozenset(
    {
        "a", "an", "the", "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "is", "are",
        "was", "were", "do", "does", "did", "can", "could", "would", "should", "will", "in", "on", "of", "for",
        "and", "or", "to", "at", "by", "from", "with", "i", "it", "its", "this", "that", "these", "those",
        "there", "if", "as", "according", "per", "u.s", "us",
    }
)  # fmt: skip
_POSSESSIVE = re.compile(r"['’]s?$")
_STEM_FROM = 7
# A question word whose best token match in the answering sentence is under this cosine (MaxSim's per-word
# part) and that no retrieved passage mentions is a concept the passages do not speak to; set on the tune
# halves of eval/datasets/pdf-qa-people.jsonl (docs/answers.md).
UNSUPPORTED_BELOW = 0.0
_DASHES = re.compile(r"[\u2010-\u2015\u2212]")


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    answerability: float
    missing: tuple[str, ...] = ()  # the question's specifics no passage mentions (a near miss)


def decide(
    question: str, evidence: Selection, contexts: Sequence[StoredChunk], *, not_found_below: float, abstain_below: float
) -> Decision:
    """The outcome of a question over its retrieved passages and their extractive selection: `not_found_below`
    bounds the best pick's similarity to the question, `abstain_below` the selection's answerability."""
    score = evidence.answerability
    if not evidence.picks or (evidence.picks[0].semantic < not_found_below and score < abstain_below):
        return Decision(Outcome.NOT_FOUND, score)
    texts = [c.text for c in contexts]
    missing = (*missing_specifics(question, texts), *unsupported_words(evidence.support, texts))
    if missing or score < abstain_below:
        return Decision(Outcome.LOW_CONFIDENCE, score, missing)
    return Decision(Outcome.ANSWERED, score)


def unsupported_words(support: dict[str, float], texts: Iterable[str], below: float | None = None) -> list[str]:
    """The question's content words that the answering sentence's tokens match under `below` (MaxSim's
    per-word best cosine, `Selection.support`) and that no passage mentions in any form: what the question
    asks about that the evidence does not speak to ("sold" over a table of background checks)."""
    floor = UNSUPPORTED_BELOW if below is None else below
    weak = [word for word, value in support.items() if value < floor]
    if not weak:
        return []
    corpus = " ".join(_folded(text) for text in texts)
    return [word for word in weak if not _mentioned(_folded(word), corpus)]


def specifics(question: str) -> list[str]:
    """The years, months, numbers and capitalised words (names, places) a question asks about, each once; a
    possessive is its name ("Kentucky's" is Kentucky), the question's first word counts only when it is a name
    inside a run ("Texas checks" no, "How" no)."""
    found: list[str] = []
    for pattern in (_YEAR, _MONTH, _NUMBER):
        found.extend(m.group() for m in pattern.finditer(question))
    for match in _CAPITALISED.finditer(question):
        words = match.group().split()
        if match.start() == _first_word(question):
            words = words[1:]
        for word in words:
            name = _POSSESSIVE.sub("", word)
            if name.lower() not in _NOT_NAMES and not _MONTH.fullmatch(name) and name:
                found.append(name)
    unique: list[str] = []
    for item in found:
        if item not in unique:
            unique.append(item)
    return unique


def missing_specifics(question: str, texts: Iterable[str]) -> list[str]:
    """The question's specifics that none of `texts` mentions (case, width, dashes and spacing folded; a long
    word also counts by its stem, "Brazilian" by "Brazil")."""
    wanted = specifics(question)
    if not wanted:
        return []
    corpus = " ".join(_folded(text) for text in texts)
    return [item for item in wanted if not _mentioned(_folded(item), corpus)]


def _mentioned(item: str, corpus: str) -> bool:
    """Whether the corpus mentions `item`; a number also counts written with or without thousands commas, a word
    of `_STEM_FROM` letters or more also by all but its last three ("brazil" for "brazilian")."""
    if item in corpus:
        return True
    if any(c.isdigit() for c in item):
        return item.replace(",", "") in corpus.replace(",", "")
    return len(item) >= _STEM_FROM and item[:-3] in corpus


def _first_word(question: str) -> int:
    return len(question) - len(question.lstrip())


def _folded(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_DASHES.sub("-", text).split())
