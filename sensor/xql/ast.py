"""The parsed XQL query: stages and expressions, each with the line and column it came from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pos:
    """Where a node starts in the query text (1-based)."""
    line: int
    column: int


# -- expressions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Literal:
    """A string, number, boolean or null written in the query."""
    value: Any              # str, int, float, bool or None (null)
    pos: Pos


@dataclass(frozen=True)
class Field:
    """A field of the record, by name."""
    name: str
    pos: Pos


@dataclass(frozen=True)
class Call:
    """A function call: name(args)."""
    name: str               # lower case
    args: tuple
    pos: Pos


@dataclass(frozen=True)
class Compare:
    """left op right."""
    op: str                 # = != < <= > >=
    left: Any
    right: Any
    pos: Pos


@dataclass(frozen=True)
class Regex:
    """left ~= pattern."""
    left: Any
    pattern: Any
    pos: Pos


@dataclass(frozen=True)
class Contains:
    """left [not] contains right."""
    left: Any
    right: Any
    negated: bool
    pos: Pos


@dataclass(frozen=True)
class In:
    """left [not] in (options)."""
    left: Any
    options: tuple
    negated: bool
    pos: Pos


@dataclass(frozen=True)
class InGroup:
    """left [not] in $group: the group's entries bound from the configuration (check.py)."""
    left: Any
    group: str
    entries: tuple | None   # None until bound
    negated: bool
    pos: Pos


@dataclass(frozen=True)
class Bool:
    """Terms joined by and / or."""
    op: str                 # and, or
    terms: tuple
    pos: Pos


@dataclass(frozen=True)
class Not:
    """not term."""
    term: Any
    pos: Pos


def reads(node) -> set[str]:
    """The names of the fields an expression reads."""
    if isinstance(node, Field):
        return {node.name}
    found: set[str] = set()
    for value in vars(node).values():
        for item in (value if isinstance(value, tuple) else (value,)):
            if isinstance(item, (Field, Call, Compare, Regex, Contains, In, InGroup, Bool, Not)):
                found |= reads(item)
    return found


# -- stages ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """dataset = name."""
    name: str
    pos: Pos


@dataclass(frozen=True)
class Config:
    """config name = value."""
    name: str
    value: bool
    pos: Pos


@dataclass(frozen=True)
class Filter:
    """filter condition."""
    condition: Any
    pos: Pos


@dataclass(frozen=True)
class Alter:
    """alter name = expression, ..."""
    assignments: tuple      # ((name, expr, Pos), ...)
    pos: Pos


@dataclass(frozen=True)
class Fields:
    """fields name [as alias], ..."""
    items: tuple            # ((name, alias or None, Pos), ...)
    pos: Pos


@dataclass(frozen=True)
class Aggregate:
    """One comp function: function(field) as alias."""
    function: str           # lower case
    field: str | None
    alias: str
    pos: Pos


@dataclass(frozen=True)
class Comp:
    """comp aggregates by fields."""
    aggregates: tuple
    by: tuple               # ((name, Pos), ...)
    pos: Pos


@dataclass(frozen=True)
class Sort:
    """sort [asc|desc] field, ..."""
    orders: tuple           # ((name, descending, Pos), ...)
    pos: Pos


@dataclass(frozen=True)
class Limit:
    """limit count."""
    count: int
    pos: Pos


@dataclass(frozen=True)
class Dedup:
    """dedup fields [by [asc|desc] field]."""
    fields: tuple           # ((name, Pos), ...)
    by: tuple | None        # (name, descending, Pos): which record of the duplicates is kept
    pos: Pos


@dataclass(frozen=True)
class Query:
    """The stages of a query, and its text."""
    stages: tuple
    text: str
