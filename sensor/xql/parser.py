"""XQL text -> ast.Query, with lark (grammar in xql.lark). A syntax error names the line, the
column and the token, and what was expected there (the closest stage keyword when a stage
name is misspelt)."""
from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from sensor.xql import ast, tables

STAGES = ("dataset", "config", "filter", "alter", "fields", "comp", "sort", "limit", "dedup")
# lark's names for the grammar's anonymous keyword terminals, as the user writes them.
_STAGE_TERMINALS = {"_" + name.upper(): name for name in STAGES}


class XqlError(ValueError):
    """A query the sensor cannot run; str() is one line naming where and why."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        self.message, self.line, self.column = message, line, column
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + message)


@lru_cache(maxsize=1)
def _lark() -> Lark:
    """The parser: from the tables built at install time, else built from the grammar now."""
    grammar = (Path(__file__).parent / tables.GRAMMAR_FILE).read_text(encoding="utf-8")
    return tables.load(grammar, __package__) or tables.build(grammar)


def parse(text: str) -> ast.Query:
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text) from None
    try:
        return ast.Query(tuple(_Build().transform(tree).children), text)
    except VisitError as e:
        if isinstance(e.orig_exc, XqlError):
            raise e.orig_exc from None
        raise


def _syntax_error(e: UnexpectedInput, text: str) -> XqlError:
    if isinstance(e, UnexpectedCharacters):
        char = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        if char == '"':
            return XqlError('unterminated string (a "..." string ends on the same line; '
                            'use """...""" for several lines)', e.line, e.column)
        return XqlError(f"unexpected character {char!r}", e.line, e.column)
    if isinstance(e, UnexpectedEOF):
        lines = text.rstrip().splitlines() or [""]
        return XqlError(f"the query ends too early; expected {_expected(e.expected)}",
                        len(lines), len(lines[-1]) + 1)
    assert isinstance(e, UnexpectedToken)
    token = e.token
    if token.type == "$END":
        lines = text.rstrip().splitlines() or [""]
        return XqlError(f"the query ends too early; expected {_expected(e.expected)}",
                        len(lines), len(lines[-1]) + 1)
    expected = set(e.expected)
    if expected and expected <= set(_STAGE_TERMINALS):
        close = difflib.get_close_matches(str(token).lower(), STAGES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return XqlError(f"unknown stage {str(token)!r}{hint} (stages: {', '.join(STAGES)})",
                        token.line, token.column)
    return XqlError(f"unexpected {str(token)!r}; expected {_expected(expected)}", token.line, token.column)


_TERMINAL_TEXT = {"NAME": "a name", "STRING": "a string", "TRIPLE_STRING": "a string",
                  "SIGNED_NUMBER": "a number", "INT": "a whole number", "COMPARE": "a comparison",
                  "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "VBAR": "'|'", "EQUAL": "'='",
                  "DOT": "'.'", "TRUE": "true", "FALSE": "false", "NULL": "null", "ASC": "asc",
                  "DESC": "desc", "GROUP": "an address group ($name)"}


def _expected(terminals) -> str:
    words = sorted({_TERMINAL_TEXT.get(t, t.lstrip("_").lower()) for t in terminals})
    return " or ".join(words) if len(words) <= 6 else ", ".join(words[:6]) + ", ..."


def _pos(item) -> ast.Pos:
    """Where a token or a rule's meta starts."""
    return ast.Pos(item.line, item.column)


def _string(token: Token) -> str:
    text = str(token)
    return text[3:-3] if text.startswith('"""') else text[1:-1]


