"""XQL text -> ast.Query, with lark (grammar in xql.lark). A syntax error names the line, the
column and the token, and what was expected there (the closest stage keyword when a stage
name is misspelt). The shipped rule files' queries are prebuilt at install time
(sensor/xql/prebuilt.py): for those texts lark is not even imported."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sensor.xql import ast, prebuilt

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
def _lark():
    """lark's parser (prebuilt tables, else built from the grammar now)."""
    return prebuilt.lark_parser((Path(__file__).parent / prebuilt.GRAMMAR_FILE).read_text(encoding="utf-8"))


def parse(text: str) -> ast.Query:
    query = prebuilt.shipped_query(text)
    return query if query is not None else parse_with_lark(text)


def parse_with_lark(text: str) -> ast.Query:
    from lark.exceptions import UnexpectedInput, VisitError

    from sensor.xql.transform import ToAst

    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text) from None
    try:
        return ast.Query(tuple(ToAst().transform(tree).children), text)
    except VisitError as e:
        if isinstance(e.orig_exc, XqlError):
            raise e.orig_exc from None
        raise


def _syntax_error(e, text: str) -> XqlError:
    """lark's UnexpectedInput as one line: where, and what was expected there."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

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
        hint = did_you_mean(str(token).lower(), STAGES)
        return XqlError(f"unknown stage {str(token)!r}{hint} (stages: {', '.join(STAGES)})",
                        token.line, token.column)
    return XqlError(f"unexpected {str(token)!r}; expected {_expected(expected)}", token.line, token.column)


def did_you_mean(word: str, known) -> str:
    """"; did you mean 'x'?" naming the closest of ``known`` to a misspelt name, or ""."""
    import difflib       # error messages only

    close = difflib.get_close_matches(word, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


_TERMINAL_TEXT = {"NAME": "a name", "STRING": "a string", "TRIPLE_STRING": "a string",
                  "SIGNED_NUMBER": "a number", "INT": "a whole number", "COMPARE": "a comparison",
                  "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "VBAR": "'|'", "EQUAL": "'='",
                  "DOT": "'.'", "TRUE": "true", "FALSE": "false", "NULL": "null", "ASC": "asc",
                  "DESC": "desc", "GROUP": "an address group ($name)"}


def _expected(terminals) -> str:
    words = sorted({_TERMINAL_TEXT.get(t, t.lstrip("_").lower()) for t in terminals})
    return " or ".join(words) if len(words) <= 6 else ", ".join(words[:6]) + ", ..."
