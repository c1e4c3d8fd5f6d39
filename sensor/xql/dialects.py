"""What the XQL compiler (sql.py) writes differently for SQLite and for PostgreSQL.

The compiler walks the query once and asks its dialect for each piece: a literal, a field of
the record, a comparison, a function call, an aggregate, a sort key. Both dialects keep XQL's
semantics as the streaming evaluator (evaluate.py) has them:

- case-insensitive comparison folds ASCII letters only (SQLite's NOCASE; on PostgreSQL
  ``translate`` of A-Z, not ``lower()``, whose folding depends on the database's locale);
- text sorts and compares by code point (SQLite's BINARY; PostgreSQL ``COLLATE "C"``);
- nulls sort first ascending, last descending (SQLite's rule; PostgreSQL says so explicitly);
- booleans are 1/0 where they are values (SQLite has no boolean type);
- XQL arrays are their compact JSON text.

SQLite runs the XQL functions as the Python code the detector runs (registered per
connection). PostgreSQL has no such hook for a read-only analyst role, so each function is
written in PostgreSQL's own SQL; the types the compiler tracks (``int``, ``real``, ``text``,
``bool``, ``null``) pick the casts PostgreSQL's strict typing needs. Known differences are
listed in the README ("Many sensors": reads); the test runs the shipped rules, the README's
hunts and the semantics tests on both stores and compares the rows.
"""
from __future__ import annotations

import ipaddress
import json

from sensor.hosts import HostQuery
from sensor.xql.functions import FUNCTIONS, MS_PER, _json_path
from sensor.xql.groups import ADDRESS_PATTERN

NUMBERS = ("int", "real")
_MAPPED = "::ffff:0:0/96"       # IPv4-mapped IPv6 (RFC 4291 2.5.5.2)


class SqliteDialect:
    def param(self, index: int, value, kind: str) -> str:
        return f":p{index}"

    def json_field(self, name: str, kind: str) -> str:
        return f"json_extract(record, '$.{name}')"

    def value(self, sql: str, kind: str) -> str:
        return sql

    def condition(self, sql: str, kind: str) -> str:
        return sql

    def compare(self, op: str, left: tuple[str, str], right: tuple[str, str], fold: bool) -> str:
        """NOCASE for a comparison that may see text when case does not count; none against a
        number, so an index on a number column (opnum) stays usable."""
        collation = " COLLATE NOCASE" if fold and right[1] not in NUMBERS else ""
        return f"({left[0]} {op} {right[0]}{collation})"

    def call(self, name: str, args: list[tuple[str, str]], literals: list, mark) -> tuple[str, str]:
        """``literals``: each argument's value where it is written in the query (else None);
        ``mark(value, kind)`` makes a parameter of a value the dialect derives from one."""
        return f"xql_{name}({', '.join(sql for sql, _ in args)})", _returns(name, args)

    def contains(self, text: tuple[str, str], part: tuple[str, str], case_sensitive: bool) -> str:
        return f"xql_contains({text[0]}, {part[0]}, {int(case_sensitive)})"

    def regex(self, text: tuple[str, str], pattern: tuple[str, str]) -> str:
        return f"xql_regex({text[0]}, {pattern[0]})"

    def in_group(self, value: tuple[str, str], group: str, entries: tuple, mark) -> str:
        """``value in $group``: the group's entries are a parameter (JSON), matched by groups.py."""
        return f"xql_in_group({value[0]}, {mark(json.dumps(list(entries)), 'text')})"

    def wildcard(self, text: tuple[str, str], pattern: str, mark, case_sensitive: bool) -> str:
        return f"xql_wildcard({text[0]}, {mark(pattern, 'text')}, {int(case_sensitive)})"

    def aggregate(self, function: str, field: tuple[str, str] | None, time: str) -> tuple[str, str]:
        if function == "count":
            return ("count(*)" if field is None else f"count({field[0]})"), "int"
        if function == "count_distinct":
            return f"count(DISTINCT {field[0]})", "int"
        if function in ("min", "max", "sum"):
            return f"{function}({field[0]})", field[1]
        if function == "avg":
            return f"avg({field[0]})", "real"
        if function == "values":
            return f"xql_values({field[0]})", "text"
        return f"xql_{function}({field[0]}, {time})", field[1]      # earliest, latest

    def order(self, column: str, kind: str, descending: bool) -> str:
        return f"{column} {'DESC' if descending else 'ASC'}"

    def group_order(self, keys: list[tuple[str, str]]) -> str:
        """The order comp's groups come out in, where no sort follows: SQLite groups by
        sorting on the keys, so it says nothing."""
        return ""


