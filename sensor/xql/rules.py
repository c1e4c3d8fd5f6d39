"""Rules are XQL files: ``// key: value`` header lines, then the query.

Keys: id (required: the rule's name in alerts and in the store), title, severity
(low|medium|high|critical), version (int), technique (ATT&CK id), description. A rule that
streams must have the rarity shape (see ``rarity_plan``); any query can still be hunted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

from sensor.xql import ast
from sensor.xql.check import TIME_FIELD, Checked, check
from sensor.xql.evaluate import compile_expression
from sensor.xql.groups import DEFAULT_GROUPS, AddressGroups
from sensor.xql.parser import XqlError, parse

SHIPPED_RULES = Path(__file__).resolve().parent.parent / "rules"
SEVERITIES = ("low", "medium", "high", "critical")
_HEADER = re.compile(r"//\s*([A-Za-z_]+)\s*:\s*(.*?)\s*$")
_KEYS = ("id", "title", "severity", "version", "technique", "description")

DAY_AS_WRITTEN = "day-of-month"     # extract_time(_time, "DAY") as XQL means it
DAY_UTC_DATE = "utc-date"           # ... read as the UTC calendar date
DAY_MODES = (DAY_UTC_DATE, DAY_AS_WRITTEN)


class RuleError(ValueError):
    """A rule file that cannot be used; str() names the file, the line and the reason."""


@dataclass(frozen=True)
class RuleMeta:
    """A rule file's header."""
    id: str
    title: str
    severity: str
    version: int
    technique: str
    path: str
    description: str = ""


@dataclass(frozen=True)
class Rule:
    """A rule file: its header, its text and its checked query."""
    meta: RuleMeta
    text: str
    checked: Checked


