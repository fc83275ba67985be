"""The citation marker: `[1]`, `[1, 2]` (`[2][3]` is two of them), in one place for every module that reads it.

No leading-whitespace group: a pattern starting `[ \\t]*\\[` rescans a run of spaces from every position,
which is quadratic on long runs; callers strip whitespace themselves where they remove a marker.
"""

from __future__ import annotations

import re

MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


def marker_numbers(match: re.Match[str]) -> list[int]:
    return [int(part) for part in match.group(1).split(",")]
