"""PDF tables as rows a person can read: each row with its column headers, in place of pypdf's run-together row.

pypdf prints a table row as its cells' text in content-stream order, so a NICS row reads
`Texas 21,550 56,941 51,670 2,532 3,048 0 29 20 05,7485,331 21 ...`: digits of neighbouring cells run
together and nothing says which number is which column. pdfplumber's table finder knows where the table's
ruling lines are; from them this module takes the column boundaries, reads the header words above the first
data line (a header cell spanning several columns with a title line above, "Pre-Pawn" over "Handgun Long Gun
*Other", prefixes its title to each column below it), and writes every data line as

    Texas — Permit: 21,550; Handgun: 56,941; Long Gun: 51,670; ...; Totals: 146,982

(`ROW_SEPARATOR` after the row's label, `CELL_SEPARATOR` between cells, `LABEL_SEPARATOR` between a
column's label and its value). `rewrite_page` replaces the page's pypdf lines that belong to a table with
these rows, at the place of the table's first line, so offsets and page numbers stay exact against the
final text by construction (the loader builds its sections from what this returns).

Only tables that look like data are rewritten: at least two columns with a header and two data rows with
two filled cells. Anything pdfplumber cannot read leaves the page as pypdf gave it.
"""

from __future__ import annotations

import io
import itertools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pdfplumber

log = logging.getLogger("ragkb.ingest")

ROW_SEPARATOR = " — "
CELL_SEPARATOR = "; "
LABEL_SEPARATOR = ": "
MIN_COLUMNS = 2
MIN_DATA_ROWS = 2
MAX_HEADER_ROWS = 3
MAX_LABEL_CHARS = 80
MAX_ROW_CHARS = 300  # about 100 tokens: a row line fits a chunk (200 tokens) with room to spare
LINE_TOLERANCE = 3.0  # words whose tops are this close (points) sit on one line
WORD_GAP = 0.15  # a gap wider than this share of the font size separates words (the Senate PDF is set in 5 pt)
EDGE_TOLERANCE = 1.5  # column edges this close are one edge
TABLE_LINE_SHARE = 0.3  # and this share of a line's tokens are the table's words, every other token some of them glued
DIGIT_SHARE = 0.3  # a row is data, not header, when this share of its filled cells hold a digit

_DIGIT = re.compile(r"\d")
_GOES_ON = frozenset({"or", "and", "of", "the", "to", "for", "in", "with", "a"})
_NOISE = re.compile(r"\(cid:\d+\)|\.{3,}$")  # undecodable glyphs (pdfminer's "(cid:2)" bullets) and dot leaders
# "Texas — Permit: 21,550; ..." as `table_row` writes it: a label, the separator, then "header: value".
ROW_PATTERN = re.compile(r"[^\n]{1,120} — [^\n:;]{1,80}: |[^\n:;]{1,80}: [^\n;]{1,200}; [^\n:;]{1,80}: ")


@dataclass(frozen=True, slots=True)
class Table:
    """One table of a page: caption lines (titles spanning the whole table), a label per column, the rows
    (one cell text per column, "" where empty) and the words it holds (to find its lines in pypdf's text)."""

    captions: list[str]
    headers: list[str]
    rows: list[list[str]]
    tokens: frozenset[str]  # its words, lower case, as `_strip` leaves them

    def lines(self) -> list[str]:
        return [*self.captions, *(line for row in self.rows for line in table_row(self.headers, row))]


def table_row(headers: Sequence[str], cells: Sequence[str]) -> list[str]:
    """One row as text: its first cell (the row's label), then every filled cell with its column's label.
    A wide row (NICS has 24 columns) is written as several lines of at most `MAX_ROW_CHARS`, each with the
    row's label, so a chunk (and a quote) never holds half a row."""
    label = cells[0]
    parts = [
        f"{header}{LABEL_SEPARATOR}{value}" if header else value
        for header, value in zip(headers[1:], cells[1:], strict=True)
        if value
    ]
    head = f"{label}{ROW_SEPARATOR}" if label else ""
    lines: list[str] = []
    current: list[str] = []
    for part in parts:
        if current and len(head) + len(CELL_SEPARATOR.join([*current, part])) > MAX_ROW_CHARS:
            lines.append(head + CELL_SEPARATOR.join(current))
            current = []
        current.append(part)
    if current or not lines:
        lines.append(head + CELL_SEPARATOR.join(current))
    return lines


def is_table_row(line: str) -> bool:
    """Whether a line is a row written by `table_row` (with a label and at least one labelled cell)."""
    return ROW_PATTERN.match(line) is not None


