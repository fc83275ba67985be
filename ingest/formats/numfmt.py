"""Spreadsheet cell values as Excel shows them, from the cell's number format: "1,599.99", "$1,599.99",
"(1,599.99)", "2.50%", "1.98E+08", "2 1/2", "17-May-07", "18:15". A person searches for what they saw in
the sheet, not for 1599.99 as a float. Formats this does not understand fall back to the plain value.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from fractions import Fraction

_BRACKETS = re.compile(r"\[[^\]]*\]")  # colours, conditions and locales: [Red], [$-409], [>100]
_QUOTED = re.compile(r'"([^"]*)"|\\(.)|_.|\*.')  # literals ("x", \x); _x pads and *x fills show nothing
_DATE_TOKENS = re.compile(r"(yyyy|yy|mmmmm|mmmm|mmm|mm|m|dddd|ddd|dd|d|hh|h|ss|s|am/pm|a/p|\.0+)", re.IGNORECASE)
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]  # fmt: skip
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _sections(fmt: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in fmt:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _literals(text: str) -> str:
    return _QUOTED.sub(lambda m: m.group(1) if m.group(1) is not None else (m.group(2) or ""), text)


def format_number(value: float, fmt: str) -> str | None:
    """A number in an Excel number format, or None when the format is not one this understands."""
    sections = _sections(fmt)
    negative = value < 0
    if negative and len(sections) > 1:
        section, sign = sections[1], ""
    elif value == 0 and len(sections) > 2:
        section, sign = sections[2], ""
    else:
        section, sign = sections[0], "-" if negative else ""
    section = _BRACKETS.sub("", section)
    if section.strip().lower() in ("general", ""):
        return None
    if section.strip() == "@":
        return None
    match = re.search(r"[#0?][#0?,.]*(?:[eE][+-][0#]+)?(?:\s*[#0?]*/[#0?0-9]+)?", section)
    if not match:
        return None
    token = match.group(0)
    prefix, suffix = _literals(section[: match.start()]), _literals(section[match.end() :])
    magnitude = abs(value) * (100 if "%" in section else 1)
    try:
        body = _digits(magnitude, token)
    except (InvalidOperation, ValueError, ZeroDivisionError, OverflowError):
        return None
    return f"{sign}{prefix}{body}{suffix}".strip()


def _digits(magnitude: float, token: str) -> str:
    if "/" in token:  # a fraction: "# ?/?" shows 2.5 as "2 1/2"
        whole_part, _, denominator = token.rpartition("/")
        limit = int(denominator) if denominator.isdigit() else 10 ** denominator.count("?") - 1
        whole = int(magnitude) if "#" in whole_part.split()[0] and " " in whole_part else 0
        fraction = Fraction(magnitude - whole).limit_denominator(max(limit, 1))
        if fraction.numerator == 0:
            return str(whole)
        return f"{whole} {fraction.numerator}/{fraction.denominator}" if whole else f"{fraction}"
    if "e" in token.lower():
        mantissa = token.lower().split("e")[0]
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return f"{magnitude:.{decimals}E}"
    decimals = len(token.split(".")[1].replace(",", "")) if "." in token else 0
    rounded = Decimal(repr(magnitude)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    return f"{rounded:,.{decimals}f}" if "," in token.split(".")[0] else f"{rounded:.{decimals}f}"


def format_moment(value: dt.datetime | dt.date | dt.time, fmt: str) -> str | None:
    """A date or time in an Excel date format ("d-mmm-yy", "h:mm AM/PM", ...), or None if it has no date part."""
    section = _literals(_BRACKETS.sub("", _sections(fmt)[0]))
    if not _DATE_TOKENS.search(section):
        return None
    if isinstance(value, dt.time):
        value = dt.datetime.combine(dt.date(1899, 12, 31), value)
    elif not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    twelve = bool(re.search(r"am/pm|a/p", section, re.IGNORECASE))
    tokens = _DATE_TOKENS.split(section)
    out: list[str] = []
    for index, token in enumerate(tokens):
        lower = token.lower()
        if index % 2 == 0:
            out.append(token)
            continue
        before = "".join(tokens[:index]).lower().rstrip(": ")
        after = "".join(tokens[index + 1 :]).lower().lstrip(": ")
        minutes = lower in ("m", "mm") and (before.endswith(("h", "hh")) or after.startswith("s"))
        hour = value.hour % 12 or 12 if twelve else value.hour
        out.append(
            {
                "yyyy": f"{value.year:04d}",
                "yy": f"{value.year % 100:02d}",
                "mmmmm": _MONTHS[value.month - 1][0],
                "mmmm": _MONTHS[value.month - 1],
                "mmm": _MONTHS[value.month - 1][:3],
                "mm": f"{value.minute:02d}" if minutes else f"{value.month:02d}",
                "m": str(value.minute) if minutes else str(value.month),
                "dddd": _DAYS[value.weekday()],
                "ddd": _DAYS[value.weekday()][:3],
                "dd": f"{value.day:02d}",
                "d": str(value.day),
                "hh": f"{hour:02d}",
                "h": str(hour),
                "ss": f"{value.second:02d}",
                "s": str(value.second),
                "am/pm": "AM" if value.hour < 12 else "PM",
                "a/p": "A" if value.hour < 12 else "P",
            }.get(lower, token)
        )
    return "".join(out).strip()
