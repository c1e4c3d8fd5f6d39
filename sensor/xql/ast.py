"""The parsed XQL query: stages and expressions, each with the line and column it came from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pos:
    line: int
    column: int


# -- expressions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Literal:
    value: Any              # str, int, float, bool or None (null)
    pos: Pos


@dataclass(frozen=True)
class Field:
    name: str
    pos: Pos


@dataclass(frozen=True)
class Call:
    name: str               # lower case
    args: tuple
    pos: Pos


@dataclass(frozen=True)
class Compare:
    op: str                 # = != < <= > >=
    left: Any
    right: Any
    pos: Pos


@dataclass(frozen=True)
class Regex:                # left ~= pattern
    left: Any
    pattern: Any
    pos: Pos


@dataclass(frozen=True)
class Contains:
    left: Any
    right: Any
    negated: bool
    pos: Pos


@dataclass(frozen=True)
class In:
    left: Any
    options: tuple
    negated: bool
    pos: Pos


@dataclass(frozen=True)
class InGroup:              # left in $group: the group's entries bound from the configuration (check.py)
    left: Any
    group: str
    entries: tuple | None   # None until bound
    negated: bool
    pos: Pos


@dataclass(frozen=True)
class Bool:
    op: str                 # and, or
    terms: tuple
    pos: Pos


@dataclass(frozen=True)
class Not:
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
    name: str
    pos: Pos


@dataclass(frozen=True)
class Config:
    name: str
    value: bool
    pos: Pos


@dataclass(frozen=True)
class Filter:
    condition: Any
    pos: Pos


@dataclass(frozen=True)
class Alter:
    assignments: tuple      # ((name, expr, Pos), ...)
    pos: Pos


@dataclass(frozen=True)
class Fields:
    items: tuple            # ((name, alias or None, Pos), ...)
    pos: Pos


@dataclass(frozen=True)
class Aggregate:
    function: str           # lower case
    field: str | None
    alias: str
    pos: Pos


@dataclass(frozen=True)
class Comp:
    aggregates: tuple
    by: tuple               # ((name, Pos), ...)
    pos: Pos


@dataclass(frozen=True)
class Sort:
    orders: tuple           # ((name, descending, Pos), ...)
    pos: Pos


@dataclass(frozen=True)
class Limit:
    count: int
    pos: Pos


@dataclass(frozen=True)
class Dedup:
    fields: tuple           # ((name, Pos), ...)
    by: tuple | None        # (name, descending, Pos): which record of the duplicates is kept
    pos: Pos


@dataclass(frozen=True)
class Query:
    stages: tuple
    text: str
