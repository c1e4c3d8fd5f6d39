"""Names and shapes: every field a stage reads exists at that point of the query, every
function exists and has the right number of arguments. What a stage leaves is tracked as a
schema (field name -> kind: "time", "array" or None), which the compiler and the evaluator use.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields as dataclass_fields, is_dataclass, replace

from sensor.events import EVENT_TYPE_RPC_CALL, RpcCallEvent
from sensor.xql import ast
from sensor.xql.functions import FUNCTIONS, TIME_PARTS
from sensor.xql.groups import DEFAULT_GROUPS, AddressGroups
from sensor.xql.parser import XqlError, did_you_mean

DATASET = "xdr_data"
TIME_FIELD = "_time"
# ENUM.<name> constants of event_type the sensor's events can have (events.md).
EVENT_TYPES = {"RPC_CALL": EVENT_TYPE_RPC_CALL}
AGGREGATES = ("count", "count_distinct", "min", "max", "sum", "avg", "values", "earliest", "latest")
# Built-ins the grammar routes through calls; not user-callable by name.
_INTERNAL = {"enum"}
# Field values of a node that hold no node: literals' values, names, positions.
_LEAVES = (str, int, float, type(None), ast.Pos)


def dataset_schema() -> dict[str, str | None]:
    """xdr_data's fields: every field of the event record; _time is a timestamp."""
    schema: dict[str, str | None] = {f.name: None for f in dataclass_fields(RpcCallEvent)}
    schema[TIME_FIELD] = "time"
    return schema


@dataclass(frozen=True)
class Checked:
    """A query that passed the checks: its stages, the schema after each, case sensitivity."""
    query: ast.Query
    stages: tuple                 # the stages without dataset and config
    schemas: tuple                # schema *before* each of those stages
    final: dict                   # schema after the last stage
    hidden: frozenset             # fields carried for the engine but not shown (_time after fields)
    case_sensitive: bool


def check(query: ast.Query, groups: AddressGroups = DEFAULT_GROUPS) -> Checked:
    """``groups``: the configuration's address groups, which ``in $group`` reads (bound here)."""
    case_sensitive = False       # XQL's default: case is not considered when comparing values
    stages = [_bind(stage, dict(groups)) for stage in query.stages]
    while stages and isinstance(stages[0], ast.Config):
        config = stages.pop(0)
        if config.name != "case_sensitive":
            raise XqlError(f"unknown config {config.name!r} (supported: case_sensitive)", *_at(config.pos))
        case_sensitive = config.value
    if stages and isinstance(stages[0], ast.Dataset):
        dataset = stages.pop(0)
        if dataset.name != DATASET:
            raise XqlError(f"unknown dataset {dataset.name!r}; the sensor's events are {DATASET}", *_at(dataset.pos))
    for stage in stages:
        if isinstance(stage, (ast.Config, ast.Dataset)):
            kind = "config" if isinstance(stage, ast.Config) else "dataset"
            raise XqlError(f"{kind} comes first in a query", *_at(stage.pos))
    schema = dataset_schema()
    hidden: set[str] = set()
    before = []
    for stage in stages:
        before.append(dict(schema))
        schema, hidden = _stage(stage, schema, hidden)
    return Checked(query, tuple(stages), tuple(before), schema, frozenset(hidden), case_sensitive)


def _bind(node, groups: dict):
    """The node with each ``in $group`` given the group's entries; an unknown group is an error."""
    if isinstance(node, _LEAVES):       # most of what the walk meets
        return node
    if isinstance(node, ast.InGroup):
        if node.group not in groups:
            raise XqlError(f"unknown address group ${node.group} (declared: "
                           f"{', '.join('$' + g for g in sorted(groups))}; add it to the configuration's "
                           f"[address_groups])", *_at(node.pos))
        return replace(node, left=_bind(node.left, groups), entries=groups[node.group])
    # Rebuilt only where a group was bound below: most queries have none, and each node copied
    # for nothing costs a dataclass replace (the shipped rules' check took 3 ms that way).
    if isinstance(node, tuple):
        bound = tuple(_bind(item, groups) for item in node)
        return node if all(b is n for b, n in zip(bound, node)) else bound
    if is_dataclass(node):
        changes = {}
        for f in dataclass_fields(node):
            value = getattr(node, f.name)
            bound = _bind(value, groups)
            if bound is not value:
                changes[f.name] = bound
        return replace(node, **changes) if changes else node
    return node


def _at(pos: ast.Pos) -> tuple[int, int]:
    return pos.line, pos.column


def _field(name: str, pos: ast.Pos, schema: dict) -> None:
    if name not in schema:
        raise XqlError(f"unknown field {name!r}{did_you_mean(name, schema)}", *_at(pos))


