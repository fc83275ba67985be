"""Whether a new question asks for the same thing as a curated one: similarity plus a lexical guard.

Embedding similarity alone cannot tell a paraphrase from a near miss (another year, another state, "most"
instead of "fewest", "uninstall" instead of "install" all keep the cosine high). `distinguishing_terms` looks
for the surface signals that change an information need while leaving the wording alike, and `same_need`
accepts a match only when the similarity clears the threshold and no such signal is found. Misses are cheap
(the question gets a normal answer), false matches are not, so every rule errs towards "different".

Signals, each compared between the two questions:

* numbers, codes and number words (years, flight numbers, "2018-23-51", "two", "second"): the same set;
* month and weekday names (abbreviations folded): the same set;
* names: capitalised words after the first word, acronyms, identifiers (``RAGKB_X``, ``.env``), quoted
  words. A name on one side is matched by the same word anywhere on the other side (any case) or, for an
  acronym, by the initials of consecutive words ("AD" ~ "airworthiness directive");
* polarity: the count of negations (not, no, never, without, n't, and "un"-words whose base is on the
  other side, so "uninstall" differs from "install" while "unchanged" equals "not changed") must agree;
* contrast concepts (most/fewest, first/last, before/after, enable/disable, add/remove, ...): each word
  maps to a concept, and the two questions must use the same concepts;
* what kind of answer is asked for (a time, a quantity, money, an identifier, a person, a place, a reason):
  when both questions show one, the kinds must agree;
* content words (stemmed, without stop words): a word on each side that the other lacks is a substitution
  ("handgun" for "long gun", "memory" for "disk space") and counts as a difference. Words added on one side
  only (a longer question, "on my machine") do not; the other signals still apply to them. This rule costs
  most paraphrases that reword (synonyms are substitutions too): it is the price of not serving a near miss.

Pure and fast: regular expressions and small tables, no model, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

__all__ = ["distinguishing_terms", "same_need"]

_TOKEN = re.compile(r"[A-Za-z0-9_$%]+(?:[./-][A-Za-z0-9_]+)*")
_QUOTED = re.compile(r"[\"“”']([^\"“”']{1,40})[\"“”']")
_CLAUSE_START = re.compile(r"(?:^|[.:;!?]\s+)([A-Za-z][\w'-]*)")

_STOP = frozenset(
    """a an the and or but of to in on at by for from with as into onto about over under per via than then
    is are was were be been being am do does did done doing have has had having can could will would
    shall should may might must i me my mine we our us you your it its this that these those there here
    what which who whom whose when where why how s t if so up out off too very just also any some each
    all""".split()  # noqa: SIM905
)

_FILLER = frozenset(
    """please tell know want like way thing something exactly actually really get got""".split()  # noqa: SIM905
)

_NUMBER_WORDS = {
    "zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "twenty": "20", "hundred": "100",
    "thousand": "1000", "million": "1000000", "billion": "1000000000", "dozen": "12",
    "first": "#1", "second": "#2", "third": "#3", "fourth": "#4", "fifth": "#5", "sixth": "#6",
    "seventh": "#7", "eighth": "#8", "ninth": "#9", "tenth": "#10",
}  # fmt: skip

_MONTHS = {
    "january": "january", "jan": "january", "february": "february", "feb": "february", "march": "march",
    "mar": "march", "april": "april", "apr": "april", "may": "may", "june": "june", "jun": "june",
    "july": "july", "jul": "july", "august": "august", "aug": "august", "september": "september",
    "sep": "september", "sept": "september", "october": "october", "oct": "october", "november": "november",
    "nov": "november", "december": "december", "dec": "december",
}  # fmt: skip
_AMBIGUOUS_MONTHS = frozenset({"may", "march", "mar", "jan", "dec", "sep", "oct"})  # months only when capitalised
_WEEKDAYS = frozenset({"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"})

_NEGATIONS = frozenset({"not", "no", "never", "without", "none", "nothing", "neither", "nor", "cannot"})

# word -> concept; two questions must use the same set of concepts. Synonyms share a concept, opposites do not.
_CONCEPT_GROUPS: dict[str, tuple[str, ...]] = {
    "max": ("most", "highest", "largest", "biggest", "greatest", "maximum", "max", "top", "longest", "heaviest",
            "oldest", "best"),
    "min": ("fewest", "least", "lowest", "smallest", "minimum", "min", "shortest", "lightest", "newest", "worst"),
    "start": ("begin", "began", "begun", "begins", "beginning", "start", "starts", "started", "starting",
              "earliest", "opening", "open", "opened", "opens"),
    "end": ("end", "ends", "ended", "ending", "finish", "finished", "finishes", "last", "latest", "final",
            "stop", "stops", "stopped", "close", "closed", "closes", "conclude", "concluded"),
    "before": ("before", "prior", "previous", "previously", "earlier", "preceding", "until"),
    "after": ("after", "following", "since", "later", "subsequent", "afterwards", "next"),
    "up": ("increase", "increased", "increases", "raise", "raised", "grow", "grew", "rise", "rose", "higher",
           "more", "above", "exceed", "exceeds", "greater"),
    "down": ("decrease", "decreased", "decreases", "reduce", "reduced", "lower", "lowered", "shrink", "drop",
             "fell", "fall", "less", "fewer", "below"),
    "on": ("enable", "enabled", "enables", "activate", "activated", "allow", "allowed", "allows", "permit",
           "permitted"),
    "off": ("disable", "disabled", "disables", "deactivate", "deactivated", "forbid", "forbidden", "prohibit",
            "prohibited", "block", "blocked", "deny", "denied", "ban", "banned", "turn-off"),
    "add": ("add", "adds", "added", "create", "creates", "created", "insert", "inserted"),
    "remove": ("remove", "removes", "removed", "delete", "deletes", "deleted", "erase", "drop", "purge"),
    "import": ("import", "imports", "imported", "upload", "uploads", "uploaded"),
    "export": ("export", "exports", "exported", "download", "downloads", "downloaded"),
    "in": ("input", "inputs", "incoming", "inbound", "receive", "received"),
    "out": ("output", "outputs", "outgoing", "outbound", "send", "sent"),
    "petitioner": ("petitioner", "petitioners", "plaintiff", "plaintiffs", "appellant", "prosecution"),
    "respondent": ("respondent", "respondents", "defendant", "defendants", "appellee", "defense"),
    "world": ("worldwide", "global", "globally", "international", "foreign", "abroad"),
    "average": ("average", "mean", "median", "typical"),
    "share": ("percent", "percentage", "proportion", "fraction", "ratio", "%"),
    "shared": ("share", "shares", "shared", "sharing", "same", "common", "together"),
    "separate": ("separate", "separately", "own", "individual", "distinct", "different", "another", "dedicated"),
    "private": ("private",),
    "public": ("public",),
    "buy": ("buy", "bought", "purchase", "purchased"),
    "sell": ("sell", "sold", "sale", "sales"),
    "succeed": ("succeed", "succeeds", "succeeded", "success", "successful", "pass", "passes", "passed"),
    "fail": ("fail", "fails", "failed", "failure", "error", "errors"),
}  # fmt: skip
_CONCEPT = {word: concept for concept, words in _CONCEPT_GROUPS.items() for word in words}

# kinds of answer; "money" words are checked before the generic quantity ones.
_KIND_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("money", re.compile(r"\b(?:cost|costs|price|prices|paid|pay|pays|spend|spent|spending|dollars?|fee|fees|"
                         r"expenses?|budget|\$)\b")),
    ("time", re.compile(r"\bwhen\b|\bwhat (?:\w+ )?(?:date|day|year|month|time|hour)\b|\b(?:which|what) (?:date|day|"
                        r"year|month)\b|\bhow long ago\b|\bdeadline\b")),
    ("quantity", re.compile(r"\bhow (?:many|much|big|large|small|long|far|often|heavy|high|fast)\b|\bnumber of\b|"
                            r"\btotal\b|\bamount\b|\bcount\b")),
    ("identifier", re.compile(r"\b(?:which|what) (?:\w+ )?(?:number|id|code|name)\b")),
    ("person", re.compile(r"\bwho\b|\bwhom\b|\bwhose\b")),
    ("place", re.compile(r"\bwhere\b")),
    ("reason", re.compile(r"\bwhy\b|\breason\b|\bwhat causes?\b")),
)  # fmt: skip


def _prepare(text: str) -> str:
    text = text.replace("’", "'")
    text = re.sub(r"\b(can|won|ca|wo)n't\b", r"\1 not", text, flags=re.IGNORECASE)
    text = re.sub(r"n't\b", " not", text, flags=re.IGNORECASE)
    return re.sub(r"'s\b", "", text)


def _tokens(text: str) -> list[str]:
    return [token.strip("._-/") or token for token in _TOKEN.findall(text)]


def _folded_words(tokens: Iterable[str]) -> set[str]:
    words: set[str] = set()
    for token in tokens:
        folded = token.casefold()
        words.add(folded)
        words.update(part for part in re.split(r"[./_-]", folded) if part)
        if folded.endswith("s") and len(folded) > 3:
            words.add(folded[:-1])
    return words


def _numbers(tokens: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for token in tokens:
        folded = token.casefold()
        if any(char.isdigit() for char in folded):
            found.add(folded.replace(",", ""))
        elif folded in _NUMBER_WORDS:
            found.add(_NUMBER_WORDS[folded])
    return found


def _clause_starts(text: str, tokens: list[str]) -> list[bool]:
    """For each token, whether it starts the question or a clause (where any word is capitalised)."""
    starts = {match.start(1) for match in _CLAUSE_START.finditer(text)}
    flags: list[bool] = []
    position = 0
    for token in tokens:
        at = text.find(token, position)
        position = at + len(token) if at >= 0 else position
        flags.append(at in starts)
    return flags


def _dates(text: str, tokens: list[str]) -> set[str]:
    found: set[str] = set()
    for token, starts in zip(tokens, _clause_starts(text, tokens), strict=True):
        folded = token.casefold().rstrip(".")
        if folded in _MONTHS and (folded not in _AMBIGUOUS_MONTHS or (token[:1].isupper() and not starts)):
            found.add(_MONTHS[folded])
        elif folded in _WEEKDAYS:
            found.add(folded)
    return found


def _names(text: str, tokens: list[str]) -> set[str]:
    """Capitalised words that do not start a clause, acronyms, identifiers and quoted words (case-folded)."""
    names: set[str] = set()
    for token, starts in zip(tokens, _clause_starts(text, tokens), strict=True):
        if any(char.isdigit() for char in token) or token.casefold() in _NUMBER_WORDS:
            continue  # numbers are compared on their own
        folded = token.casefold()
        if folded in _MONTHS or folded in _WEEKDAYS:
            continue
        acronym = sum(char.isupper() for char in token) >= 2
        identifier = "_" in token or token.startswith(".")
        capitalised = token[:1].isupper() and not starts and folded not in _STOP
        if acronym or identifier or capitalised:
            names.add(folded)
    for quoted in _QUOTED.findall(text):
        names.update(word.casefold() for word in _tokens(quoted) if word.casefold() not in _STOP)
    if text[:1] == ".":
        names.update(token.casefold() for token in tokens[:1])
    return names


def _spelled_out(acronym: str, tokens: list[str]) -> bool:
    """True when consecutive words of `tokens` have the acronym's letters as initials ("AD" ~ "airworthiness
    directive")."""
    letters = acronym.replace(".", "")
    if len(letters) < 2 or not letters.isalpha():
        return False
    initials = "".join(token[0].casefold() for token in tokens if token[:1].isalpha())
    return letters.casefold() in initials and _consecutive(letters.casefold(), tokens)