def document_tables(data: bytes, texts: Sequence[str]) -> list[list[Table]]:
    """The data tables of a PDF's pages, by page (empty lists where there are none, and for every page when
    pdfplumber cannot open the file: the text is then pypdf's alone). Only pages with text (`texts`, pypdf's)
    are parsed again: pdfplumber reads a page's whole content stream, and a page without text (a scan, or a
    crafted stream of millions of operators that draw nothing) has no table to find."""
    found: list[list[Table]] = [[] for _ in texts]
    wanted = {i for i, text in enumerate(texts) if text.strip()}
    if not wanted:
        return found
    try:
        with pdfplumber.open(io.BytesIO(data)) as pdf:
            for index, page in enumerate(pdf.pages[: len(texts)]):
                if index in wanted:
                    found[index] = page_tables(page)
                page.close()
    except Exception as exc:  # pdfminer's errors have no common base; pypdf's text stands
        log.warning("pdfplumber could not read the PDF's tables: %s", exc)
    return found


def page_tables(page: Any) -> list[Table]:
    """The data tables of one pdfplumber page, top to bottom (any failure of the finder: none)."""
    try:
        found = page.find_tables()
    except Exception as exc:  # a page pdfplumber cannot read keeps pypdf's text
        log.warning("pdfplumber could not read the tables of page %s: %s", getattr(page, "page_number", "?"), exc)
        return []
    tables = []
    for table in sorted(found, key=lambda t: t.bbox[1]):
        read = _read(page, table)
        if read is not None:
            tables.append(read)
    return tables


def rewrite_page(text: str, tables: Sequence[Table]) -> str:
    """`text` (one page of pypdf's cleaned text) with each table's lines replaced by its readable rows,
    placed where the table's first line was."""
    if not tables:
        return text
    lines = text.split("\n")
    taken: set[int] = set()
    inserts: dict[int, list[str]] = {}
    for table in tables:
        mine = [i for i, line in enumerate(lines) if i not in taken and _belongs(line, table.tokens)]
        if len(mine) < MIN_DATA_ROWS:
            continue
        taken.update(mine)
        inserts.setdefault(mine[0], []).extend(table.lines())
    out: list[str] = []
    for i, line in enumerate(lines):
        out.extend(inserts.get(i, []))
        if i not in taken:
            out.append(line)
    return "\n".join(out)


def _belongs(line: str, words: frozenset[str]) -> bool:
    """A pypdf line is the table's when most of its tokens are the table's words and every other token is
    some of them glued together ("05,7485,331" for "0", "5,748" and "5,331"). A token the table does not
    hold at all ("2.73" of a column the finder missed) keeps the line, so no word of the page is lost."""
    tokens = [t for t in (_strip(t) for t in line.split()) if t]
    if not tokens:
        return False
    inside = sum(t in words for t in tokens)
    return inside >= TABLE_LINE_SHARE * len(tokens) and all(t in words or _glued(t, words) for t in tokens)


def _strip(token: str) -> str:
    return token.strip(".,;:()[]").lower()


def _glued(token: str, words: frozenset[str], parts: int = 8) -> bool:
    """Whether `token` is at most `parts` of the table's words written without spaces between them."""
    if not token or parts == 0:
        return not token
    return any(token[:i] in words and _glued(token[i:], words, parts - 1) for i in range(1, len(token) + 1))


def _read(page: Any, table: Any) -> Table | None:
    left, right = _widened(page, table)
    inner = _column_edges(table)
    edges = _outer_columns(page, table, inner, left, right)
    columns = list(itertools.pairwise(edges))
    if len(columns) < MIN_COLUMNS:
        return None
    first_body, captions, headers = _header(page, table, columns)
    if first_body is not None and edges != inner:
        headers = _outer_labels(page, table, columns, headers, first_body)
    named = [h for h in headers if h]
    if first_body is None or not any(headers[1:]) or len(set(named)) < len(named):
        return None
    if any(len(h) > MAX_LABEL_CHARS for h in named):  # a diagram in ruled boxes, not a table
        return None
    rows: list[list[str]] = []
    for band in table.rows[first_body:]:
        box = (edges[0], band.bbox[1], edges[-1], band.bbox[3])
        rows.extend(_band_rows(page.crop(box, strict=False).extract_words(x_tolerance_ratio=WORD_GAP), columns))
    data = [row for row in rows if sum(1 for cell in row if cell) >= MIN_COLUMNS]
    if len(data) < MIN_DATA_ROWS:
        return None
    if sum(1 for row in data if _DIGIT.search(row[0])) > len(data) / 2:  # the first column is data, not a label
        headers = headers[:]
        data = [["", *row] for row in data]
        headers.insert(0, "")
    box = (edges[0], table.bbox[1], edges[-1], table.bbox[3])
    words = page.crop(box, strict=False).extract_words(x_tolerance_ratio=WORD_GAP)
    return Table(captions, headers, data, frozenset(_strip(w["text"]) for w in words))


