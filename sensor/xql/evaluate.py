"""XQL expressions on one record in Python: what the streaming detector runs on each event.

Operators follow SQL's three-valued logic, as BigQuery (under XQL) does: a comparison with
null is unknown, so a filter drops the record, except ``= null`` / ``!= null``, XQL's way to
test for a missing value. The SQL compiler (sql.py) produces the same answers; both use the
helpers below for what SQLite cannot say itself.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Any, Callable, Mapping

from sensor.xql import ast
from sensor.xql.check import EVENT_TYPES
from sensor.xql.functions import FUNCTIONS, _regex, apply, to_string
from sensor.xql.groups import in_group

# SQLite's NOCASE and lower() fold ASCII letters only; so does the Python side, to agree.
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(text: str) -> str:
    return text.translate(_ASCII_FOLD)


def _sortable(value) -> tuple:
    """SQLite's order between types: numbers before text (an array is its JSON text there)."""
    if isinstance(value, list):
        return (1, to_string(value))
    if isinstance(value, str):
        return (1, value)
    return (0, value)


def compare(op: str, left, right, case_sensitive: bool):
    if left is None or right is None:
        return None
    if type(left) is type(right) and type(left) is not list:
        if not case_sensitive and type(left) is str:
            left, right = fold(left), fold(right)
        a, b = left, right
    else:
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
    """~=: the pattern found anywhere in the text (case-sensitive unless it says (?i)); null
    for a pattern that is not a regex (only possible when it comes from a field)."""
    if text is None or pattern is None:
        return None
    try:
        return _regex(to_string(pattern)).search(to_string(text)) is not None
    except re.error:
        return None


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


def truth(value) -> bool | None:
    if value is None:
        return None
    return bool(value)


def evaluate(node, row: Mapping[str, Any], case_sensitive: bool = False):
    return compile_expression(node, case_sensitive)(row)


Compiled = Callable[[Mapping[str, Any]], Any]


def compile_expression(node, case_sensitive: bool = False) -> Compiled:
    """The expression as a Python function of a record: the tree is walked once, here, not
    for every event."""
    cs = case_sensitive
    if isinstance(node, ast.Literal):
        value = node.value
        return lambda row: value
    if isinstance(node, ast.Field):
        name = node.name
        return lambda row: row.get(name)
    if isinstance(node, ast.Call):
        if node.name == "enum":
            constant = EVENT_TYPES[node.args[0].value.upper()]
            return lambda row: constant
        function = FUNCTIONS[node.name]
        args = [compile_expression(a, cs) for a in node.args]
        return lambda row: apply(function, [a(row) for a in args])
    if isinstance(node, ast.Compare):
        null_test = _null_test(node)
        if null_test is not None:
            side, equal = compile_expression(null_test[0], cs), null_test[1]
            return lambda row: (side(row) is None) == equal
        op, left, right = node.op, compile_expression(node.left, cs), compile_expression(node.right, cs)
        return lambda row: compare(op, left(row), right(row), cs)
    if isinstance(node, ast.Bool):
        terms = [compile_expression(t, cs) for t in node.terms]
        return _all_of(terms) if node.op == "and" else _any_of(terms)
    if isinstance(node, ast.Not):
        term = compile_expression(node.term, cs)

        def negate(row):
            value = truth(term(row))
            return None if value is None else not value
        return negate
    if isinstance(node, ast.In):
        return _in(node, cs)
    if isinstance(node, ast.InGroup):
        left, entries, negated = compile_expression(node.left, cs), node.entries, node.negated

        def member_of_group(row):
            found = in_group(left(row), entries)
            return (None if found is None else not found) if negated else found
        return member_of_group
    if isinstance(node, ast.Contains):
        left, right, negated = compile_expression(node.left, cs), compile_expression(node.right, cs), node.negated

        def contained(row):
            found = contains(left(row), right(row), cs)
            return (None if found is None else not found) if negated else found
        return contained
    if isinstance(node, ast.Regex):
        left, pattern = compile_expression(node.left, cs), compile_expression(node.pattern, cs)
        return lambda row: regex_match(left(row), pattern(row))
    raise TypeError(f"not an expression: {node!r}")


def _all_of(terms: list[Compiled]) -> Compiled:
    """and, stopping at the first false term (terms have no side effects)."""
    def conjunction(row):
        unknown = False
        for term in terms:
            value = truth(term(row))
            if value is False:
                return False
            unknown = unknown or value is None
        return None if unknown else True
    return conjunction


def _any_of(terms: list[Compiled]) -> Compiled:
    def disjunction(row):
        unknown = False
        for term in terms:
            value = truth(term(row))
            if value is True:
                return True
            unknown = unknown or value is None
        return None if unknown else False
    return disjunction


def _in(node: ast.In, cs: bool) -> Compiled:
    """x in (a, b) is x = a or x = b; a null option matches a null x, a * string is a wildcard."""
    left = compile_expression(node.left, cs)
    tests: list[Callable[[Any, Mapping], Any]] = []
    for option in node.options:
        if is_wildcard(option):
            tests.append(lambda x, row, pattern=option.value: wildcard_match(x, pattern, cs))
        elif isinstance(option, ast.Literal) and option.value is None:
            tests.append(lambda x, row: x is None)
        else:
            tests.append(lambda x, row, value=compile_expression(option, cs): compare("=", x, value(row), cs))
    negated = node.negated

    def member(row):
        x = left(row)
        unknown = False
        for test in tests:
            hit = test(x, row)
            if hit is True:
                return not negated
            unknown = unknown or hit is None
        return None if unknown else negated
    return member


def _null_test(node: ast.Compare):
    """``x = null`` / ``x != null`` (either side): (the other side, True for =)."""
    if node.op not in ("=", "!="):
        return None
    for side, other in ((node.right, node.left), (node.left, node.right)):
        if isinstance(side, ast.Literal) and side.value is None:
            return other, node.op == "="
    return None
