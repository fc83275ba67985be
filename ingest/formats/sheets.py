"""Spreadsheets: XLSX through openpyxl (read-only, cached values; openpyxl parses with defusedxml when it is
installed, as ragkb installs it) and CSV/TSV through the standard library. One sheet is one section headed by
its name; each row is "Header: value; ..." with the first non-empty row as the headers. Rows, columns and
cells are bounded (`base.MAX_TABLE_*`); what is cut is said in a warning.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import CorruptDocument
from ..models import ExtractedDocument
from .base import (
    MAX_TABLE_COLUMNS,
    MAX_TABLE_ROWS,
    SNIFF_BYTES,
    SafeZip,
    TextBuilder,
    check_bytes,
    clip,
    decode_text,
    format_row,
    unreadable_as,
)
from .numfmt import format_moment, format_number


def shown(cell: object) -> str:
    """A cell as Excel shows it (its number format applied), else its plain value."""
    value = getattr(cell, "value", cell)
    fmt = getattr(cell, "number_format", None)
    if fmt and fmt != "General" and value is not None and not isinstance(value, str | bool):
        if isinstance(value, dt.date | dt.time):
            text = format_moment(value, fmt)
        elif isinstance(value, int | float):
            text = format_number(float(value), fmt)
        else:
            text = None
        if text:
            return clip(text)
    return cell_text(value)


def cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and not (value.hour or value.minute or value.second):
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return clip(str(value))


def _rows_into(out: TextBuilder, rows: Iterable[Sequence[object]], where: str) -> None:
    headers: list[str] | None = None
    for count, row in enumerate(rows):
        if count >= MAX_TABLE_ROWS:
            out.warnings.append(f"{where}: only the first {MAX_TABLE_ROWS} rows are read")
            break
        values = [shown(value) for value in list(row)[:MAX_TABLE_COLUMNS]]
        if not any(value.strip() for value in values):
            continue
        if headers is None:
            filled = [value for value in values if value.strip()]
            if len(filled) == 1 and len(values) > 1:
                out.add(filled[0])  # one cell above the table is its caption, not its headers
            else:
                headers = values
            continue
        line = format_row(headers, values)
        if line:
            out.add(line)
    if headers is not None and not out.parts:
        out.add("; ".join(value for value in headers if value.strip()))  # a sheet of one row


def load_xlsx(data: bytes, name: str) -> ExtractedDocument:
    SafeZip(data, name, kind="XLSX")
    from openpyxl import load_workbook

    out = TextBuilder()
    with unreadable_as(CorruptDocument, f"{name}: not a readable Excel workbook"):
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            title = str(book.properties.title or "").strip()
            for sheet in book.worksheets:
                out.section(heading=str(sheet.title))
                before = len(out.parts)
                _rows_into(out, sheet.iter_rows(), f"sheet {sheet.title}")
                if len(out.parts) == before:
                    continue
        finally:
            book.close()
    return out.build(name, title=title or Path(name).stem, kind="xlsx")


def load_csv(data: bytes, name: str) -> ExtractedDocument:
    check_bytes(data, name, kind="CSV")
    text = decode_text(data)
    tab = name.lower().endswith(".tsv")
    try:
        dialect: type[csv.Dialect] | csv.Dialect = (
            csv.excel_tab if tab else csv.Sniffer().sniff(text[:SNIFF_BYTES], delimiters=",;\t|")
        )
    except csv.Error:
        dialect = csv.excel
    out = TextBuilder()
    out.section(heading=None)
    csv.field_size_limit(1024 * 1024)
    with unreadable_as(CorruptDocument, f"{name}: not a readable CSV file"):
        _rows_into(out, csv.reader(io.StringIO(text), dialect), "rows")
    return out.build(name, title=Path(name).stem, kind="csv")
