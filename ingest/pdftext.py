"""Cleaning of the text pypdf extracts from a PDF, before it is stored, chunked and cited.

pypdf returns what is printed on a page, including what a reader's eye skips: running headers and
footers, page numbers, the line-number gutter of transcripts, and words split at the end of a line.
Left in, they end up inside chunks, dilute embeddings and show up in citations. Every function here
is pure and works on lines (a page is a list of lines), so `load_pdf` can build the final text and
its page sections from what these return, and offsets stay exact by construction.

The rules are conservative on purpose: removing real body text is worse than keeping some furniture.
No regular expression here runs on an unbounded line (see `_MAX_FURNITURE_LINE`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

# A line must sit among the first or last `EDGE_LINES` non-empty lines of a page to count as a header or
# footer: pypdf's order is the content stream's, so furniture is near an edge but not always on it.
EDGE_LINES = 3
# Repeated on at least this share of the pages, and on at least `MIN_REPEAT_PAGES` of them.
REPEAT_SHARE = 0.5
MIN_REPEAT_PAGES = 3
# A transcript gutter numbers at least this many lines (court transcripts use 25, pleading paper 28).
MIN_GUTTER_RUN = 10
# Headers, footers and page numbers are short; longer lines are body text and skip the furniture rules,
# which also bounds the cost of the regular expressions below on hostile input.
_MAX_FURNITURE_LINE = 300
_MAX_PAGE_NUMBER_LINE = 40
# At most this many frequent lines are tried as the halves of a header glued to a footer (see `_glued_parts`).
_MAX_GLUE_CANDIDATES = 50

_HYPHENS = "-\u2010"  # hyphen-minus and the Unicode hyphen; a soft hyphen is always a line-break artefact
_SOFT_HYPHEN = "\u00ad"
_DIGITS = re.compile(r"\d+")
_PAGE_NUMBER = re.compile(r"(page\s*)?([-–—]\s*)?(\d{1,5})(\s*[-–—])?(\s*(?:of|/)\s*\d{1,5})?", re.IGNORECASE)
# Words that often start a real compound ("self-publishing", "well-known"): a line break after their
# hyphen keeps the hyphen even when the next line starts in lowercase.
_COMPOUND_FIRST = frozenset({"self", "non", "well", "ex", "all", "half", "cross", "full", "high", "low", "long"}) | {
    *("short", "so", "built", "one", "two", "three", "four", "five", "twenty", "thirty", "forty", "fifty")
}


def clean_pages(pages: Sequence[str]) -> list[str]:
    """Clean every page of one document; returns one text per page, in order (a page may come back empty).

    Running headers need every page to be recognised, and hyphenated words are judged against the
    whole document's vocabulary, so this is a document-level pass rather than a per-page one.
    """
    lines = [drop_line_number_gutter(split_lines(page)) for page in pages]
    lines = drop_running_lines(lines)
    lines = [drop_page_number_lines(page, number) for number, page in enumerate(lines, start=1)]
    vocabulary = Vocabulary.of(lines)
    return ["\n".join(join_hyphenated(page, vocabulary)).strip() for page in lines]


def split_lines(text: str) -> list[str]:
    """The page's lines without trailing blanks (pypdf ends most lines with a space)."""
    return [line.rstrip() for line in text.splitlines()]


def line_key(line: str) -> str:
    """A line with digit runs replaced by `#` and spacing collapsed: equal for every page of a running header.

    Page numbers, frame numbers and dates inside a header change from page to page; the rest does not.
    """
    return _DIGITS.sub("#", " ".join(line.split()))


