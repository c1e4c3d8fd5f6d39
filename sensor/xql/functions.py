"""XQL functions the DFSCoerce query uses, with XQL's semantics, for the detector and the store."""
from __future__ import annotations

import json
from datetime import datetime, timezone


def json_extract_scalar(text: str, name: str) -> str | None:
    """json_extract_scalar(text, "$.<name>"): the member as text when it is a scalar; null
    when it is missing, an object or an array, or when text is not a JSON object."""
    try:
        fields = json.loads(text)
    except (TypeError, ValueError):
        return None
    value = fields.get(name) if isinstance(fields, dict) else None
    if value is None or isinstance(value, (dict, list)):
        return None
    return value if isinstance(value, str) else json.dumps(value)


def utc_date(ts_ms: int) -> str:
    """The UTC calendar date (YYYY-MM-DD) of an epoch-milliseconds time."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).date().isoformat()


def extract_day(ts_ms: int) -> int:
    """extract_time(_time, "DAY"): the day of the month, 1..31, in GMT."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).day
