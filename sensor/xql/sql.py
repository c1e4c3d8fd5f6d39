"""A checked XQL query -> one SQLite SELECT over the store's events table.

Each stage wraps the previous one as a subquery; SQLite flattens them, so the filters on the
events table's own columns run first (and the time range uses its index) and the XQL
functions (Python, registered once per connection: the same code the streaming detector
runs) only see the rows that are left. Fields with a column of their own are read from it;
the others with json_extract(record, '$.<field>').
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from sensor.events import xdr_time
from sensor.xql import ast
from sensor.xql.check import EVENT_TYPES, TIME_FIELD, Checked
from sensor.xql.evaluate import contains, is_wildcard, regex_match, wildcard_match
from sensor.xql.functions import FUNCTIONS, apply

# xdr_data fields that the events table keeps in a column of its own (migrations.py step 1).
COLUMNS = {
    TIME_FIELD: "ts_ms", "event_timestamp": "ts_ms", "event_id": "event_id", "event_type": "event_type",
    "action_rpc_interface_uuid": "interface_uuid", "action_rpc_func_name": "func_name",
    "action_rpc_func_opnum": "opnum", "actor_type": "actor_type", "agent_hostname": "agent_hostname",
    "agent_id": "agent_id", "agent_ip": "agent_ip", "actor_remote_ip": "actor_remote_ip",
}


@dataclass(frozen=True)
class Compiled:
    sql: str
    params: dict
    columns: tuple          # output columns, in order
    kinds: dict             # column -> "time" / "array" / None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def compile_query(checked: Checked, start_ms: int | None, until_ms: int | None) -> Compiled:
    """The query over events with start_ms < event_timestamp <= until_ms; None leaves that
    end open. (Give None where the window covers the whole store: a range on the time index
    makes SQLite fetch every row through it, 40x slower than reading the table in order.)"""
    params: list = []
    cs = checked.case_sensitive
    first_schema = checked.schemas[0] if checked.schemas else checked.final
    select = ", ".join(f"{COLUMNS.get(name) or _json_field(name)} AS {_quote(name)}" for name in first_schema)
    window = ([f"ts_ms > {_param(params, start_ms)}"] if start_ms is not None else []) + \
             ([f"ts_ms <= {_param(params, until_ms)}"] if until_ms is not None else [])
    sql = f"SELECT {select} FROM events" + (f" WHERE {' AND '.join(window)}" if window else "")
    order_by = ""             # the last sort, kept for the stages that follow it
    sort_columns: set[str] = set()
    for stage, schema in zip(checked.stages, checked.schemas):
        columns = list(schema)
        if isinstance(stage, ast.Filter):
            condition = _expr(stage.condition, params, cs)
            sql = f"SELECT * FROM ({sql}) WHERE {condition}"
        elif isinstance(stage, ast.Alter):
            assigned: dict[str, str] = {}
            # XQL evaluates an alter's assignments left to right: a later one may read an earlier one.
            for name, expression, _ in stage.assignments:
                if ast.reads(expression) & assigned.keys():
                    sql = _alter_select(sql, columns, assigned)
                    columns = list(dict.fromkeys(columns + list(assigned)))
                    assigned = {}
                assigned[name] = _expr(expression, params, cs)
            sql = _alter_select(sql, columns, assigned)
        elif isinstance(stage, ast.Fields):
            items = [f"{_quote(name)} AS {_quote(alias or name)}" for name, alias, _ in stage.items]
            if not any((alias or name) == TIME_FIELD for name, alias, _ in stage.items):
                items.append(_quote(TIME_FIELD))
            sql = f"SELECT {', '.join(items)} FROM ({sql})"
            kept = {alias or name for name, alias, _ in stage.items} | {TIME_FIELD}
            if order_by and not sort_columns <= kept:
                order_by = ""     # sorted by a field no longer there: rows keep the order they have
        elif isinstance(stage, ast.Comp):
            by = [_quote(name) for name, _ in stage.by]
            aggregates = [f"{_aggregate(a)} AS {_quote(a.alias)}" for a in stage.aggregates]
            group = f" GROUP BY {', '.join(by)}" if by else ""
            sql = f"SELECT {', '.join(by + aggregates)} FROM ({sql}){group}"
            order_by = ""
        elif isinstance(stage, ast.Sort):
            order_by = ", ".join(f"{_quote(n)} {'DESC' if d else 'ASC'}" for n, d, _ in stage.orders)
            sort_columns = {n for n, _, _ in stage.orders}
            sql = f"SELECT * FROM ({sql}) ORDER BY {order_by}"
        elif isinstance(stage, ast.Limit):
            sql = f"SELECT * FROM ({sql}){' ORDER BY ' + order_by if order_by else ''} LIMIT {stage.count}"
        elif isinstance(stage, ast.Dedup):
            partition = ", ".join(_quote(n) for n, _ in stage.fields)
            if stage.by is not None:
                keep = f"{_quote(stage.by[0])} {'DESC' if stage.by[1] else 'ASC'}"
            else:
                keep = order_by or (f"{_quote(TIME_FIELD)} ASC" if TIME_FIELD in schema else "1")
            names = ", ".join(_quote(c) for c in columns)
            sql = (f"SELECT {names} FROM (SELECT *, row_number() OVER (PARTITION BY {partition} "
                   f"ORDER BY {keep}) AS __xql_rank FROM ({sql})) WHERE __xql_rank = 1")
    shown = tuple(c for c in checked.final if c not in checked.hidden)
    sql = f"SELECT {', '.join(_quote(c) for c in shown)} FROM ({sql})"
    if order_by:
        sql += f" ORDER BY {order_by}"
    return Compiled(sql, {f"p{i}": v for i, v in enumerate(params)}, shown, {c: checked.final[c] for c in shown})


def _alter_select(sql: str, columns: list[str], assigned: dict[str, str]) -> str:
    items = [f"{assigned[c]} AS {_quote(c)}" if c in assigned else _quote(c) for c in columns]
    items += [f"{expression} AS {_quote(name)}" for name, expression in assigned.items() if name not in columns]
    return f"SELECT {', '.join(items)} FROM ({sql})"


def _collation(right, case_sensitive: bool) -> str:
    """NOCASE for a comparison that may see text when case does not count; none against a
    number, so an index on a number column (opnum) stays usable."""
    number = isinstance(right, ast.Literal) and isinstance(right.value, (int, float))
    return "" if case_sensitive or number else " COLLATE NOCASE"


def _param(params: list, value) -> str:
    """Named, because a stage's parameters sit before or after the inner query's in the text."""
    params.append(value)
    return f":p{len(params) - 1}"


def _json_field(name: str) -> str:
    return f"json_extract(record, '$.{name}')"


def _aggregate(a: ast.Aggregate) -> str:
    field = _quote(a.field) if a.field is not None else None
    if a.function == "count":
        return "count(*)" if field is None else f"count({field})"
    if a.function == "count_distinct":
        return f"count(DISTINCT {field})"
    if a.function in ("min", "max", "sum", "avg"):
        return f"{a.function}({field})"
    if a.function == "values":
        return f"xql_values({field})"
    return f"xql_{a.function}({field}, {_quote(TIME_FIELD)})"     # earliest, latest


def _expr(node, params: list, cs: bool) -> str:
    if isinstance(node, ast.Literal):
        if node.value is None:
            return "NULL"
        return _param(params, node.value)
    if isinstance(node, ast.Field):
        return _quote(node.name)
    if isinstance(node, ast.Call):
        if node.name == "enum":
            return _param(params, EVENT_TYPES[node.args[0].value.upper()])
        return f"xql_{node.name}({', '.join(_expr(a, params, cs) for a in node.args)})"
    if isinstance(node, ast.Compare):
        for side, other in ((node.right, node.left), (node.left, node.right)):
            if node.op in ("=", "!=") and isinstance(side, ast.Literal) and side.value is None:
                return f"({_expr(other, params, cs)} IS {'NOT ' if node.op == '!=' else ''}NULL)"
        left = _expr(node.left, params, cs)
        right = _expr(node.right, params, cs)
        return f"({left} {node.op} {right}{_collation(node.right, cs)})"
    if isinstance(node, ast.Bool):
        return "(" + f" {node.op.upper()} ".join(_expr(t, params, cs) for t in node.terms) + ")"
    if isinstance(node, ast.Not):
        return f"(NOT {_expr(node.term, params, cs)})"
    if isinstance(node, ast.In):
        left = _expr(node.left, params, cs)
        tests = []
        for option in node.options:
            if is_wildcard(option):
                tests.append(f"xql_wildcard({left}, {_param(params, option.value)}, {int(cs)})")
            elif isinstance(option, ast.Literal) and option.value is None:
                tests.append(f"({left} IS NULL)")
            else:
                tests.append(f"({left} = {_expr(option, params, cs)}{_collation(option, cs)})")
        found = "(" + " OR ".join(tests) + ")"
        return f"(NOT {found})" if node.negated else found
    if isinstance(node, ast.Contains):
        found = f"xql_contains({_expr(node.left, params, cs)}, {_expr(node.right, params, cs)}, {int(cs)})"
        return f"(NOT {found})" if node.negated else found
    if isinstance(node, ast.Regex):
        return f"xql_regex({_expr(node.left, params, cs)}, {_expr(node.pattern, params, cs)})"
    raise TypeError(f"not an expression: {node!r}")


# -- the Python side of the SQL: XQL functions and aggregates registered in SQLite ------------
def _to_sql(value):
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, bool):
        return int(value)
    return value


def _scalar(function):
    return lambda *args: _to_sql(apply(function, args))


class _Values:
    """values(x): the distinct non-null values of the group, sorted, as an array."""

    def __init__(self):
        self.seen = set()

    def step(self, value):
        if value is not None:
            self.seen.add(value)

    def finalize(self):
        return _to_sql(sorted(self.seen, key=lambda v: (isinstance(v, str), v)))


class _Earliest:
    """earliest(x): x of the group's record with the smallest _time (first such record wins)."""
    later = False

    def __init__(self):
        self.best = None

    def step(self, value, ts):
        if ts is None:
            return
        if self.best is None or (ts > self.best[0] if self.later else ts < self.best[0]):
            self.best = (ts, value)

    def finalize(self):
        return None if self.best is None else self.best[1]


