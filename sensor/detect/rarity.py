"""The streaming rarity detector, compiled from XQL rule files (sensor/xql/rules.py).

A rule of the rarity shape (``[alter] | filter | [fields] | comp count_distinct(day) as N by
<keys> | filter N < K``) runs on each event as it is stored: its alters and filters decide
whether the event counts and compute the key; the UTC dates each key was seen live in the
store (key_days); an event whose key was seen on fewer than K distinct days (the rule's day
expression over the dates in the lookback window, this day included) raises an alert, one per
rule, key and UTC date; later hits that day update it. ``hunt`` runs the same rule in batch
over the stored events with the XQL engine.

The default rule is the Cortex XDR DFSCoerce hunting query (sensor/rules/dfscoerce/).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from sensor.alerts import make_alert_id
from sensor.anomaly import Stats
from sensor.events import RpcCallEvent
from sensor.store.sqlite import AlertListing, Store
from sensor.xql.check import TIME_FIELD
from sensor.xql.functions import utc_date
from sensor.xql.groups import DEFAULT_GROUPS, AddressGroups
from sensor.xql.rules import (DAY_MODES, DAY_UTC_DATE, SHIPPED_RULES, RarityPlan, Rule, RuleMeta, load_rule,
                              load_rules, rarity_plan, unique, with_day_mode, with_threshold)
from sensor.text import json_line

if TYPE_CHECKING:
    from sensor.xql.sql import Compiled

RULE = "dfscoerce-rare-dfsnm-root-call"
DFSCOERCE_RULES = SHIPPED_RULES / "dfscoerce"
# The rest of the coercion family (one rule per technique, DFSNM beyond 12/13): always run.
FAMILY_RULES = SHIPPED_RULES / "family"
MATCH_ROOT_OPNUMS = "opnum-12-13"    # both root calls: the published query without its name filter
MATCH_SEED_EXACT = "seed-exact"      # the published query verbatim
MATCH_MODES = (MATCH_ROOT_OPNUMS, MATCH_SEED_EXACT)
__all__ = ["DAY_MODES", "MATCH_MODES", "RaritySettings", "RarityDetector", "Alert", "hunt", "detector_rules",
           "detector_plans"]

# Event ids an alert lists; a noisy key's hits go on counting past this.
MAX_ALERT_EVENT_IDS = 50
MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class RaritySettings:
    """The detector's settings ([detector] of the configuration)."""
    threshold: int | None = None    # None: each rule's own K ("filter N < K")
    lookback_days: int = 30         # the query's usual time range
    day_mode: str = DAY_UTC_DATE    # how extract_time(_time, "DAY") in a rule's day field is read
    match: str = MATCH_ROOT_OPNUMS  # which shipped DFSCoerce rule file runs
    rules: tuple[str, ...] = ()     # the user's rule files and directories, on top of the shipped ones
    family: bool = True             # the family's shipped rules too (off: DFSCoerce's rule alone)
    groups: AddressGroups = DEFAULT_GROUPS   # [address_groups]: what the rules' `in $group` reads


def detector_rules(settings: RaritySettings) -> list[Rule]:
    """The shipped DFSCoerce rule that ``match`` picks, the family's rules, the user's;
    with the day mode and threshold applied. Raises RuleError naming a bad file."""
    dfscoerce = load_rule(DFSCOERCE_RULES / f"{settings.match}.xql", settings.groups)
    shipped = [FAMILY_RULES] if settings.family else []
    rules = unique([dfscoerce, *load_rules([*shipped, *settings.rules], settings.groups)])
    return [with_threshold(with_day_mode(r, settings.day_mode), settings.threshold) for r in rules]


def detector_plans(settings: RaritySettings) -> list[RarityPlan]:
    """What the streaming detector runs for each of ``detector_rules``; RuleError naming a file
    that is bad or not of the rarity shape (the start-up check, without a store)."""
    rules = detector_rules(settings)
    # A run plans its rules twice (the start-up check, then the detector); plans are immutable
    # and made from the rule texts and these settings alone, so the second is the first's.
    key = (tuple((rule.meta, rule.text) for rule in rules), settings.day_mode, settings.threshold, settings.groups)
    if _last_plans.get("key") != key:
        _last_plans.update(key=key, plans=tuple(rarity_plan(rule) for rule in rules))
    return list(_last_plans["plans"])


