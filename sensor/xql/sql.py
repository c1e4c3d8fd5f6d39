"""A checked XQL query -> one SELECT over the store's events table, in SQLite's or
PostgreSQL's SQL (the dialect, dialects.py, writes what differs).

Each stage wraps the previous one as a subquery; SQLite flattens them, so the filters on the
events table's own columns run first (and the time range uses its index) and the XQL
functions (on SQLite Python, registered once per connection: the same code the streaming
detector runs) only see the rows that are left. Fields with a column of their own are read
from it; the others from the record's JSON. The compiler tracks each value's type, which
PostgreSQL needs for its casts.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import get_args, get_type_hints

from sensor.events import RpcCallEvent, xdr_time
from sensor.xql import ast
from sensor.xql.check import EVENT_TYPES, TIME_FIELD, Checked
from sensor.xql.dialects import SQLITE, SqliteDialect
from sensor.xql.evaluate import contains, is_wildcard, regex_match, wildcard_match
from sensor.xql.functions import FUNCTIONS, apply
from sensor.xql.groups import in_group

# xdr_data fields that the events table keeps in a column of its own (migrations.py steps 1, 5).
COLUMNS = {
    TIME_FIELD: "ts_ms", "event_timestamp": "ts_ms", "event_id": "event_id", "event_type": "event_type",
    "action_rpc_interface_uuid": "interface_uuid", "action_rpc_func_name": "func_name",
    "action_rpc_func_opnum": "opnum", "actor_type": "actor_type", "agent_hostname": "agent_hostname",
    "agent_id": "agent_id", "agent_ip": "agent_ip", "actor_remote_ip": "actor_remote_ip", "sensor": "sensor",
}


@dataclass(frozen=True)
class Compiled:
    sql: str
    params: dict
    columns: tuple          # output columns, in order
    kinds: dict             # column -> "time" / "array" / None
    dialect: SqliteDialect = SQLITE


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def dataset_types() -> dict[str, str]:
    """Each xdr_data field's SQL type ("int", "real", "text", "bool"): the event dataclass's."""
    names = {int: "int", float: "real", str: "text", bool: "bool"}
    types = {}
    for name, hint in get_type_hints(RpcCallEvent).items():
        base = [t for t in get_args(hint) if t is not type(None)] or [hint]
        types[name] = names.get(base[0], "text")
    types[TIME_FIELD] = "int"
    return types


def compile_query(checked: Checked, start_ms: int | None, until_ms: int | None,
                  dialect: SqliteDialect = SQLITE) -> Compiled:
    """The query over events with start_ms < event_timestamp <= until_ms; None leaves that
    end open. (Give None where the window covers the whole store: a range on the time index
    makes SQLite fetch every row through it, 40x slower than reading the table in order.)"""
    q = _Query(dialect, checked.case_sensitive)
    first_schema = checked.schemas[0] if checked.schemas else checked.final
    types = {name: kind for name, kind in dataset_types().items() if name in first_schema}
    select = ", ".join(f"{COLUMNS.get(name) or dialect.json_field(name, types[name])} AS {_quote(name)}"
                       for name in first_schema)
    window = ([f"ts_ms > {q.mark(start_ms, 'int')}"] if start_ms is not None else []) + \
             ([f"ts_ms <= {q.mark(until_ms, 'int')}"] if until_ms is not None else [])
    sql = f"SELECT {select} FROM events" + (f" WHERE {' AND '.join(window)}" if window else "")
    order_by = ""             # the last sort, kept for the stages that follow it
    sort_columns: set[str] = set()
    for stage, schema in zip(checked.stages, checked.schemas):
        columns = list(schema)
        if isinstance(stage, ast.Filter):
            condition = dialect.condition(*q.expr(stage.condition, types))
            sql = f"SELECT * FROM ({sql}) AS {q.alias()} WHERE {condition}"
        elif isinstance(stage, ast.Alter):
            assigned: dict[str, str] = {}
            # XQL evaluates an alter's assignments left to right: a later one may read an earlier one.
            for name, expression, _ in stage.assignments:
                if ast.reads(expression) & assigned.keys():
                    sql = q.alter_select(sql, columns, assigned)
                    columns = list(dict.fromkeys(columns + list(assigned)))
                    assigned = {}
                value, kind = q.expr(expression, types)
                assigned[name] = dialect.value(value, kind)
                types[name] = "int" if kind == "bool" else kind
            sql = q.alter_select(sql, columns, assigned)
        elif isinstance(stage, ast.Fields):
            items = [f"{_quote(name)} AS {_quote(alias or name)}" for name, alias, _ in stage.items]
            if not any((alias or name) == TIME_FIELD for name, alias, _ in stage.items):
                items.append(_quote(TIME_FIELD))
            sql = f"SELECT {', '.join(items)} FROM ({sql}) AS {q.alias()}"
            types = {alias or name: types[name] for name, alias, _ in stage.items} | {TIME_FIELD: types[TIME_FIELD]}
            kept = {alias or name for name, alias, _ in stage.items} | {TIME_FIELD}
            if order_by and not sort_columns <= kept:
                order_by = ""     # sorted by a field no longer there: rows keep the order they have
        elif isinstance(stage, ast.Comp):
            by = [_quote(name) for name, _ in stage.by]
            aggregates, result = [], {name: types[name] for name, _ in stage.by}
            for a in stage.aggregates:
                field = (_quote(a.field), types[a.field]) if a.field is not None else None
                sql_of, result[a.alias] = dialect.aggregate(a.function, field, _quote(TIME_FIELD))
                aggregates.append(f"{sql_of} AS {_quote(a.alias)}")
            group = f" GROUP BY {', '.join(by)}" if by else ""
            sql = f"SELECT {', '.join(by + aggregates)} FROM ({sql}) AS {q.alias()}{group}"
            types = result
            # Groups come out in SQLite's order, by their keys (PostgreSQL is told to).
            order_by = dialect.group_order([(_quote(name), types[name]) for name, _ in stage.by])
            sort_columns = {name for name, _ in stage.by}
        elif isinstance(stage, ast.Sort):
            order_by = ", ".join(dialect.order(_quote(n), types[n], d) for n, d, _ in stage.orders)
            sort_columns = {n for n, _, _ in stage.orders}
            sql = f"SELECT * FROM ({sql}) AS {q.alias()} ORDER BY {order_by}"
        elif isinstance(stage, ast.Limit):
            sql = f"SELECT * FROM ({sql}) AS {q.alias()}{' ORDER BY ' + order_by if order_by else ''} LIMIT {stage.count}"
        elif isinstance(stage, ast.Dedup):
            partition = ", ".join(_quote(n) for n, _ in stage.fields)
            if stage.by is not None:
                keep = dialect.order(_quote(stage.by[0]), types[stage.by[0]], stage.by[1])
            else:
                keep = order_by or (dialect.order(_quote(TIME_FIELD), "int", False) if TIME_FIELD in schema else "1")
            names = ", ".join(_quote(c) for c in columns)
            sql = (f"SELECT {names} FROM (SELECT *, row_number() OVER (PARTITION BY {partition} "
                   f"ORDER BY {keep}) AS __xql_rank FROM ({sql}) AS {q.alias()}) AS {q.alias()} "
                   f"WHERE __xql_rank = 1")
    shown = tuple(c for c in checked.final if c not in checked.hidden)
    sql = f"SELECT {', '.join(_quote(c) for c in shown)} FROM ({sql}) AS {q.alias()}"
    if order_by:
        sql += f" ORDER BY {order_by}"
    return Compiled(sql, {f"p{i}": v for i, v in enumerate(q.params)}, shown,
                    {c: checked.final[c] for c in shown}, dialect)


class _Query:
    """What compiling one query collects: its parameters and subquery names."""

    def __init__(self, dialect: SqliteDialect, case_sensitive: bool):
        self.dialect = dialect
        self.cs = case_sensitive
        self.params: list = []
        self.subqueries = 0

    def alias(self) -> str:
        """A name for a subquery in FROM (PostgreSQL 15 requires one)."""
        self.subqueries += 1
        return f"__xql_{self.subqueries}"

    def mark(self, value, kind: str) -> str:
        """Named, because a stage's parameters sit before or after the inner query's in the text."""
        self.params.append(value)
        return self.dialect.param(len(self.params) - 1, value, kind)

    def alter_select(self, sql: str, columns: list[str], assigned: dict[str, str]) -> str:
        items = [f"{assigned[c]} AS {_quote(c)}" if c in assigned else _quote(c) for c in columns]
        items += [f"{expression} AS {_quote(name)}" for name, expression in assigned.items() if name not in columns]
        return f"SELECT {', '.join(items)} FROM ({sql}) AS {self.alias()}"

    def literal(self, node: ast.Literal) -> tuple[str, str]:
        value = node.value
        kind = ("null" if value is None else "int" if isinstance(value, (bool, int))
                else "real" if isinstance(value, float) else "text")
        return ("NULL" if value is None else self.mark(value, kind)), kind

    def expr(self, node, types: dict) -> tuple[str, str]:
        """The expression's SQL and its type ("int", "real", "text", "bool" or "null")."""
        d, cs = self.dialect, self.cs
        if isinstance(node, ast.Literal):
            return self.literal(node)
        if isinstance(node, ast.Field):
            return _quote(node.name), types[node.name]
        if isinstance(node, ast.Call):
            if node.name == "enum":
                return self.mark(EVENT_TYPES[node.args[0].value.upper()], "int"), "int"
            args = [self.expr(a, types) for a in node.args]
            literals = [a.value if isinstance(a, ast.Literal) else None for a in node.args]
            return d.call(node.name, args, literals, self.mark)
        if isinstance(node, ast.Compare):
            for side, other in ((node.right, node.left), (node.left, node.right)):
                if node.op in ("=", "!=") and isinstance(side, ast.Literal) and side.value is None:
                    return f"({self.expr(other, types)[0]} IS {'NOT ' if node.op == '!=' else ''}NULL)", "bool"
            return d.compare(node.op, self.expr(node.left, types), self.expr(node.right, types), not cs), "bool"
        if isinstance(node, ast.Bool):
            terms = [d.condition(*self.expr(t, types)) for t in node.terms]
            return "(" + f" {node.op.upper()} ".join(terms) + ")", "bool"
        if isinstance(node, ast.Not):
            return f"(NOT {d.condition(*self.expr(node.term, types))})", "bool"
        if isinstance(node, ast.In):
            left = self.expr(node.left, types)
            tests = []
            for option in node.options:
                if is_wildcard(option):
                    tests.append(d.wildcard(left, option.value, self.mark, cs))
                elif isinstance(option, ast.Literal) and option.value is None:
                    tests.append(f"({left[0]} IS NULL)")
                else:
                    tests.append(d.compare("=", left, self.expr(option, types), not cs))
            found = "(" + " OR ".join(tests) + ")"
            return (f"(NOT {found})" if node.negated else found), "bool"
        if isinstance(node, ast.InGroup):
            found = d.in_group(self.expr(node.left, types), node.group, node.entries, self.mark)
            return (f"(NOT {found})" if node.negated else found), "bool"
        if isinstance(node, ast.Contains):
            found = d.contains(self.expr(node.left, types), self.expr(node.right, types), cs)
            return (f"(NOT {found})" if node.negated else found), "bool"
        if isinstance(node, ast.Regex):
            return d.regex(self.expr(node.left, types), self.expr(node.pattern, types)), "bool"
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
    db.create_function("xql_in_group", 2, lambda v, entries: _to_sql(in_group(v, tuple(json.loads(entries)))),
                       deterministic=True)
    db.create_aggregate("xql_values", 1, _Values)
    db.create_aggregate("xql_earliest", 2, _Earliest)
    db.create_aggregate("xql_latest", 2, _Latest)


def rows(store, compiled: Compiled) -> list[dict]:
    """Run it on the store it was compiled for (``store.query``: SQLite or PostgreSQL);
    timestamps come back as XDR's _time text, arrays as lists."""
    out = []
    for values in store.query(compiled.sql, compiled.params):
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
