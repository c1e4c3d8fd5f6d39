"""XQL functions with XQL's semantics, in Python: the streaming detector calls them on each
event, the SQL compiler registers the same code in SQLite, so both give the same answers.

Values: str, int, float, bool, None (null), list (an XQL array) and timestamps as epoch
milliseconds (the compiler knows which fields are timestamps). Nearly every function is null
when an argument is null (BigQuery, on which XQL runs, does the same); coalesce and if are not.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Callable

MS_PER = {"MILLISECOND": 1, "SECOND": 1000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}


def _moment(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)


def utc_date(ts_ms: int) -> str:
    """The UTC calendar date (YYYY-MM-DD) of an epoch-milliseconds time."""
    return _moment(ts_ms).date().isoformat()


def extract_day(ts_ms: int) -> int:
    """extract_time(_time, "DAY"): the day of the month, 1..31, in GMT."""
    return _moment(ts_ms).day


@lru_cache(maxsize=256)
def _json_path(path: str) -> tuple | None:
    """'$.a.b[0]' -> ('a', 'b', 0); None when it is not a path this engine reads."""
    if not path.startswith("$"):
        return None
    steps: list = []
    for name, index in re.findall(r"\.([^.\[\]]+)|\[(-?\d+)\]", path[1:]):
        steps.append(int(index) if index else name)
    rebuilt = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps)
    return tuple(steps) if rebuilt == path[1:] else None


def _walk(text, path: str):
    """The JSON value at path, or a sentinel-free (found, value) pair."""
    steps = _json_path(path) if isinstance(path, str) else None
    if text is None or steps is None:
        return False, None
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return False, None
    for step in steps:
        if isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict) and step in value:
            value = value[step]
        else:
            return False, None
    return True, value


def json_extract_scalar(text, path):
    """The member at path as text when it is a scalar; null when it is missing, an object,
    an array or JSON null, or when text is not JSON."""
    found, value = _walk(text, path)
    if not found or value is None or isinstance(value, (dict, list)):
        return None
    return value if isinstance(value, str) else json.dumps(value)


def json_extract(text, path):
    """The value at path as JSON text (a string keeps its quotes)."""
    found, value = _walk(text, path)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False) if found else None


_TIME_PARTS: dict[str, Callable[[datetime], int]] = {
    "MILLISECOND": lambda d: d.microsecond // 1000,
    "SECOND": lambda d: d.second,
    "MINUTE": lambda d: d.minute,
    "HOUR": lambda d: d.hour,
    "DAY": lambda d: d.day,
    "DAYOFWEEK": lambda d: d.isoweekday() % 7 + 1,     # 1 = Sunday .. 7 = Saturday (BigQuery)
    "DAYOFYEAR": lambda d: d.timetuple().tm_yday,
    "MONTH": lambda d: d.month,
    "QUARTER": lambda d: (d.month - 1) // 3 + 1,
    "YEAR": lambda d: d.year,
}
TIME_PARTS = tuple(_TIME_PARTS)


def extract_time(ts_ms, part):
    """The part of a timestamp, in GMT."""
    if ts_ms is None or part is None:
        return None
    return _TIME_PARTS[str(part).upper()](_moment(ts_ms))


def format_timestamp(fmt, ts_ms):
    """strftime-style format elements (%Y-%m-%d %H:%M:%S ...), in GMT."""
    if fmt is None or ts_ms is None:
        return None
    return _moment(ts_ms).strftime(fmt)


def timestamp_diff(ts1, ts2, part):
    """ts1 - ts2 in whole units of part (DAY, HOUR, MINUTE, SECOND, MILLISECOND), towards zero."""
    if ts1 is None or ts2 is None or part is None:
        return None
    difference = ts1 - ts2
    unit = MS_PER[str(part).upper()]
    return difference // unit if difference >= 0 else -((-difference) // unit)


def to_string(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def to_integer(value):
    """Null when the text is not a whole number."""
    if value is None or isinstance(value, list):
        return None
    try:
        return int(value) if not isinstance(value, str) else int(value.strip())
    except ValueError:
        return None


def _text(function: Callable) -> Callable:
    """A string function: null in, null out; other scalars are taken as their text."""
    def wrapped(value, *rest):
        if value is None or any(r is None for r in rest):
            return None
        return function(to_string(value), *rest)
    wrapped.__name__ = function.__name__
    return wrapped


lowercase = _text(str.lower)
uppercase = _text(str.upper)
replace = _text(lambda s, old, new: s.replace(to_string(old), to_string(new)))


@_text
def trim(s, chars=" "):
    return s.strip(to_string(chars))


@_text
def split(s, delimiter=","):
    return s.split(to_string(delimiter))


@_text
def regextract(s, pattern):
    """Every match of pattern (RE2 syntax, which Python's re reads alike for the common
    subset); with a capture group, the group's text."""
    return [m if isinstance(m, str) else m[0] for m in _regex(pattern).findall(s)]


def concat(*values):
    if any(v is None for v in values):
        return None
    return "".join(to_string(v) for v in values)


def coalesce(*values):
    return next((v for v in values if v is not None), None)


def if_(condition, then, otherwise=None):
    return then if condition else otherwise


def arrayindex(array, index):
    """The element at index (negative: from the end); null when out of range."""
    if isinstance(array, str):
        try:
            array = json.loads(array)
        except ValueError:
            return None
    if not isinstance(array, list) or index is None:
        return None
    index = int(index)
    return array[index] if -len(array) <= index < len(array) else None


@lru_cache(maxsize=256)
def _regex(pattern: str, flags: int = 0) -> re.Pattern:
    return re.compile(pattern, flags)


@dataclass(frozen=True)
class Function:
    """An XQL function: its Python implementation and arity."""
    implementation: Callable[..., Any]
    min_args: int
    max_args: int
    returns: str | None = None     # "time", "array" or None (a scalar)

    def arity(self) -> str:
        if self.min_args == self.max_args:
            return f"{self.min_args} argument{'s' if self.min_args != 1 else ''}"
        upper = "or more" if self.max_args > 99 else f"to {self.max_args}"
        return f"{self.min_args} {upper} arguments"


# What a function raises on values it cannot take (a part name read from a field, a regex
# built at run time, an index that is not a number): the value is null, in SQL and streaming alike.
_VALUE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, re.error)


def apply(function: Function, args) -> Any:
    try:
        return function.implementation(*args)
    except _VALUE_ERRORS:
        return None


MANY = 1000
FUNCTIONS: dict[str, Function] = {
    "json_extract_scalar": Function(json_extract_scalar, 2, 2),
    "json_extract": Function(json_extract, 2, 2),
    "extract_time": Function(extract_time, 2, 2),
    "format_timestamp": Function(format_timestamp, 2, 2),
    "timestamp_diff": Function(timestamp_diff, 3, 3),
    "to_string": Function(to_string, 1, 1),
    "to_integer": Function(to_integer, 1, 1),
    "lowercase": Function(lowercase, 1, 1),
    "uppercase": Function(uppercase, 1, 1),
    "trim": Function(trim, 1, 2),
    "replace": Function(replace, 3, 3),
    "split": Function(split, 1, 2, "array"),
    "regextract": Function(regextract, 2, 2, "array"),
    "arrayindex": Function(arrayindex, 2, 2),
    "concat": Function(concat, 1, MANY),
    "coalesce": Function(coalesce, 1, MANY),
    "if": Function(if_, 2, 3),
}