_last_plans: dict = {}      # the last settings' plans (detector_plans)


@dataclass(frozen=True)
class Alert:
    """A rarity alert: a key seen on fewer than K distinct days, for one UTC day."""
    meta: RuleMeta
    key: Mapping[str, Any]      # the query's by fields, under their own names
    day: str                    # UTC date (YYYY-MM-DD) the alert is for
    day_count: int              # distinct days the key was seen in the window, this one included
    first_seen: str             # _time of the day's first and last hit
    last_seen: str
    hits: int
    event_ids: tuple[str, ...]
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rule(self) -> str:
        return self.meta.id

    def to_dict(self) -> dict:
        return {"rule": self.meta.id, **self.key, "day": self.day, "day_count": self.day_count,
                "first_seen": self.first_seen, "last_seen": self.last_seen, "hits": self.hits,
                "event_ids": list(self.event_ids), "context": dict(self.context),
                "rule_file": rule_file_name(self.meta.path), "rule_version": self.meta.version}

    def to_json(self) -> str:
        return json_line(self.to_dict())


def rule_file_name(path: str) -> str:
    """Shipped rules by their place in the package (sensor/rules/...), the user's as given."""
    try:
        return "sensor/rules/" + str(Path(path).resolve().relative_to(SHIPPED_RULES))
    except ValueError:
        return path


# The record's fields, and those that are booleans (SQLite stores them as 1/0).
_EVENT_FIELDS = tuple(f.name for f in fields(RpcCallEvent))
_BOOLEAN_FIELDS = tuple(f.name for f in fields(RpcCallEvent) if f.type in ("bool", bool))


def event_row(event: RpcCallEvent) -> dict:
    """The event as an xdr_data record for XQL: _time is a timestamp (epoch ms), and booleans
    are 1/0 as the store's SQL sees them, so streaming and hunting agree."""
    row = {name: getattr(event, name) for name in _EVENT_FIELDS}
    for name in _BOOLEAN_FIELDS:
        row[name] = int(row[name])
    row[TIME_FIELD] = event.event_timestamp
    return row



def triage_context(event: RpcCallEvent) -> dict:
    """What an analyst wants next to the alert, from the day's first hit."""
    return {
        "agent_ip": event.agent_ip,
        "actor_remote_port": event.actor_remote_port,
        "pipe": event.actor_remote_pipe_name,
        "smb_user": event.net_smb_user,
        "smb_domain": event.net_smb_domain,
        "smb_workstation": event.net_smb_workstation,
        "smb_dialect": event.net_smb_dialect,
        "rpc_auth_level": event.net_rpc_auth_level,
        "stub_sealed": event.net_stub_sealed,
        "encrypted": event.net_encrypted,
        "interface_inferred": event.net_interface_inferred,
        "decode_error": event.net_decode_error,
        "exception_code": event.action_rpc_func_exception_code,
        "community_id": event.net_community_id,
        "capture_file": event.net_capture_file,
        "capture_frame": event.net_capture_frame,
    }


def _midnight_ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp() * 1000)