def edge_indices(lines: Sequence[str], count: int = EDGE_LINES) -> list[int]:
    """Indices of the first and last `count` non-empty lines, where headers and footers end up."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    return sorted(set(filled[:count] + filled[-count:]))


def drop_running_lines(pages: Sequence[Sequence[str]]) -> list[list[str]]:
    """Remove running headers and footers: edge lines whose `line_key` recurs on most pages.

    pypdf sometimes emits a header and a footer as one line without a break between them (the Federal
    Register's `...E:\\FR\\FM\\06AUP1.SGM 06AUP1jbell on ... PROPOSALS`); such a line counts for, and is
    removed as, the two running lines it is made of.
    """
    if len(pages) < MIN_REPEAT_PAGES:
        return [list(page) for page in pages]
    page_keys = [_edge_keys(page) for page in pages]
    frequent = _frequent_keys(page_keys)
    support: Counter[str] = Counter()
    for keys in page_keys:
        found: set[str] = set()
        for key in keys.values():
            found.update(_glued_parts(key, frequent) or (key,))
        support.update(found)
    threshold = max(MIN_REPEAT_PAGES, math.ceil(REPEAT_SHARE * len(pages)))
    running = {key for key, pages_with in support.items() if pages_with >= threshold and _has_word_or_number(key)}
    return [_without_running(page, keys, running) for page, keys in zip(pages, page_keys, strict=True)]


def _edge_keys(lines: Sequence[str]) -> dict[int, str]:
    return {i: line_key(lines[i]) for i in edge_indices(lines) if len(lines[i]) <= _MAX_FURNITURE_LINE}


def _frequent_keys(page_keys: Sequence[dict[int, str]]) -> list[str]:
    """Edge-line keys seen on two pages or more, the candidates for the halves of a glued line."""
    counts = Counter(key for keys in page_keys for key in set(keys.values()))
    return [key for key, seen in counts.most_common(_MAX_GLUE_CANDIDATES) if seen >= 2]


def _glued_parts(key: str, frequent: Sequence[str]) -> tuple[str, str] | None:
    """The two frequent lines `key` is made of, if it is one glued to another, else None."""
    for first in frequent:
        if first != key and key.startswith(first):
            rest = key[len(first) :].strip()
            if rest in frequent and rest != key:
                return first, rest
    return None


def _without_running(lines: Sequence[str], keys: dict[int, str], running: set[str]) -> list[str]:
    frequent = sorted(running)
    drop = {i for i, key in keys.items() if key in running or _glued_parts(key, frequent)}
    return [line for i, line in enumerate(lines) if i not in drop]


def _has_word_or_number(key: str) -> bool:
    return any(ch.isalnum() or ch == "#" for ch in key)


def drop_line_number_gutter(lines: Sequence[str]) -> list[str]:
    """Remove a transcript's line-number gutter, which pypdf emits as `1`..`25` on lines of their own
    (a run near an edge of the page) or as one line `1 2 3 ... 25`.

    Only a run counting up from 1 for at least `MIN_GUTTER_RUN` lines qualifies, so numbers in the body
    (a quantity, a footnote mark, a table cell) are never taken for a gutter.
    """
    kept = [line for line in lines if not _is_inline_gutter(line)]
    run = _gutter_run(kept)
    return kept if run is None else kept[: run[0]] + kept[run[1] :]


def _is_inline_gutter(line: str) -> bool:
    tokens = line.split()
    return len(tokens) >= MIN_GUTTER_RUN and tokens == [str(n) for n in range(1, len(tokens) + 1)]


def _gutter_run(lines: Sequence[str]) -> tuple[int, int] | None:
    """The [start, end) of a run of lines `1`, `2`, ... that starts or ends near an edge of the page."""
    edges = edge_indices(lines)
    first_edge, last_edge = edges[:EDGE_LINES], edges[-EDGE_LINES:]
    for start, line in enumerate(lines):
        if line.strip() != "1":
            continue
        end = start
        while end < len(lines) and lines[end].strip() == str(end - start + 1):
            end += 1
        if end - start >= MIN_GUTTER_RUN and (start in first_edge or end - 1 in last_edge):
            return start, end
    return None


def drop_page_number_lines(lines: Sequence[str], page: int) -> list[str]:
    """Remove page-number lines at the top or bottom of a page: `Page 3 of 15`, `- 3 -`, `3 / 15`, or a bare
    `3` on page 3.

    A bare number elsewhere, or one that is not this page's number, may be a table cell and is kept;
    page labels with an offset (a book's body starting at page 1 after its front matter) are
    running lines and `drop_running_lines` handles them.
    """
    edges = set(edge_indices(lines))
    return [line for i, line in enumerate(lines) if i not in edges or not is_page_number(line, page)]


def is_page_number(line: str, page: int) -> bool:
    """Whether a line holds nothing but a page number (see `drop_page_number_lines`)."""
    text = line.strip()
    if len(text) > _MAX_PAGE_NUMBER_LINE:
        return False
    match = _PAGE_NUMBER.fullmatch(text)
    if match is None:
        return False
    explicit = any(match.group(g) for g in (1, 2, 4, 5))
    return explicit or int(match.group(3)) == page


@dataclass(slots=True)
class Vocabulary:
    """The words and hyphenated compounds a document uses outside line-end breaks.

    Whether `data-\\nbase` means `database` or `data-base` is best answered by the document itself.
    """

    words: set[str] = field(default_factory=set)
    compounds: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, pages: Sequence[Sequence[str]]) -> Vocabulary:
        vocabulary = cls()
        for lines in pages:
            for index, line in enumerate(lines):
                tokens = line.split()
                if index > 0 and _ends_with_break(lines[index - 1]):
                    tokens = tokens[1:]  # the continuation of a broken word is not a word of its own
                if _ends_with_break(line):
                    tokens = tokens[:-1]
                for token in tokens:
                    vocabulary.add(token)
        return vocabulary

    def add(self, token: str) -> None:
        word = token.strip("()[]{}<>\"'“”‘’.,;:!?*").lower()
        if not word:
            return
        if "-" in word.strip("-"):
            self.compounds.add(word)
            self.words.update(part for part in word.split("-") if part)
        else:
            self.words.add(word.strip("-"))


def _ends_with_break(line: str) -> bool:
    return len(line) >= 2 and line[-1] in _HYPHENS + _SOFT_HYPHEN and line[-2].isalnum()


def join_hyphenated(lines: Sequence[str], vocabulary: Vocabulary) -> list[str]:
    """Join words broken across lines: `regu-` + `lation` becomes `regulation`.

    The hyphen goes when the continuation starts in lowercase and the word is plausibly one word (see
    `drops_hyphen`); otherwise it stays and only the line break goes (`Post-` + `Closing` becomes
    `Post-Closing`, `9-` + `ANM-Seattle` becomes `9-ANM-Seattle`). A break at the end of a page stays:
    each page is its own cited section.
    """
    out: list[str] = []
    for line in lines:
        if out and _ends_with_break(out[-1]) and line[:1].isalnum():
            previous = out.pop()
            hyphen_goes = previous.endswith(_SOFT_HYPHEN) or drops_hyphen(
                _last_word(previous[:-1]), _first_word(line), vocabulary
            )
            line = (previous[:-1] if hyphen_goes else previous) + line
        out.append(line)
    return out


def drops_hyphen(left: str, right: str, vocabulary: Vocabulary) -> bool:
    """Whether `left-` at a line end followed by `right` is one word broken by hyphenation.

    Rules, first that applies: a capital or digit continuation keeps the hyphen; a joined form the
    document uses elsewhere drops it; a hyphenated form it uses elsewhere keeps it; a continuation the
    document uses as a word of its own, after a common compound opener (`self`, `well`, `non`, ...) or
    after another word the document uses (`data` + `base`), keeps it; anything else (`regu` + `lation`,
    `high` + `est`) is joined.
    """
    if not left or not right or not right[0].islower() or not left[-1].isalpha():
        return False
    left_lower, right_lower = left.lower(), right.lower()
    if left_lower + right_lower in vocabulary.words:
        return True
    if f"{left_lower}-{right_lower}" in vocabulary.compounds:
        return False
    opener = left_lower in _COMPOUND_FIRST or (len(left) >= 3 and left_lower in vocabulary.words)
    return not (opener and right_lower in vocabulary.words)


def _last_word(text: str) -> str:
    """The letters and digits at the end of `text` (the part of a word before a line-end hyphen)."""
    end = len(text)
    start = end
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    return text[start:end]


def _first_word(text: str) -> str:
    end = 0
    while end < len(text) and text[end].isalpha():
        end += 1
    return text[:end]