@v_args(meta=True)
class _Build(Transformer):
    """Parse tree -> ast nodes. Every node keeps the position of its first token."""

    # -- stages
    def dataset(self, meta, c):
        return ast.Dataset(str(c[0]), _pos(meta))

    def config(self, meta, c):
        return ast.Config(str(c[0]).lower(), str(c[1]).lower() == "true", _pos(meta))

    def filter(self, meta, c):
        return ast.Filter(c[0], _pos(meta))

    def alter(self, meta, c):
        return ast.Alter(tuple(c), _pos(meta))

    def assignment(self, meta, c):
        return (str(c[0]), c[1], _pos(c[0]))

    def fields(self, meta, c):
        return ast.Fields(tuple(c), _pos(meta))

    def field_item(self, meta, c):
        return (str(c[0]), str(c[1]) if len(c) > 1 and c[1] is not None else None, _pos(c[0]))

    def comp(self, meta, c):
        aggregates = tuple(x for x in c if isinstance(x, ast.Aggregate))
        by = tuple((str(t), _pos(t)) for t in c if isinstance(t, Token))
        return ast.Comp(aggregates, by, _pos(meta))

    def aggregate(self, meta, c):
        function, field, alias = c[0], c[1], c[2] if len(c) > 2 else None
        name = str(function).lower()
        default_alias = f"{name}_{field}" if field is not None else name
        return ast.Aggregate(name, None if field is None else str(field),
                             str(alias) if alias is not None else default_alias, _pos(function))

    def sort(self, meta, c):
        return ast.Sort(tuple(c), _pos(meta))

    def order(self, meta, c):
        direction, name = c
        return (str(name), direction is not None and direction.type == "DESC", _pos(name))

    def limit(self, meta, c):
        return ast.Limit(int(c[0]), _pos(meta))

    def dedup(self, meta, c):
        tokens = list(c)
        by = None
        if len(tokens) >= 2 and tokens[-2] is not None and getattr(tokens[-2], "type", "") in ("ASC", "DESC"):
            by = (str(tokens[-1]), tokens[-2].type == "DESC", _pos(tokens[-1]))
            tokens = tokens[:-2]
        return ast.Dedup(tuple((str(t), _pos(t)) for t in tokens if t is not None), by, _pos(meta))

    # -- expressions
    def or_(self, meta, c):
        return c[0] if len(c) == 1 else ast.Bool("or", tuple(c), _pos(meta))

    def and_(self, meta, c):
        return c[0] if len(c) == 1 else ast.Bool("and", tuple(c), _pos(meta))

    def not_(self, meta, c):
        return ast.Not(c[0], _pos(meta))

    def compare(self, meta, c):
        return ast.Compare(str(c[1]), c[0], c[2], _pos(c[1]))

    def regex(self, meta, c):
        return ast.Regex(c[0], c[1], _pos(meta))

    def contains(self, meta, c):
        return ast.Contains(c[0], c[1], False, _pos(meta))

    def not_contains(self, meta, c):
        return ast.Contains(c[0], c[1], True, _pos(meta))

    def in_(self, meta, c):
        return ast.In(c[0], tuple(c[1:]), False, _pos(meta))

    def not_in(self, meta, c):
        return ast.In(c[0], tuple(c[1:]), True, _pos(meta))

    def in_group(self, meta, c):
        return ast.InGroup(c[0], str(c[1])[1:], None, False, _pos(c[1]))

    def not_in_group(self, meta, c):
        return ast.InGroup(c[0], str(c[1])[1:], None, True, _pos(c[1]))

    def call(self, meta, c):
        args = tuple(a for a in c[1:] if a is not None) if not (len(c) == 2 and c[1] is None) else ()
        return ast.Call(str(c[0]).lower(), args, _pos(c[0]))

    def enum(self, meta, c):
        return ast.Call("enum", (ast.Literal(str(c[0]), _pos(c[0])),), _pos(meta))

    def field(self, meta, c):
        return ast.Field(str(c[0]), _pos(c[0]))

    def string(self, meta, c):
        return ast.Literal(_string(c[0]), _pos(c[0]))

    def number(self, meta, c):
        text = str(c[0])
        return ast.Literal(float(text) if "." in text else int(text), _pos(c[0]))

    def boolean(self, meta, c):
        return ast.Literal(str(c[0]).lower() == "true", _pos(c[0]))

    def null(self, meta, c):
        return ast.Literal(None, _pos(c[0]))