def _widened(page: Any, table: Any) -> tuple[float, float]:
    """The x-range of the horizontal rules the table sits between. A table ruled in the booktabs style (OTSL's
    Table 1) has vertical lines only between its inner columns, so the finder's cells miss the first and the
    last column; its horizontal rules still run across the whole table."""
    x0, top, x1, bottom = table.bbox
    rules = [
        edge for edge in getattr(page, "horizontal_edges", [])
        if top - EDGE_TOLERANCE <= edge["top"] <= bottom + EDGE_TOLERANCE
        and edge["x0"] <= x0 + EDGE_TOLERANCE and edge["x1"] >= x1 - EDGE_TOLERANCE
    ]  # fmt: skip
    if len(rules) < MIN_DATA_ROWS:
        return x0, x1
    return min(float(e["x0"]) for e in rules), max(float(e["x1"]) for e in rules)


def _outer_columns(page: Any, table: Any, edges: list[float], left: float, right: float) -> list[float]:
    """The finder's column edges, plus a first column from `left` and a last one to `right` when words sit
    there, between the table's top and bottom rules (a column the finder missed)."""
    if not edges:
        return edges
    _, top, _, bottom = table.bbox
    widened = list(edges)
    if edges[0] - left > EDGE_TOLERANCE and page.crop((left, top, edges[0], bottom), strict=False).extract_words():
        widened.insert(0, left)
    if right - edges[-1] > EDGE_TOLERANCE and page.crop((edges[-1], top, right, bottom), strict=False).extract_words():
        widened.append(right)
    return widened


def _outer_labels(
    page: Any, table: Any, columns: Sequence[tuple[float, float]], headers: list[str], first_body: int
) -> list[str]:
    """Labels for the columns the finder had no header cells for: the words above the first body row in the
    column's x-range, line by line."""
    top, body = table.bbox[1], table.rows[first_body].bbox[1]
    labels = list(headers)
    for index, (left, right) in enumerate(columns):
        if labels[index]:
            continue
        words = page.crop((left, top, right, body), strict=False).extract_words(x_tolerance_ratio=WORD_GAP)
        labels[index] = " ".join(w["text"] for line in _lines(words) for w in line).lstrip("*").strip()
    return labels


def _column_edges(table: Any) -> list[float]:
    """The table's column boundaries: every vertical cell edge, near-equal ones merged."""
    xs = sorted({round(x, 1) for row in table.rows for cell in row.cells if cell for x in (cell[0], cell[2])})
    edges: list[float] = []
    for x in xs:
        if not edges or x - edges[-1] > EDGE_TOLERANCE:
            edges.append(x)
    return edges


def _column(columns: Sequence[tuple[float, float]], word: dict[str, Any]) -> int | None:
    middle = (word["x0"] + word["x1"]) / 2
    return next((i for i, (left, right) in enumerate(columns) if left <= middle < right), None)


def _header(page: Any, table: Any, columns: Sequence[tuple[float, float]]) -> tuple[int | None, list[str], list[str]]:
    """The index of the first body row, the caption lines and each column's label. A cell spanning the whole
    table is a caption; the first other row is the header, and a row below it is header too while its first
    column is part of a cell above (OTSL's "simple complex all" under "TEDs") and it holds few digits."""
    captions: list[str] = []
    labels: list[list[str]] = [[] for _ in columns]
    header_rows = 0
    for index, (row, texts) in enumerate(zip(table.rows, table.extract(), strict=False)):
        cells = [(cell, text or "") for cell, text in zip(row.cells, texts, strict=False) if cell is not None]
        filled = [text for _, text in cells if text.strip()]
        if not filled:
            continue
        spans = [_spanned(columns, cell) for cell, _ in cells]
        if len(cells) == 1 and len(spans[0]) == len(columns):
            if header_rows:
                return index, captions, _joined(labels)
            captions.append(" ".join(filled[0].split()))
            continue
        digits = sum(1 for text in filled if _DIGIT.search(text))
        numeric = digits >= DIGIT_SHARE * len(filled)
        below = header_rows > 0 and (row.cells[0] is None or not (texts[0] or "").strip())
        if (numeric and len(filled) > 1) or (header_rows and not below) or header_rows == MAX_HEADER_ROWS:
            return (index if header_rows else None), captions, _joined(labels)
        header_rows += 1
        for (cell, _), span in zip(cells, spans, strict=True):
            _label_cell(page, cell, span, columns, labels)
    return None, captions, _joined(labels)


def _joined(labels: list[list[str]]) -> list[str]:
    return [" ".join(parts).lstrip("*").strip() for parts in labels]