# -- PostgreSQL ------------------------------------------------------------------------------
_UPPER, _LOWER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"
_PG_TYPES = {"int": "bigint", "real": "double precision", "text": "text", "bool": "boolean", "path": "text[]"}
# extract_time parts: PostgreSQL's EXTRACT field of the UTC time (DAYOFWEEK: 1 = Sunday, as XQL).
_PG_PARTS = {"SECOND": "floor(EXTRACT(SECOND FROM {t}))", "MINUTE": "EXTRACT(MINUTE FROM {t})",
             "HOUR": "EXTRACT(HOUR FROM {t})", "DAY": "EXTRACT(DAY FROM {t})",
             "DAYOFWEEK": "EXTRACT(DOW FROM {t}) + 1", "DAYOFYEAR": "EXTRACT(DOY FROM {t})",
             "MONTH": "EXTRACT(MONTH FROM {t})", "QUARTER": "EXTRACT(QUARTER FROM {t})",
             "YEAR": "EXTRACT(YEAR FROM {t})"}
# format_timestamp's strftime elements that have a to_char equal.
_PG_FORMATS = {"Y": "YYYY", "m": "MM", "d": "DD", "H": "HH24", "M": "MI", "S": "SS", "j": "DDD", "y": "YY",
               "b": "Mon", "B": "FMMonth", "a": "Dy", "A": "FMDay", "p": "AM", "I": "HH12"}

# The number text starts with, as SQLite reads text where it needs a number.
_LEADING_NUMBER = r"^\s*([+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?)"
# A whole number as Python's int() reads it (after strip()).
_INTEGER_TEXT = r"^[+-]?[0-9]+$"


class Unsupported(ValueError):
    """A query PostgreSQL cannot run as SQLite does (the message names what, for the user)."""


def _utc(ms: str) -> str:
    """An epoch-milliseconds value as a UTC timestamp (exact: no float seconds)."""
    return f"(TIMESTAMP 'epoch' + ({ms}) * INTERVAL '1 millisecond')"