class RarityDetector:
    """Feed it each newly stored event (in a store transaction); it returns new alerts.

    Its state is the store's key_days and alerts tables, so it survives restarts. Raises
    RuleError (naming the file) when a rule is bad or not of the rarity shape."""

    def __init__(self, settings: RaritySettings, store: Store):
        self.settings = settings
        self.store = store
        self.plans: list[RarityPlan] = detector_plans(settings)
        self.stats = Stats()

    def feed(self, event: RpcCallEvent) -> list[Alert]:
        base = event_row(event)
        alerts = []
        for plan in self.plans:
            row = plan.event_row(base)
            if row is not None:
                alert = self._judge(plan, row, event)
                if alert is not None:
                    alerts.append(alert)
        return alerts

    def _judge(self, plan: RarityPlan, row: dict, event: RpcCallEvent) -> Alert | None:
        self.stats["matched"] += 1
        rule = plan.rule.meta.id
        values = {name: row[name] for name in plan.keys}
        key = json.dumps(list(values.values()), separators=(",", ":"), ensure_ascii=False)
        day = utc_date(event.event_timestamp)
        store = self.store
        store.add_key_day(rule, key, day)
        existing = store.alert_record(rule, key, day)
        if existing is not None:
            self._update(rule, existing, key, day, event)
            return None
        first_day = (date.fromisoformat(day) - timedelta(days=self.settings.lookback_days - 1)).isoformat()
        dates = store.key_dates(rule, key, first_day, day)
        day_count = len({repr(plan.day_value(_midnight_ms(d))) for d in dates})
        if day_count >= plan.threshold:
            self.stats["common"] += 1
            return None
        alert = Alert(plan.rule.meta, values, day=day, day_count=day_count, first_seen=event._time,
                      last_seen=event._time, hits=1, event_ids=(event.event_id,), context=triage_context(event))
        store.put_alert(rule, key, day, alert.to_dict(), event.event_timestamp, event.event_timestamp,
                        _listing(event))
        self.stats["alerts"] += 1
        return alert

    def _update(self, rule: str, record: dict, key: str, day: str, event: RpcCallEvent) -> None:
        """A later hit the same day: count it, widen first/last seen (replays may come out
        of order), list its id while there is room."""
        record["hits"] += 1
        record["first_seen"] = min(record["first_seen"], event._time)
        record["last_seen"] = max(record["last_seen"], event._time)
        if len(record["event_ids"]) < MAX_ALERT_EVENT_IDS:
            record["event_ids"].append(event.event_id)
        self.store.put_alert(rule, key, day, record, event.event_timestamp, event.event_timestamp, _listing(event))
        self.stats["alert_updates"] += 1


def later_hits(store: Store) -> dict[str, tuple[int, str]]:
    """alert_id -> (hits, last_seen) of every rarity alert in the detector's state. The alert
    record is the alert as raised and never changes; the day's count goes on here. A state
    row is {"rule", the by fields in the query's order, "day", ...} (Alert.to_dict), the
    same rule, key and day the envelope's alert_id is made of."""
    counts = {}
    for record in store.alerts():
        names = list(record)
        key = [record[name] for name in names[names.index("rule") + 1:names.index("day")]]
        counts[make_alert_id(record["rule"], key, record["day"])] = (record["hits"], record["last_seen"])
    return counts


def _listing(event: RpcCallEvent) -> AlertListing:
    return AlertListing(event.agent_hostname, event.agent_ip, event.actor_remote_ip, event.action_rpc_func_opnum,
                        event.sensor)


def window_query(store: Store, rule: Rule, until_ms: int | None, lookback_days: int) -> Compiled | None:
    """A rule's query over the stored events whose time is in (until - lookback, until];
    until defaults to the newest stored event. None when the store is empty."""
    from sensor.xql.sql import compile_query       # hunt's SQL compiler: not loaded by replay or live

    oldest, newest = store.db.execute("SELECT min(ts_ms), max(ts_ms) FROM events").fetchone()
    if newest is None:
        return None
    until_ms = newest if until_ms is None else until_ms
    start_ms = until_ms - lookback_days * MS_PER_DAY
    # An end of the window beyond the stored events is no condition (see compile_query).
    return compile_query(rule.checked, start_ms if start_ms >= oldest else None,
                         until_ms if until_ms < newest else None, store.XQL_DIALECT)


def run_rule(store: Store, rule: Rule, until_ms: int | None, lookback_days: int) -> list[dict]:
    from sensor.xql.sql import rows

    compiled = window_query(store, rule, until_ms, lookback_days)
    return [] if compiled is None else rows(store, compiled)


def hunt(store: Store, until_ms: int | None, settings: RaritySettings) -> list[dict]:
    """The DFSCoerce rule (the query ``match`` picks, ``day_mode`` and ``threshold`` applied)
    in batch: its rows, the count under the name ``day_count``, sorted by key."""
    rule = next(r for r in detector_rules(replace(settings, rules=())) if r.meta.id == RULE)
    plan = rarity_plan(rule)
    out = []
    for row in run_rule(store, rule, until_ms, settings.lookback_days):
        row["day_count"] = row.pop(plan.count_alias)
        out.append(row)
    return sorted(out, key=lambda r: json.dumps([r[k] for k in plan.keys]))