def _spanned(columns: Sequence[tuple[float, float]], cell: tuple[float, float, float, float]) -> list[int]:
    return [i for i, (left, right) in enumerate(columns) if cell[0] - EDGE_TOLERANCE <= left and right <= cell[2] + 1]


def _label_cell(
    page: Any,
    cell: tuple[float, float, float, float],
    span: list[int],
    columns: Sequence[tuple[float, float]],
    labels: list[list[str]],
) -> None:
    """Add one header cell's words to the labels of the columns it covers: in a cell over several columns,
    a line whose words all fall in one column is a title of every column it spans ("Pre-Pawn"); the words
    of a line across columns go to the column under each ("Handgun Long Gun *Other")."""
    lines = _lines(page.crop(cell, strict=False).extract_words(x_tolerance_ratio=WORD_GAP))
    for number, line in enumerate(lines, start=1):
        placed = [(_column(columns, w), w["text"]) for w in line]
        targets = {c for c, _ in placed if c is not None}
        if len(span) > 1 and (number < len(lines) or len(targets) <= 1):
            title = " ".join(text for _, text in placed)
            for c in span:
                labels[c].append(title)
            continue
        for column, text in placed:
            if column is not None:
                labels[column].append(text.lstrip("*"))


def _lines(words: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Words grouped into lines by their top, each line left to right."""
    lines: list[list[dict[str, Any]]] = []
    for word in sorted(words, key=lambda w: (w["top"], w["x0"])):
        if lines and abs(word["top"] - lines[-1][0]["top"]) <= LINE_TOLERANCE:
            lines[-1].append(word)
        else:
            lines.append([word])
    return [sorted(line, key=lambda w: w["x0"]) for line in lines]


def _band_rows(words: Sequence[dict[str, Any]], columns: Sequence[tuple[float, float]]) -> list[list[str]]:
    """The rows of one of the finder's row bands. A band may hold several printed rows (NICS stacks five
    states in one ruled band) or one row whose label sits once beside several lines (OTSL's "6" beside its
    OTSL and HTML lines). One label in the band: every line is a row with that label. Otherwise a line
    with nothing in the first column continues the row above it (a description wrapped onto a second line)."""
    lines = [_cells(line, columns) for line in _lines(words)]
    labelled = [cells for cells in lines if cells[0]]
    if len(labelled) == 1 and len(lines) > 1 and not any(labelled[0][1:]):
        label = labelled[0][0]
        return [[label, *cells[1:]] for cells in lines if any(cells[1:])]
    spanning = _spanning(lines)
    if spanning is not None:  # OTSL's "6 6" (encoder and decoder layers) once beside its OTSL and HTML lines
        keys, width = spanning
        return [[*keys[:width], *cells[width:]] for cells in lines if cells is not keys and any(cells[width:])]
    rows: list[list[str]] = []
    for cells in lines:
        wrapped = bool(rows) and not any(cells[1:]) and _unfinished(rows[-1][0])
        if rows and ((not cells[0] and not _collides(rows[-1], cells)) or wrapped):
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    return rows


def _spanning(lines: Sequence[list[str]]) -> tuple[list[str], int] | None:
    """The band's one line that fills only its first columns, each empty on every other line of the band (the
    row's keys, printed once between the lines they label), and how many columns it fills."""
    if len(lines) < 3:
        return None
    for keys in lines:
        width = next((i for i, cell in enumerate(keys) if not cell), len(keys))
        others = [cells for cells in lines if cells is not keys]
        if (
            0 < width < len(keys) - 1
            and not any(keys[width:])
            and all(not any(cells[:width]) and any(cells[width:]) for cells in others)
        ):
            return keys, width
    return None


def _collides(row: Sequence[str], cells: Sequence[str]) -> bool:
    """A line with a number in a column where the row above has one is a row of its own (a payee with its
    amount under another payee), not the row above wrapped."""
    return any(_DIGIT.search(old) and _DIGIT.search(new) for old, new in zip(row, cells, strict=True))


def _unfinished(label: str) -> bool:
    """A first cell that goes on on the next line ("USER or" over "SESSION_USER", "... per hour =")."""
    last = label.rsplit(maxsplit=1)[-1].lower() if label.strip() else ""
    return last in _GOES_ON or label.endswith(("=", "×", "+", ",", "-"))


def _cells(line: Sequence[dict[str, Any]], columns: Sequence[tuple[float, float]]) -> list[str]:
    cells: list[list[str]] = [[] for _ in columns]
    for word in line:
        c = _column(columns, word)
        text = _NOISE.sub("", word["text"])
        if c is not None and text:
            cells[c].append(text)
    return [" ".join(parts) for parts in cells]