class PostgresDialect(SqliteDialect):
    def param(self, index: int, value, kind: str) -> str:
        if value is None:
            return "NULL"
        return f"CAST(%(p{index})s AS {_PG_TYPES.get(kind, 'text')})"

    def json_field(self, name: str, kind: str) -> str:
        text = f"(CAST(record AS jsonb) ->> '{name}')"
        if kind == "bool":                      # a JSON true/false is 1/0, as in SQLite
            return f"CAST(CAST({text} AS boolean) AS int)"
        return text if kind == "text" else f"CAST({text} AS {_PG_TYPES[kind]})"

    def value(self, sql: str, kind: str) -> str:
        return f"CAST({sql} AS int)" if kind == "bool" else sql

    def condition(self, sql: str, kind: str) -> str:
        if kind == "bool":
            return sql
        if kind in NUMBERS:
            return f"({sql} <> 0)"
        if kind == "null":
            return "NULL"
        # Text as SQLite reads it as a truth value: its leading number, none is 0 (false).
        number = f"CAST(substring({sql} from '{_LEADING_NUMBER}') AS double precision)"
        return f"(CASE WHEN {sql} IS NULL THEN NULL ELSE coalesce({number} <> 0, false) END)"

    def _text(self, item: tuple[str, str]) -> str:
        sql, kind = item
        return sql if kind in ("text", "null") else f"CAST({self.value(sql, kind)} AS text)"

    def _fold(self, sql: str) -> str:
        return f"translate({sql}, '{_UPPER}', '{_LOWER}')"

    def compare(self, op: str, left: tuple[str, str], right: tuple[str, str], fold: bool) -> str:
        op = "<>" if op == "!=" else op
        left, right = [(self.value(*side), "int" if side[1] == "bool" else side[1]) for side in (left, right)]
        kinds = {left[1], right[1]} - {"null"}
        if kinds <= set(NUMBERS):
            return f"({left[0]} {op} {right[0]})"
        a, b = self._text(left), self._text(right)
        if fold:
            a, b = self._fold(a), self._fold(b)
        return f"({a} {op} {b} COLLATE \"C\")"

    def call(self, name: str, args: list[tuple[str, str]], literals: list, mark) -> tuple[str, str]:
        text = [self._text(a) for a in args]
        values = [self.value(*a) for a in args]
        if name == "json_extract_scalar" or name == "json_extract":
            steps = _json_path(literals[1]) if isinstance(literals[1], str) else None
            if steps is None:
                raise Unsupported(f"{name}() on PostgreSQL takes a JSON path written in the query ($.a.b[0])")
            path = mark([str(step) for step in steps], "path")
            if name == "json_extract":        # the member's JSON text, as the record has it
                return f"CAST(CAST({text[0]} AS json) #> {path} AS text)", "text"
            member = f"(CAST({text[0]} AS jsonb) #> {path})"
            return (f"(CASE WHEN jsonb_typeof({member}) IN ('object', 'array', 'null') THEN NULL "
                    f"ELSE {member} #>> '{{}}' END)"), "text"
        if name == "extract_time":       # a part that is no part's name (read from a field): null
            t = _utc(values[0])
            parts = {"MILLISECOND": f"mod({values[0]}, 1000)"} | {
                part: f"CAST({expression.format(t=t)} AS bigint)" for part, expression in _PG_PARTS.items()}
            return _choose(text[1], parts), "int"
        if name == "format_timestamp":
            if not isinstance(literals[0], str):
                raise Unsupported("format_timestamp() on PostgreSQL takes its format written in the query")
            return f"to_char({_utc(values[1])}, {mark(_to_char(literals[0]), 'text')})", "text"
        if name == "timestamp_diff":     # bigint division: towards zero, as XQL
            unit = _choose(text[2], {part: str(ms) for part, ms in MS_PER.items()})
            return f"(({values[0]} - {values[1]}) / {unit})", "int"
        if name == "to_string":
            return text[0], "text"
        if name == "to_integer":
            return self._integer(args[0]), "int"
        if name in ("lowercase", "uppercase"):
            return f"{'lower' if name == 'lowercase' else 'upper'}({text[0]})", "text"
        if name == "trim":
            return f"btrim({text[0]}{', ' + text[1] if len(text) > 1 else ''})", "text"
        if name == "replace":
            return f"replace({', '.join(text)})", "text"
        if name == "split":
            delimiter = text[1] if len(text) > 1 else "','"
            return f"CAST(array_to_json(string_to_array({text[0]}, {delimiter})) AS text)", "text"
        if name == "regextract":
            # Every match; with a capture group, the first group's text (as Python's findall).
            return (f"(SELECT coalesce(CAST(array_to_json(array_agg(m[1])) AS text), '[]') "
                    f"FROM regexp_matches({text[0]}, {text[1]}, 'g') AS m)"), "text"
        if name == "arrayindex":
            return f"(CAST({text[0]} AS jsonb) ->> CAST({self._integer(args[1])} AS int))", "text"
        if name == "concat":
            return "(" + " || ".join(text) + ")", "text"
        if name in ("coalesce", "if"):
            kind = _common(args[1:] if name == "if" else args)
            cast = [self._cast(a, kind) for a in args]
            if name == "coalesce":
                return f"COALESCE({', '.join(cast)})", kind
            otherwise = f" ELSE {cast[2]}" if len(cast) > 2 else ""
            return f"(CASE WHEN {self.condition(*args[0])} THEN {cast[1]}{otherwise} END)", kind
        raise Unsupported(f"{name}() is not available on PostgreSQL")

    def _integer(self, item: tuple[str, str]) -> str:
        """A value as a whole number as Python's int() reads it; null when it is not one."""
        if item[1] in NUMBERS:
            return f"CAST(trunc({item[0]}) AS bigint)"
        trimmed = f"btrim({self._text(item)}, E' \\t\\n\\r\\f\\x0B')"        # Python's strip(): whitespace
        return f"(CASE WHEN {trimmed} ~ '{_INTEGER_TEXT}' THEN CAST({trimmed} AS bigint) END)"

    def _cast(self, item: tuple[str, str], kind: str) -> str:
        if item[1] in (kind, "null"):
            return item[0]
        return self._text(item) if kind == "text" else f"CAST({self.value(*item)} AS {_PG_TYPES[kind]})"

    def contains(self, text: tuple[str, str], part: tuple[str, str], case_sensitive: bool) -> str:
        a, b = self._text(text), self._text(part)
        if not case_sensitive:
            a, b = self._fold(a), self._fold(b)
        return f"(strpos({a}, {b}) > 0)"

    def regex(self, text: tuple[str, str], pattern: tuple[str, str]) -> str:
        return f"({self._text(text)} ~ {self._text(pattern)})"

    def in_group(self, value: tuple[str, str], group: str, entries: tuple, mark) -> str:
        """groups.in_group in SQL: a text that is an address (ADDRESS_PATTERN, tested before
        the cast to inet, which fails on anything else) against the address and range
        entries, IPv4-mapped IPv6 as IPv4; any other text, trimmed of whitespace and trailing
        dots and folded, against the name entries (a short name as an FQDN's first label)."""
        networks, names = [], []
        for query in map(HostQuery.parse, entries):
            if query.network is None:
                names.append(query.name)
                continue
            net = mark(str(query.network), "text")
            if query.network.version == 4:     # a mapped ::ffff:a.b.c.d is a.b.c.d (hosts.py)
                mapped = ipaddress.ip_network(f"::ffff:{query.network.network_address}/{96 + query.network.prefixlen}")
                networks.append(f"g.ip <<= CAST({net} AS cidr) OR g.ip <<= CAST({mark(str(mapped), 'text')} AS cidr)")
            else:
                networks.append(f"(g.ip <<= CAST({net} AS cidr) AND NOT g.ip <<= CAST('{_MAPPED}' AS cidr))")
        name_tests = []
        for name in names:
            first = name.split(".", 1)[0]
            label = (f"(strpos(g.n, '.') = 0 AND g.n = {mark(first, 'text')})" if "." in name else
                     f"(strpos(g.n, '.') > 0 AND split_part(g.n, '.', 1) = {mark(name, 'text')})")
            name_tests.append(f"g.n = {mark(name, 'text')} OR {label}")
        address = f"(CASE WHEN a ~ '{ADDRESS_PATTERN}' THEN CAST(a AS inet) END)"
        # Python's strip() of ASCII whitespace (hosts.py's names), then trailing dots.
        name = "lower(rtrim(btrim(v, E' \\t\\n\\r\\f\\x0B\\x1C\\x1D\\x1E\\x1F'), '.'))"
        scoped = f"split_part(v, {mark('%', 'text')}, 1)"          # a %scope is not the address's
        by_address, by_name = " OR ".join(networks) or "FALSE", " OR ".join(name_tests) or "FALSE"
        return (f"(SELECT CASE WHEN g.v IS NULL THEN NULL WHEN g.ip IS NOT NULL THEN {by_address} "
                f"ELSE {by_name} END FROM (SELECT v, {address} AS ip, {name} AS n "
                f"FROM (SELECT v, {scoped} AS a FROM (SELECT {self._text(value)} AS v) AS g0) AS g1) AS g)")

    def wildcard(self, text: tuple[str, str], pattern: str, mark, case_sensitive: bool) -> str:
        like = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
        subject, like_sql = self._text(text), mark(like, "text")
        if not case_sensitive:
            subject, like_sql = self._fold(subject), self._fold(like_sql)
        return f"({subject} LIKE {like_sql} COLLATE \"C\")"

    def aggregate(self, function: str, field: tuple[str, str] | None, time: str) -> tuple[str, str]:
        if function in ("count", "count_distinct"):
            sql, _ = super().aggregate(function, field, time)
            return sql, "int"
        sql, kind = field
        collated = f"{sql} COLLATE \"C\"" if kind == "text" else sql
        if function in ("min", "max"):
            return f"{function}({collated})", kind
        if function == "sum":       # SQLite: an integer sum stays an integer
            return (f"CAST(sum({sql}) AS bigint)" if kind in ("int", "bool") else f"sum({sql})"), kind
        if function == "avg":
            return f"CAST(avg({sql}) AS double precision)", "real"
        if function == "values":     # distinct, non-null, sorted; [] for none
            return (f"coalesce(CAST(array_to_json(array_agg(DISTINCT {collated} ORDER BY {collated}) "
                    f"FILTER (WHERE {sql} IS NOT NULL)) AS text), '[]')"), "text"
        direction = "DESC" if function == "latest" else "ASC"
        return f"(array_agg({sql} ORDER BY {time} {direction}) FILTER (WHERE {time} IS NOT NULL))[1]", kind

    def order(self, column: str, kind: str, descending: bool) -> str:
        collated = f"{column} COLLATE \"C\"" if kind == "text" else column
        return f"{collated} DESC NULLS LAST" if descending else f"{collated} ASC NULLS FIRST"

    def group_order(self, keys: list[tuple[str, str]]) -> str:
        """SQLite's order of groups (by their keys, nulls first, text by code point), so that
        a comp without a sort lists its rows alike on both stores."""
        return ", ".join(self.order(column, kind, False) for column, kind in keys)