def _stage(stage, schema: dict, hidden: set) -> tuple[dict, set]:
    if isinstance(stage, ast.Filter):
        expression_kind(stage.condition, schema)
        return schema, hidden
    if isinstance(stage, ast.Alter):
        schema = dict(schema)
        for name, expression, _ in stage.assignments:
            schema[name] = expression_kind(expression, schema)
            hidden.discard(name)
        return schema, hidden
    if isinstance(stage, ast.Fields):
        kept: dict = {}
        for name, alias, pos in stage.items:
            _field(name, pos, schema)
            kept[alias or name] = schema[name]
        hidden = set()
        if TIME_FIELD not in kept:        # XQL keeps _time with every record; shown only when asked for
            kept[TIME_FIELD] = "time"
            hidden = {TIME_FIELD}
        return kept, hidden
    if isinstance(stage, ast.Comp):
        result: dict = {}
        for name, pos in stage.by:
            _field(name, pos, schema)
            result[name] = schema[name]
        for aggregate in stage.aggregates:
            result[aggregate.alias] = _aggregate_kind(aggregate, schema)
        return result, set()
    if isinstance(stage, ast.Sort):
        for name, _, pos in stage.orders:
            _field(name, pos, schema)
        return schema, hidden
    if isinstance(stage, ast.Dedup):
        for name, pos in stage.fields:
            _field(name, pos, schema)
        if stage.by is not None:
            _field(stage.by[0], stage.by[2], schema)
        return schema, hidden
    if isinstance(stage, ast.Limit):
        return schema, hidden
    raise XqlError(f"unsupported stage {type(stage).__name__.lower()}", *_at(stage.pos))


def _aggregate_kind(aggregate: ast.Aggregate, schema: dict) -> str | None:
    if aggregate.function not in AGGREGATES:
        raise XqlError(f"unknown comp function {aggregate.function!r}{did_you_mean(aggregate.function, AGGREGATES)} "
                       f"(supported: {', '.join(AGGREGATES)})", *_at(aggregate.pos))
    if aggregate.field is None:
        if aggregate.function != "count":
            raise XqlError(f"{aggregate.function}() takes a field", *_at(aggregate.pos))
        return None
    _field(aggregate.field, aggregate.pos, schema)
    if aggregate.function in ("earliest", "latest") and TIME_FIELD not in schema:
        raise XqlError(f"{aggregate.function}() needs _time, which an earlier comp removed", *_at(aggregate.pos))
    if aggregate.function == "values":
        return "array"
    if aggregate.function in ("min", "max", "earliest", "latest"):
        return schema[aggregate.field]
    return None


def expression_kind(node, schema: dict) -> str | None:
    """Check an expression against the schema; return the kind of its value."""
    if isinstance(node, ast.Literal):
        return None
    if isinstance(node, ast.Field):
        _field(node.name, node.pos, schema)
        return schema[node.name]
    if isinstance(node, ast.Call):
        return _call_kind(node, schema)
    if isinstance(node, ast.Compare):
        expression_kind(node.left, schema)
        expression_kind(node.right, schema)
    elif isinstance(node, ast.Regex):
        expression_kind(node.left, schema)
        expression_kind(node.pattern, schema)
        _regex_literal(node.pattern)
    elif isinstance(node, ast.Contains):
        expression_kind(node.left, schema)
        expression_kind(node.right, schema)
    elif isinstance(node, ast.InGroup):
        expression_kind(node.left, schema)
    elif isinstance(node, ast.In):
        expression_kind(node.left, schema)
        for option in node.options:
            expression_kind(option, schema)
    elif isinstance(node, ast.Bool):
        for term in node.terms:
            expression_kind(term, schema)
    elif isinstance(node, ast.Not):
        expression_kind(node.term, schema)
    return None


def _regex_literal(node) -> None:
    """A pattern written in the query must compile (Python's re reads RE2's common syntax)."""
    if isinstance(node, ast.Literal) and isinstance(node.value, str):
        try:
            re.compile(node.value)
        except re.error as e:
            raise XqlError(f"not a regular expression: {e}", *_at(node.pos)) from None


def _call_kind(node: ast.Call, schema: dict) -> str | None:
    if node.name == "enum":
        name = node.args[0].value.upper()
        if name not in EVENT_TYPES:
            raise XqlError(f"unknown ENUM.{node.args[0].value} (known: "
                           f"{', '.join('ENUM.' + n for n in EVENT_TYPES)})", *_at(node.pos))
        return None
    function = FUNCTIONS.get(node.name) if node.name not in _INTERNAL else None
    if function is None:
        raise XqlError(f"unknown function {node.name!r}{did_you_mean(node.name, FUNCTIONS)}", *_at(node.pos))
    if not function.min_args <= len(node.args) <= function.max_args:
        raise XqlError(f"{node.name}() takes {function.arity()}, not {len(node.args)}", *_at(node.pos))
    for arg in node.args:
        expression_kind(arg, schema)
    if node.name == "extract_time":
        part = node.args[1]
        if isinstance(part, ast.Literal) and str(part.value).upper() not in TIME_PARTS:
            raise XqlError(f"extract_time part {part.value!r} is not one of {', '.join(TIME_PARTS)}",
                           *_at(part.pos))
    if node.name == "regextract":
        _regex_literal(node.args[1])
    if node.name == "timestamp_diff":
        part = node.args[2]
        if isinstance(part, ast.Literal) and str(part.value).upper() not in ("DAY", "HOUR", "MINUTE", "SECOND",
                                                                             "MILLISECOND"):
            raise XqlError(f"timestamp_diff part {part.value!r} is not one of DAY, HOUR, MINUTE, SECOND, "
                           f"MILLISECOND", *_at(part.pos))
    return function.returns
