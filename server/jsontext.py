"""JSON text for the server's hot paths (the state database's JSON columns, the log lines): orjson, which
is ragkb's own dependency (Chroma needs it too) and about ten times faster than `json.dumps` on these rows.

The text differs from `json.dumps`'s only in spacing and in writing non-ASCII characters as UTF-8 instead of
`\\uXXXX` escapes; it reads back the same. A value orjson refuses (an integer past 64 bits) is written by
`json.dumps`; `NaN` and the infinities become `null` (no JSON reader accepts them, PostgreSQL included).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> str:
    """`value` as JSON text."""
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False)
