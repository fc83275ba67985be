"""Sentence units of chunk text as a PDF gives it: wrapped lines, tables, lists, page furniture.

A quote can only be as good as the unit it is cut from. Text from pypdf mixes wrapped prose (a sentence
runs over several lines), tables (a row is one line of short cells, often full of periods), lists, and
headings or labels without terminal punctuation. `split` turns such text into units with character
offsets into it, so a citation can point at the exact span; `quotable` keeps the units worth quoting.

Everything here is a linear scan. The regular expressions that run over whole text (`_LINE`, `_CONTENT`,
`_TERMINAL`) have at most one quantifier, on a character class, so they cannot backtrack super-linearly
on hostile input such as 60 KB of dots; every other pattern runs on one token at a time.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from ingest.pdftables import is_table_row

MAX_UNIT_CHARS = 400  # longer units are cut at whitespace: a quote is a sentence, not a page
_FULL_LINE_SHARE = 0.7  # a wrapped prose line is at least this share of the typical (median) line
_PROSE_SHARE = 0.2  # text is prose when this share of its unfinished lines go on in lower case

_TERMINAL = re.compile(r"[.!?]+")
_LINE = re.compile(r"[^\n]+")
_CONTENT = re.compile(r"[^\W_]")  # a letter or a digit
_OPEN_ROW = "=×+"  # a table row ending in an operator continues on the next line
_CLOSERS = "\"')]”’"
_STARTERS = "\"'([“‘"
_BULLETS = frozenset({"•", "-", "–", "—", "*", "·", "▪", "●", "◦", "‣", "/SM590000"})
_LIST_MARKER = re.compile(r"\(?(?:\d{1,3}|[a-zA-Z]|[ivxIVX]{1,4})[.)]")
_INITIALISM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # U.S, e.g, D.C, Ph.D (the last period is the boundary)
_NUMERIC = re.compile(r"[$€£(+-]?\d[\d,.:/%)×x-]*")
_ALPHA = re.compile(r"[A-Za-z]{2}")
_ABBREVIATIONS = frozenset(
    {
        "al", "approx", "art", "cal", "cf", "ch", "co", "corp", "dept", "dr", "ed", "eds", "eq", "eqs", "esq",
        "fig", "figs", "gen", "gov", "inc", "jr", "ltd", "mr", "mrs", "ms", "no", "nos", "op", "p", "pp",
        "prof", "ref", "refs", "rep", "rev", "sec", "sen", "sr", "st", "tab", "v", "vol", "vs",
        "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    }
)  # fmt: skip
# Capitalised, these words open a sentence; a wrapped line almost never starts with one mid-sentence.
_OPENERS = frozenset(
    {"the", "this", "these", "those", "that", "a", "an", "it", "its", "we", "our", "if", "there", "each"}
)
_CONTINUES = frozenset({"a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "with"})


@dataclass(frozen=True, slots=True)
class Span:
    """One unit: `text` is `source[start:end]` with each run of whitespace collapsed to one space.

    `kind` says how it was cut: "sentence" (prose, split at terminal punctuation), "line" (a line kept
    whole in line-structured text: a heading, a label, a list item) or "row" (a table row).
    """

    start: int
    end: int
    text: str
    kind: str


def collapse(text: str) -> str:
    """Whitespace runs to one space: the form in which quotes are compared and shown."""
    return " ".join(text.split())


def split(text: str) -> list[Span]:
    """Every unit of `text`, in order, junk included (see `quotable` for the ones worth quoting)."""
    lines = _lines(text)
    prose = _is_prose(text, lines)
    spans: list[Span] = []
    for start, end, kind in _blocks(text, lines, prose, _typical_length(text, lines)):
        if kind == "row":
            spans.append(_span(text, start, end, kind))
        else:
            spans.extend(_sentences(text, start, end, "sentence" if kind == "block" else kind))
    return [s for s in spans if s.text]


def quotable(text: str, max_chars: int = MAX_UNIT_CHARS) -> list[Span]:
    """The units of `text` worth quoting: junk dropped (`is_junk`), over-long units cut at whitespace."""
    kept: list[Span] = []
    for span in split(text):
        for piece in _cut(text, span, max_chars):
            if not is_junk(piece.text):
                kept.append(piece)
    return kept


def is_junk(unit: str) -> bool:
    """Units no answer should quote: number runs (a transcript's `1 2 3 … 25` gutter), rules and furniture
    with fewer than three words, unless a number sits beside a label ("Kentucky 295,891", "Fee: $40")."""
    tokens = unit.split()
    words = [i for i, token in enumerate(tokens) if _ALPHA.search(token)]
    if len(words) >= 3:
        return False
    numbers = {i for i, token in enumerate(tokens) if _NUMERIC.fullmatch(token.strip(".,;:"))}
    return not any(i - 1 in numbers or i + 1 in numbers for i in words)


# -- lines and blocks ----------------------------------------------------------------------------


def _lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line holding a letter or a digit, stripped of surrounding whitespace. Lines of
    only punctuation and spaces (rules, dot leaders, stray bullets) are layout and skipped here, which
    also keeps hostile input (60 KB of dots and newlines) from costing a Python step per line."""
    found: list[tuple[int, int]] = []
    for match in _LINE.finditer(text):
        start, end = match.span()
        if _CONTENT.search(text, start, end) is None:
            continue
        line = match.group()
        found.append((start + len(line) - len(line.lstrip()), end - len(line) + len(line.rstrip())))
    return found


def _is_prose(text: str, lines: list[tuple[int, int]]) -> bool:
    """Wrapped prose goes on in lower case after a line that does not end a sentence; headings, forms and
    tables hardly ever do. Only such line pairs count, so a page of prose above a table is still prose."""
    starts = [
        text[start]
        for (_, previous_end), (start, end) in itertools.pairwise(lines)
        if text[previous_end - 1] not in ".!?:;" and text[start].isalpha() and not _is_row(text[start:end])
    ]
    return bool(starts) and sum(c.islower() for c in starts) >= _PROSE_SHARE * len(starts)


def _typical_length(text: str, lines: list[tuple[int, int]]) -> int:
    """The median length of the lines with words that are not table rows: the width of a column of running
    text (the longest line would be a URL or a heading across two columns; a gutter's numbers are short)."""
    lengths = sorted(
        end - start for start, end in lines if _ALPHA.search(text, start, end) and not _is_row(text[start:end])
    )
    return lengths[len(lengths) // 2] if lengths else 0


def _is_row(line: str) -> bool:
    """A table row: dot leaders, or at least three numeric cells making up a large share of the line."""
    if "...." in line or ". . . ." in line or is_table_row(line):
        return True
    tokens = line.split()
    numbers = sum(1 for token in tokens if _NUMERIC.fullmatch(token.strip(".,;:")))
    return numbers >= 3 and numbers >= 0.4 * len(tokens)


def _is_number_run(line: str) -> bool:
    return all(_NUMERIC.fullmatch(token) for token in line.split())


def _is_list_item(line: str) -> bool:
    first = line.split(maxsplit=1)[0]
    return first in _BULLETS or (len(line) > len(first) and _LIST_MARKER.fullmatch(first) is not None)


def _after_bullet(text: str, start: int, end: int) -> int:
    """Where a line's text begins after a bullet glyph ("•", pypdf's "/SM590000"): the glyph is layout."""
    first = text[start:end].split(maxsplit=1)[0]
    if first not in _BULLETS or start + len(first) == end:
        return start
    start += len(first)
    while start < end and text[start].isspace():
        start += 1
    return start


def _blocks(text: str, lines: list[tuple[int, int]], prose: bool, typical: int) -> list[tuple[int, int, str]]:
    """Consecutive lines joined into blocks of running text; rows and standalone lines kept apart."""
    blocks: list[tuple[int, int, str]] = []
    for start, end in lines:
        item = _is_list_item(text[start:end])
        start = _after_bullet(text, start, end)
        line = text[start:end]
        if blocks and blocks[-1][2] == "row" and text[blocks[-1][1] - 1] in _OPEN_ROW:
            blocks[-1] = (blocks[-1][0], end, "row")  # "79 work-hours × $85 per hour =" goes on
            continue
        if _is_number_run(line):  # a page number or a transcript's gutter: never part of a sentence
            blocks.append((start, end, "line"))
            continue
        continues = bool(blocks) and not item and _joins(text, blocks[-1], line, prose, typical)
        kind = "row" if _is_row(line) and not (continues and prose) else "block"
        if kind == "block" and continues:
            blocks[-1] = (blocks[-1][0], end, "block")
        else:
            blocks.append((start, end, kind))
    return [(start, end, _settle(text, start, end, kind, prose)) for start, end, kind in blocks]


def _joins(text: str, previous: tuple[int, int, str], line: str, prose: bool, typical: int) -> bool:
    """Whether `line` continues the block before it rather than starting a unit of its own."""
    start, end, kind = previous
    if kind != "block":
        return False
    last_line_start = text.rfind("\n", start, end) + 1 or start
    before = text[last_line_start:end].strip()
    last_word = before.rsplit(maxsplit=1)[-1]
    if line[0].islower() or before.endswith(("-", "–", ",")) or last_word.lower() in _CONTINUES:
        return True
    if before[-1] in ".!?:;" or before[-1] in _CLOSERS:
        return False
    opener = line.split(maxsplit=1)[0]
    return prose and len(before) >= _FULL_LINE_SHARE * typical and opener.lower() not in _OPENERS


def _settle(text: str, start: int, end: int, kind: str, prose: bool) -> str:
    """A one-line block in line-structured text is a "line": split only where a sentence ends inside it."""
    if kind == "row" or prose or "\n" in text[start:end]:
        return kind
    return "line"


# -- sentences inside a block --------------------------------------------------------------------


def _sentences(text: str, start: int, end: int, kind: str) -> list[Span]:
    spans: list[Span] = []
    unit_start = start
    for match in _TERMINAL.finditer(text, start, end):
        boundary = match.end()
        while boundary < end and text[boundary] in _CLOSERS:
            boundary += 1
        if _is_boundary(text, unit_start, match.start(), match.group(), boundary, end):
            spans.append(_span(text, unit_start, boundary, kind))
            unit_start = boundary
    spans.append(_span(text, unit_start, end, kind))
    return spans


def _is_boundary(text: str, unit_start: int, mark: int, marks: str, boundary: int, end: int) -> bool:
    """A sentence ends at `marks` when whitespace and a sentence start follow and no abbreviation precedes."""
    if boundary >= end or not text[boundary].isspace():
        return False
    following = boundary
    while following < end and text[following].isspace():
        following += 1
    if following >= end:
        return False
    nxt = text[following]
    if not (nxt.isupper() or nxt.isdigit() or nxt in _STARTERS):
        return False
    if marks != ".":
        return True
    token_start = mark
    while token_start > unit_start and not text[token_start - 1].isspace():
        token_start -= 1
    return not _abbreviation(text[token_start:mark].lstrip("(\"'“‘"), first=token_start <= unit_start)


def _abbreviation(token: str, *, first: bool) -> bool:
    """A period after this token does not end a sentence: "e.g", "No", "U.S", an initial, a list number."""
    if not token:
        return False
    if token.lower() in _ABBREVIATIONS or _INITIALISM.fullmatch(token):
        return True
    if len(token) == 1 and token.isalpha():
        return True
    return first and token.isdigit() and len(token) <= 3


# -- spans ---------------------------------------------------------------------------------------


def _span(text: str, start: int, end: int, kind: str) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(start, end, collapse(text[start:end]), kind)


def _cut(text: str, span: Span, max_chars: int) -> list[Span]:
    """Pieces of at most `max_chars` characters of source, cut at the last whitespace before the limit."""
    pieces: list[Span] = []
    start = span.start
    while span.end - start > max_chars:
        limit = start + max_chars
        cut = limit
        while cut > start and not text[cut].isspace():
            cut -= 1
        if cut == start:
            cut = limit
        pieces.append(_span(text, start, cut, span.kind))
        start = cut
    pieces.append(_span(text, start, span.end, span.kind))
    return [p for p in pieces if p.text]
