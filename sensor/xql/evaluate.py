"""XQL expressions on one record in Python: what the streaming detector runs on each event.

Operators follow SQL's three-valued logic, as BigQuery (under XQL) does: a comparison with
null is unknown, so a filter drops the record, except ``= null`` / ``!= null``, XQL's way to
test for a missing value. The SQL compiler (sql.py) produces the same answers; both use the
helpers below for what SQLite cannot say itself.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Any, Mapping

from sensor.xql import ast
from sensor.xql.check import EVENT_TYPES
from sensor.xql.functions import FUNCTIONS, _regex, to_string

# SQLite's NOCASE and lower() fold ASCII letters only; so does the Python side, to agree.
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(text: str) -> str:
    return text.translate(_ASCII_FOLD)


def _sortable(value) -> tuple:
    """SQLite's order between types: numbers before text."""
    if isinstance(value, str):
        return (1, value)
    return (0, value)


def compare(op: str, left, right, case_sensitive: bool):
    if left is None or right is None:
        return None
    if not case_sensitive and isinstance(left, str) and isinstance(right, str):
        left, right = fold(left), fold(right)
    a, b = _sortable(left), _sortable(right)
    if op == "=":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def contains(text, part, case_sensitive: bool):
    if text is None or part is None:
        return None
    text, part = to_string(text), to_string(part)
    return part in text if case_sensitive else fold(part) in fold(text)


def regex_match(text, pattern):
    """~=: the pattern found anywhere in the text (case-sensitive unless it says (?i))."""
    if text is None or pattern is None:
        return None
    return _regex(pattern).search(to_string(text)) is not None


def wildcard_match(text, pattern, case_sensitive: bool):
    """An ``in`` list string with * matches any run of characters there."""
    if text is None:
        return None
    text = to_string(text)
    if not case_sensitive:
        text, pattern = fold(text), fold(pattern)
    return re.fullmatch(fnmatch.translate(pattern.replace("[", "[[]").replace("?", "[?]")), text,
                        re.DOTALL) is not None


def is_wildcard(node) -> bool:
    return isinstance(node, ast.Literal) and isinstance(node.value, str) and "*" in node.value


def all_of(values):
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def any_of(values):
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def truth(value) -> bool | None:
    if value is None:
        return None
    return bool(value)


def evaluate(node, row: Mapping[str, Any], case_sensitive: bool = False):
    if isinstance(node, ast.Literal):
        return node.value
    if isinstance(node, ast.Field):
        return row.get(node.name)
    if isinstance(node, ast.Call):
        if node.name == "enum":
            return EVENT_TYPES[node.args[0].value.upper()]
        return FUNCTIONS[node.name].implementation(*(evaluate(a, row, case_sensitive) for a in node.args))
    if isinstance(node, ast.Compare):
        null_test = _null_test(node)
        if null_test is not None:
            side, equal = null_test
            return (evaluate(side, row, case_sensitive) is None) == equal
        return compare(node.op, evaluate(node.left, row, case_sensitive), evaluate(node.right, row, case_sensitive),
                       case_sensitive)
    if isinstance(node, ast.Bool):
        values = [truth(evaluate(t, row, case_sensitive)) for t in node.terms]
        return all_of(values) if node.op == "and" else any_of(values)
    if isinstance(node, ast.Not):
        value = truth(evaluate(node.term, row, case_sensitive))
        return None if value is None else not value
    if isinstance(node, ast.In):
        left = evaluate(node.left, row, case_sensitive)
        hits = []
        for option in node.options:
            if is_wildcard(option):
                hits.append(wildcard_match(left, option.value, case_sensitive))
            elif isinstance(option, ast.Literal) and option.value is None:
                hits.append(left is None)
            else:
                hits.append(compare("=", left, evaluate(option, row, case_sensitive), case_sensitive))
        found = any_of(hits)
        return (None if found is None else not found) if node.negated else found
    if isinstance(node, ast.Contains):
        found = contains(evaluate(node.left, row, case_sensitive), evaluate(node.right, row, case_sensitive),
                         case_sensitive)
        return (None if found is None else not found) if node.negated else found
    if isinstance(node, ast.Regex):
        return regex_match(evaluate(node.left, row, case_sensitive), evaluate(node.pattern, row, case_sensitive))
    raise TypeError(f"not an expression: {node!r}")


def _null_test(node: ast.Compare):
    """``x = null`` / ``x != null`` (either side): (the other side, True for =)."""
    if node.op not in ("=", "!="):
        return None
    for side, other in ((node.right, node.left), (node.left, node.right)):
        if isinstance(side, ast.Literal) and side.value is None:
            return other, node.op == "="
    return None