def _consecutive(letters: str, tokens: list[str]) -> bool:
    words = [token.casefold() for token in tokens if token[:1].isalpha()]
    for start in range(len(words) - len(letters) + 1):
        if all(words[start + offset][0] == letters[offset] for offset in range(len(letters))):
            return True
    return False


def _negations(tokens: list[str], other_words: set[str]) -> list[str]:
    found: list[str] = []
    for token in tokens:
        folded = token.casefold()
        if folded in _NEGATIONS or (
            folded.startswith("un")
            and len(folded) > 5
            and folded[2:]
            in other_words | {word for word in other_words if folded[2:].startswith(word) and len(word) >= 4}
        ):
            found.append(folded)
    return found


def _concepts(tokens: Iterable[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for token in tokens:
        folded = token.casefold()
        concept = _CONCEPT.get(folded)
        if concept is not None:
            found.setdefault(concept, set()).add(folded)
    return found


def _kinds(text: str) -> dict[str, str]:
    lowered = text.casefold()
    kinds: dict[str, str] = {}
    for kind, pattern in _KIND_PATTERNS:
        match = pattern.search(lowered)
        if match is not None:
            kinds[kind] = match.group(0)
    if "money" in kinds:
        kinds.pop("quantity", None)  # "how much did it cost" asks for money, not a generic quantity
    return kinds


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def _content(tokens: Iterable[str]) -> dict[str, str]:
    """Stem -> word for the words that carry meaning (not stop words, numbers, dates or contrast words)."""
    words = [
        part for token in tokens for part in re.split(r"[./_-]", token.casefold()) if len(part) > 2 or token == part
    ]
    words = [
        word
        for word in words
        if word not in _STOP
        and word not in _FILLER
        and word not in _NUMBER_WORDS
        and word not in _CONCEPT
        and word not in _NEGATIONS
        and word not in _MONTHS
        and word not in _WEEKDAYS
        and not any(char.isdigit() for char in word)
    ]
    stems: list[str] = _stemmer().stemWords(words)
    return dict(zip(stems, words, strict=True))


def _one_sided(mine: set[str], other: set[str]) -> list[str]:
    return sorted(mine - other)


def distinguishing_terms(asked: str, curated: str) -> list[str]:
    """The terms that make the two questions ask for different things; empty when no difference is found.

    Each term is a word (or number, name, concept word) from one of the questions, in a stable order:
    numbers, dates, names, negations, contrast words, answer kinds.
    """
    texts = (_prepare(asked), _prepare(curated))
    tokens = (_tokens(texts[0]), _tokens(texts[1]))
    words = (_folded_words(tokens[0]), _folded_words(tokens[1]))
    terms: list[str] = []

    numbers = (_numbers(tokens[0]), _numbers(tokens[1]))
    terms += _one_sided(numbers[0], numbers[1]) + _one_sided(numbers[1], numbers[0])

    dates = (_dates(texts[0], tokens[0]), _dates(texts[1], tokens[1]))
    terms += _one_sided(dates[0], dates[1]) + _one_sided(dates[1], dates[0])

    for side in (0, 1):
        other = 1 - side
        for name in sorted(_names(texts[side], tokens[side])):
            parts = [part for part in re.split(r"[./_-]", name) if part]
            if name in words[other] or (parts and all(part in words[other] for part in parts)):
                continue
            if _spelled_out(name, tokens[other]):
                continue
            terms.append(name)

    negations = (_negations(tokens[0], words[1]), _negations(tokens[1], words[0]))
    if len(negations[0]) % 2 != len(negations[1]) % 2:
        terms += negations[0] + negations[1]

    concepts = (_concepts(tokens[0]), _concepts(tokens[1]))
    for concept in sorted(set(concepts[0]) ^ set(concepts[1])):
        terms += sorted(concepts[0].get(concept, set()) | concepts[1].get(concept, set()))

    kinds = (_kinds(texts[0]), _kinds(texts[1]))
    if kinds[0] and kinds[1] and set(kinds[0]) != set(kinds[1]):
        terms += [kinds[0][kind] for kind in kinds[0] if kind not in kinds[1]]
        terms += [kinds[1][kind] for kind in kinds[1] if kind not in kinds[0]]

    content = (_content(tokens[0]), _content(tokens[1]))
    only = [
        sorted(
            content[side][stem]
            for stem in set(content[side]) - set(content[1 - side]) - words[1 - side]
            if not (stem.startswith("un") and stem[2:] in content[1 - side])
        )  # polarity is checked above
        for side in (0, 1)
    ]
    if only[0] and only[1]:  # a word replaced by another: without a synonym table, a different need
        terms += only[0] + only[1]

    unique: list[str] = []
    for term in terms:
        if term not in unique:
            unique.append(term)
    return unique


def same_need(asked: str, curated: str, similarity: float, threshold: float) -> bool:
    """The asked question can be answered from the curated one: similar enough, and nothing tells them apart."""
    return similarity >= threshold and not distinguishing_terms(asked, curated)