class _Latest(_Earliest):
    later = True


def register(db: sqlite3.Connection) -> None:
    """Make the XQL functions callable in SQL on this connection."""
    for name, function in FUNCTIONS.items():
        db.create_function(f"xql_{name}", -1, _scalar(function), deterministic=True)
    db.create_function("xql_contains", 3, lambda t, p, cs: _to_sql(contains(t, p, bool(cs))), deterministic=True)
    db.create_function("xql_regex", 2, lambda t, p: _to_sql(regex_match(t, p)), deterministic=True)
    db.create_function("xql_wildcard", 3, lambda t, p, cs: _to_sql(wildcard_match(t, p, bool(cs))),
                       deterministic=True)
    db.create_aggregate("xql_values", 1, _Values)
    db.create_aggregate("xql_earliest", 2, _Earliest)
    db.create_aggregate("xql_latest", 2, _Latest)


def rows(db: sqlite3.Connection, compiled: Compiled) -> list[dict]:
    """Run it; timestamps come back as XDR's _time text, arrays as lists."""
    register(db)
    out = []
    for values in db.execute(compiled.sql, compiled.params):
        record = {}
        for column, value in zip(compiled.columns, values):
            kind = compiled.kinds.get(column)
            if value is not None and kind == "time":
                value = xdr_time(value / 1000)[0]
            elif value is not None and kind == "array":
                value = json.loads(value)
            record[column] = value
        out.append(record)
    return out
