"""Lexical overlap between a question and the sentence on the page that answers it.

`overlap` is the share of the question's content words that also occur in the answer's sentence:

1. Words are runs of letters and digits (`[a-z0-9]+`) of the lowercased text, so `737–8` gives `737` and `8`
   and `doesn't` gives `doesn` and `t`.
2. Content words are the question's words that are not in `STOP_WORDS` (English function words and the
   question words what/which/how/...), counted once each.
3. Both sides are reduced by `stem` (a crude suffix stripper: `fatalities` and `fatality` meet), so a change of
   plural or tense does not count as other words.
4. The answer's sentence: the page's pypdf text with whitespace collapsed is split into sentences after `.`, `!`
   or `?` followed by a space and an upper-case letter, digit, bullet, quote or parenthesis. The candidates are
   every sentence of at most `MAX_SENTENCE_WORDS` words that contains the answer (case-insensitive), and every
   raw pypdf line that contains it (for a table the line is the row; the column headers are not on it). A longer
   "sentence" (a table, a list of names) is used only if nothing else holds the answer. The score is the highest
   over the candidates, so it never understates the overlap.

Run from the repository root: `python -m eval.datasets.overlap "question" "the answer's sentence"` prints the
score and the shared words; `verify_people.py` recomputes the `overlap` field of every record with `score`.
"""

from __future__ import annotations

import re
import sys
from itertools import pairwise

MAX_SENTENCE_WORDS = 80

_STOP_TEXT = """
    a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing done down during each either else ever every few for from
    further get gets got had has have having he her here hers herself him himself his how i if in into is it its
    itself just let lets may me might more most much must my myself no nor not now of off on once one only or
    other others our ours ourselves out over own per same say says she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up upon us very was we
    were what whatever when where whether which while who whom whose why will with within without would you your
    yours yourself s t d ll m re ve tell know give gave name named list kind thing things anything something
    someone anyone
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9•\"“‘(])")


def stem(word: str) -> str:
    """A crude suffix stripper, enough to make singular and plural, or present and past, meet."""
    if word.isdigit() or len(word) <= 3:
        return word
    for suffix, replacement in (("ies", "y"), ("ied", "y"), ("sses", "ss"), ("es", "e"), ("s", ""), ("ed", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            break
    if word.endswith("ing") and len(word) >= 6:
        word = word[:-3]
    return word.rstrip("e") if len(word) > 4 else word


def words(text: str) -> list[str]:
    """The lowercased words of a text."""
    return _WORD.findall(text.casefold())


def content_words(question: str) -> list[str]:
    """The question's content words (stop words removed), each once, in order."""
    seen: dict[str, None] = {}
    for word in words(question):
        if word not in STOP_WORDS:
            seen.setdefault(word, None)
    return list(seen)


def score(question: str, sentence: str) -> float:
    """Share of the question's content words whose stem occurs among the sentence's stems (0.0 if it has none)."""
    wanted = content_words(question)
    if not wanted:
        return 0.0
    present = {stem(w) for w in words(sentence)}
    return sum(1 for w in wanted if stem(w) in present) / len(wanted)


def shared_words(question: str, sentence: str) -> list[str]:
    """The question's content words that the sentence also has (for reading a score)."""
    present = {stem(w) for w in words(sentence)}
    return [w for w in content_words(question) if stem(w) in present]


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def answer_sentences(page_text: str, answer: str) -> list[str]:
    """The candidate sentences of a page's raw pypdf text that contain the answer (rule 4 above)."""
    needle = _collapse(answer).casefold()
    sentences = [s for s in _SENTENCE_END.split(_collapse(page_text)) if needle in s.casefold()]
    candidates = [s for s in sentences if len(words(s)) <= MAX_SENTENCE_WORDS]
    candidates += [line for line in page_text.splitlines() if needle in _collapse(line).casefold()]
    if not candidates:  # only in a long run without full stops, or across a sentence break
        parts = _SENTENCE_END.split(_collapse(page_text))
        pairs = [f"{a} {b}" for a, b in pairwise(parts) if needle in f"{a} {b}".casefold()]
        candidates = sentences or pairs
    return candidates


def page_overlap(question: str, page_text: str, answer: str) -> float:
    """The question's overlap with its answer's sentence on a page: the highest over the candidate sentences."""
    return max((score(question, s) for s in answer_sentences(page_text, answer)), default=0.0)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print('usage: python -m eval.datasets.overlap "question" "sentence"')
        return 2
    question, sentence = argv
    print(f"overlap {score(question, sentence):.3f}")
    print(f"content words: {content_words(question)}")
    print(f"shared: {shared_words(question, sentence)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