def _to_char(fmt: str) -> str:
    """A strftime format as to_char's: elements translated, the rest quoted as literal text."""
    out, literal, i = [], [], 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            element = fmt[i + 1]
            if element == "%":
                literal.append("%")
            elif element in _PG_FORMATS:
                if literal:
                    out.append('"' + "".join(literal).replace("\\", "\\\\").replace('"', '\\"') + '"')
                    literal = []
                out.append(_PG_FORMATS[element])
            else:
                raise Unsupported(f"format_timestamp() on PostgreSQL: %{element} is not supported "
                                  f"(supported: {' '.join('%' + e for e in _PG_FORMATS)})")
            i += 2
            continue
        literal.append(fmt[i])
        i += 1
    if literal:
        out.append('"' + "".join(literal).replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "".join(out)


def _choose(name: str, cases: dict[str, str]) -> str:
    """The case whose key is ``name`` (upper-cased); null for none."""
    whens = " ".join(f"WHEN '{key}' THEN {sql}" for key, sql in cases.items())
    return f"(CASE upper({name}) {whens} END)"


def _common(args: list[tuple[str, str]]) -> str:
    """The type a value of several arguments takes (coalesce, if): one type, real over int, else text."""
    kinds = {"int" if kind == "bool" else kind for _, kind in args} - {"null"}
    if not kinds:
        return "null"
    if len(kinds) == 1:
        return kinds.pop()
    return "real" if kinds <= set(NUMBERS) else "text"


def _returns(name: str, args: list[tuple[str, str]]) -> str:
    """The type of a function's value (the compiler's bookkeeping; SQLite itself is untyped)."""
    if name in ("extract_time", "timestamp_diff", "to_integer"):
        return "int"
    if name in ("coalesce", "if"):
        return _common(args[1:] if name == "if" else args)
    return "text" if name in FUNCTIONS else "null"


SQLITE = SqliteDialect()
POSTGRESQL = PostgresDialect()