# Parsed rules are immutable, and a run parses each rule file twice (the start-up check, then the
# detector): the second parse of the same text is a lookup instead of ~15 ms of LALR parsing per file.
@lru_cache(maxsize=256)
def parse_rule(text: str, path: str, require_id: bool = True, groups: AddressGroups = DEFAULT_GROUPS) -> Rule:
    """A rule file's text; with ``require_id`` False (a query to hunt) the header is optional.
    ``groups``: the configuration's address groups, which ``in $group`` reads."""
    header: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _HEADER.match(line)
        if not match:
            break
        key = match.group(1).lower()
        if key not in _KEYS:
            raise RuleError(f"{path}:{number}: unknown header key {key!r} (keys: {', '.join(_KEYS)})")
        header[key] = match.group(2)
    if not require_id:
        header.setdefault("id", Path(path).stem)
    if not header.get("id"):
        raise RuleError(f"{path}:1: the header has no '// id: <rule name>' line")
    severity = header.get("severity", "medium").lower()
    if severity not in SEVERITIES:
        raise RuleError(f"{path}: severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    try:
        version = int(header.get("version", "1"))
    except ValueError:
        raise RuleError(f"{path}: version must be a whole number, not {header['version']!r}") from None
    try:
        checked = check(parse(text), groups)      # header lines are XQL comments: line numbers stay the file's
    except XqlError as e:
        raise RuleError(f"{path}: {e}") from None
    meta = RuleMeta(id=header["id"], title=header.get("title", header["id"]), severity=severity, version=version,
                    technique=header.get("technique", ""), path=path, description=header.get("description", ""))
    return Rule(meta, text, checked)


def load_rule(path: str | Path, groups: AddressGroups = DEFAULT_GROUPS) -> Rule:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RuleError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
    return parse_rule(text, str(path), groups=groups)


def load_rules(sources, groups: AddressGroups = DEFAULT_GROUPS) -> list[Rule]:
    """Rule files and directories (their *.xql files, sorted); one bad file refuses them all."""
    rules: list[Rule] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            rules += [load_rule(p, groups) for p in sorted(source.glob("*.xql"))]
        elif source.exists():
            rules.append(load_rule(source, groups))
        else:
            raise RuleError(f"{source}: no such rule file or directory")
    return unique(rules)


def unique(rules: list[Rule]) -> list[Rule]:
    """The rules, refused when two share an id (alerts and the store know a rule by its id)."""
    seen: dict[str, str] = {}
    for rule in rules:
        if rule.meta.id in seen:
            raise RuleError(f"{rule.meta.path}: rule id {rule.meta.id!r} is already used by {seen[rule.meta.id]}")
        seen[rule.meta.id] = rule.meta.path
    return rules


# -- the rarity shape --------------------------------------------------------------------------
@dataclass(frozen=True)
class RarityPlan:
    """What the streaming detector runs for one rule: the per-event stages, the key, the day."""
    rule: Rule
    per_event: tuple            # alter / filter / fields stages, in query order
    keys: tuple                 # the comp's by fields
    day_field: str              # the count_distinct field
    count_alias: str
    threshold: int              # alert while the distinct days are fewer than this
    case_sensitive: bool

    def __post_init__(self):
        # The stages as Python functions of a record, compiled once (frozen: set past __setattr__).
        steps = []
        for stage in self.per_event:
            if isinstance(stage, ast.Filter):
                steps.append((ast.Filter, compile_expression(stage.condition, self.case_sensitive)))
            elif isinstance(stage, ast.Alter):
                steps.append((ast.Alter, [(name, compile_expression(e, self.case_sensitive))
                                          for name, e, _ in stage.assignments]))
            else:
                steps.append((ast.Fields, [(name, alias or name) for name, alias, _ in stage.items]))
        object.__setattr__(self, "_steps", tuple(steps))

    def event_row(self, row: dict, filters: bool = True) -> dict | None:
        """The event through the per-event stages; None when a filter drops it."""
        for kind, step in self._steps:
            if kind is ast.Filter:
                if filters and step(row) is not True:
                    return None
            elif kind is ast.Alter:
                row = dict(row)
                for name, expression in step:
                    row[name] = expression(row)
            else:
                row = {alias: row.get(name) for name, alias in step} | {TIME_FIELD: row[TIME_FIELD]}
        return row

    def day_value(self, ts_ms: int):
        """The day expression at a time (it reads only _time: checked when planned)."""
        return self.event_row({TIME_FIELD: ts_ms, "event_timestamp": ts_ms}, filters=False).get(self.day_field)


SHAPE = ("[alter ...] | filter <predicate on one event> | [fields ...] | "
         "comp count_distinct(<day field>) as N by <keys> | filter N < K")


def _refuse(rule: Rule, why: str, pos: ast.Pos | None = None) -> RuleError:
    where = f":{pos.line}:{pos.column}" if pos else ""
    return RuleError(f"{rule.meta.path}{where}: not a streaming rule: {why} (the shape is: {SHAPE}); "
                     f"it can still be run with `dfs-sensor hunt --xql`")


def rarity_plan(rule: Rule) -> RarityPlan:
    stages = rule.checked.stages
    comps = [i for i, s in enumerate(stages) if isinstance(s, ast.Comp)]
    if len(comps) != 1:
        raise _refuse(rule, "it needs exactly one comp stage" if not comps else "it has more than one comp")
    at = comps[0]
    comp = stages[at]
    for stage in stages[:at]:
        if not isinstance(stage, (ast.Alter, ast.Filter, ast.Fields)):
            raise _refuse(rule, f"{type(stage).__name__.lower()} before comp looks at more than one event",
                          stage.pos)
    if len(comp.aggregates) != 1 or comp.aggregates[0].function != "count_distinct":
        raise _refuse(rule, "the comp must compute one count_distinct(<day field>)", comp.pos)
    if not comp.by:
        raise _refuse(rule, "the comp needs a by list (the key)", comp.pos)
    after = stages[at + 1:]
    alias = comp.aggregates[0].alias
    threshold = _threshold(after, alias)
    if threshold is None:
        raise _refuse(rule, f"after comp it must end with exactly `filter {alias} < K` (K a whole number)",
                      after[0].pos if after else comp.pos)
    plan = RarityPlan(rule, _filters_first(stages[:at]), tuple(n for n, _ in comp.by), comp.aggregates[0].field,
                      alias, threshold, rule.checked.case_sensitive)
    _check_day(plan, comp.aggregates[0].pos)
    return plan


def _filters_first(stages) -> tuple:
    """Each filter moved before the alters whose fields it does not read: alters only add
    fields (a failing function is null, never an error), so the rows kept are the same, and
    an event the filter drops costs no alter. The published query alters first, then filters;
    most events are not DFSNM root calls."""
    out: list = []
    for stage in stages:
        at = len(out)
        if isinstance(stage, ast.Filter):
            read = ast.reads(stage.condition)
            while at and isinstance(out[at - 1], ast.Alter) and not read & {n for n, _, _ in out[at - 1].assignments}:
                at -= 1
        out.insert(at, stage)
    return tuple(out)


def _threshold(after: tuple, alias: str) -> int | None:
    if len(after) != 1 or not isinstance(after[0], ast.Filter):
        return None
    condition = after[0].condition
    if (isinstance(condition, ast.Compare) and condition.op in ("<", "<=")
            and isinstance(condition.left, ast.Field) and condition.left.name == alias
            and isinstance(condition.right, ast.Literal) and type(condition.right.value) is int):
        return condition.right.value + (1 if condition.op == "<=" else 0)
    return None


# Instants the day expression is tried at: it must give one value per UTC day, different days
# in different months (the store keeps the UTC dates a key was seen, not its events).
_PROBE_DATES = ("2024-02-28", "2024-02-29", "2026-01-05", "2026-06-30", "2026-12-31")
_PROBE_TIMES = (timedelta(0), timedelta(hours=11, minutes=59, seconds=59), timedelta(hours=23, minutes=59, seconds=59,
                                                                                      milliseconds=999))


def _check_day(plan: RarityPlan, pos: ast.Pos) -> None:
    """The count_distinct field must be a function of _time alone with one value per UTC day."""
    reads = _day_reads(plan)
    if reads - {TIME_FIELD, "event_timestamp"}:
        raise _refuse(plan.rule, f"count_distinct({plan.day_field}) must depend on _time only, not on "
                                 f"{', '.join(sorted(reads - {TIME_FIELD, 'event_timestamp'}))}", pos)
    for day in _PROBE_DATES:
        midnight = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
        values = {repr(plan.day_value(int((midnight + t).timestamp() * 1000))) for t in _PROBE_TIMES}
        if len(values) != 1:
            raise _refuse(plan.rule, f"count_distinct({plan.day_field}) changes within a UTC day "
                                     "(the store keeps one row per key and UTC day)", pos)


def _day_reads(plan: RarityPlan) -> set[str]:
    """The dataset fields the day field is computed from, through alters and renames."""
    sources: dict[str, set[str]] = {}
    for stage in plan.per_event:
        if isinstance(stage, ast.Alter):
            for name, expression, _ in stage.assignments:
                sources[name] = set().union(*(sources.get(f, {f}) for f in ast.reads(expression)))
        elif isinstance(stage, ast.Fields):
            sources = {alias or name: sources.get(name, {name}) for name, alias, _ in stage.items} | {
                TIME_FIELD: {TIME_FIELD}}
    return sources.get(plan.day_field, {plan.day_field})


def with_day_mode(rule: Rule, mode: str) -> Rule:
    """``utc-date`` reads a day field defined as extract_time(_time, "DAY") as the UTC date
    (format_timestamp("%Y-%m-%d", _time)): the day of the month makes the 5th of January and
    the 5th of February one day. ``day-of-month`` keeps the query as written."""
    if mode == DAY_AS_WRITTEN:
        return rule
    stages = list(rule.checked.stages)
    comp = next((s for s in stages if isinstance(s, ast.Comp)), None)
    if comp is None or len(comp.aggregates) != 1 or comp.aggregates[0].function != "count_distinct":
        return rule
    day = comp.aggregates[0].field
    for i in range(stages.index(comp) - 1, -1, -1):
        stage = stages[i]
        if isinstance(stage, ast.Alter) and any(name == day for name, _, _ in stage.assignments):
            assignments = tuple((name, _as_utc_date(e) if name == day else e, p) for name, e, p in stage.assignments)
            stages[i] = replace(stage, assignments=assignments)
            break
    # The field keeps its name and kind, so the checked schemas still hold.
    return replace(rule, checked=replace(rule.checked, stages=tuple(stages)))


def with_threshold(rule: Rule, threshold: int | None) -> Rule:
    """Replace K in the rule's final ``filter N < K`` (the --threshold option)."""
    last = rule.checked.stages[-1] if rule.checked.stages else None
    if threshold is None or not isinstance(last, ast.Filter) or not isinstance(last.condition, ast.Compare):
        return rule
    condition = last.condition
    if condition.op != "<" or not isinstance(condition.right, ast.Literal):
        return rule
    new_last = replace(last, condition=replace(condition, right=replace(condition.right, value=threshold)))
    return replace(rule, checked=replace(rule.checked, stages=rule.checked.stages[:-1] + (new_last,)))


def _as_utc_date(node):
    if (isinstance(node, ast.Call) and node.name == "extract_time" and len(node.args) == 2
            and isinstance(node.args[0], ast.Field) and node.args[0].name == TIME_FIELD
            and isinstance(node.args[1], ast.Literal) and str(node.args[1].value).upper() == "DAY"):
        return ast.Call("format_timestamp", (ast.Literal("%Y-%m-%d", node.pos), node.args[0]), node.pos)
    return node
