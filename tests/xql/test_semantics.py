"""XQL semantics: each test is a small query over a small real store, with the rows the Cortex
XQL documentation says it returns. Every query made of alter/filter/fields stages is also run
through the streaming evaluator on each event: it must give exactly the rows SQL gives."""
from __future__ import annotations

import pytest

from rarity_events import rpc_event, ts_of
from sensor.xql.check import check
from sensor.xql import ast
from sensor.xql.parser import parse
from sensor.xql.rules import RarityPlan
from sensor.xql.sql import compile_query, rows
from sensor.store import open_store
from sensor.store.sqlite import ListFilter

EVENTS = [
    # (ts, client, server, opnum, relay, share, user)
    (ts_of("2026-01-05", 1), "10.0.0.5", "DC01", 12, "\\\\10.0.0.66\\x", "share", "alice"),
    (ts_of("2026-02-05", 2), "10.0.0.5", "dc01", 13, "attacker.lab", None, "Bob"),
    (ts_of("2026-02-06", 3), "10.0.0.6", "DC02", 13, None, None, "carol"),
    (ts_of("2026-03-07", 23, 59), "10.0.0.7", "DC02", 14, "10.0.0.66", "test", "alice"),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request, tmp_path_factory):
    """The same events in a SQLite file and in a real PostgreSQL: every query must give the
    same rows on both (the compiler's two dialects)."""
    if request.param == "sqlite":
        store = open_store(str(tmp_path_factory.mktemp("xql") / "s.db"))
    else:
        store = open_store(request.getfixturevalue("postgres").create_database("xql_semantics"))
    with store.transaction():
        for n, (ts, client, server, opnum, relay, share, user) in enumerate(EVENTS):
            store.add_event(rpc_event(ts, call_id=n, client=client, server=server, opnum=opnum,
                                      relay=relay, share=share, user=user))
    yield store
    store.close()


def run(store, text):
    """The query's rows from SQL; a query of alter/filter/fields stages only is also run per
    event in Python (the streaming evaluator), which must give the same rows."""
    checked = check(parse(text))
    found = rows(store, compile_query(checked, 0, 10**15, store.XQL_DIALECT))
    if all(isinstance(s, (ast.Alter, ast.Filter, ast.Fields)) for s in checked.stages):
        plan = RarityPlan(None, checked.stages, (), "", "", 0, checked.case_sensitive)
        shown = [c for c in checked.final if c not in checked.hidden and checked.final[c] != "time"]
        per_event = [plan.event_row(event_row_of(record)) for record in store.events(ListFilter(limit=100))]
        python = [{c: row[c] for c in shown} for row in per_event if row is not None]
        assert sorted(map(repr, python)) == sorted(repr({c: r[c] for c in shown}) for r in found), \
            "SQL and the streaming evaluator disagree"
    return found


def event_row_of(record: dict) -> dict:
    row = {k: int(v) if isinstance(v, bool) else v for k, v in record.items()}
    return dict(row, _time=record["event_timestamp"])


def clients(store, text):
    return sorted(r["actor_remote_ip"] for r in run(store, text + " | fields actor_remote_ip"))


# -- null handling ("How to filter for empty values": = null / != null test for a missing value)
def test_equals_null_finds_missing_values(store):
    assert clients(store, 'alter r = json_extract_scalar(action_rpc_func_str_call_fields, "$.RootShare") '
                          '| filter r = null') == ["10.0.0.5", "10.0.0.6"]


def test_not_equals_null_excludes_missing_values(store):
    assert clients(store, 'alter r = json_extract_scalar(action_rpc_func_str_call_fields, "$.RootShare") '
                          '| filter r != null') == ["10.0.0.5", "10.0.0.7"]


def test_a_comparison_with_a_missing_value_is_not_true_either_way(store):
    text = 'alter r = json_extract_scalar(action_rpc_func_str_call_fields, "$.RootShare") | filter r {} "share"'
    assert clients(store, text.format("=")) == ["10.0.0.5"]
    assert clients(store, text.format("!=")) == ["10.0.0.7"]        # the null rows are in neither


def test_null_literal_is_case_insensitive_keyword(store):
    assert clients(store, 'alter r = json_extract_scalar(action_rpc_func_str_call_fields, "$.ServerName") '
                          '| filter r = NULL') == ["10.0.0.6"]


# -- in / not in (Supported operators: IN, NOT IN, wildcards in string options)
def test_in_list_of_integers(store):
    assert clients(store, "filter action_rpc_func_opnum in (12, 14)") == ["10.0.0.5", "10.0.0.7"]


def test_not_in_list(store):
    assert clients(store, "filter action_rpc_func_opnum not in (12, 14)") == ["10.0.0.5", "10.0.0.6"]


def test_in_list_with_a_wildcard(store):
    assert clients(store, 'filter agent_hostname in ("*02")') == ["10.0.0.6", "10.0.0.7"]


def test_in_list_with_null_matches_a_missing_value(store):
    text = ('alter r = json_extract_scalar(action_rpc_func_str_call_fields, "$.ServerName") '
            '| filter r in (null, "attacker.lab")')
    assert clients(store, text) == ["10.0.0.5", "10.0.0.6"]


# -- case sensitivity (config case_sensitive: default false, case not considered)
def test_values_compare_without_case_by_default(store):
    assert clients(store, 'filter agent_hostname = "dc01"') == ["10.0.0.5", "10.0.0.5"]


def test_config_case_sensitive_true(store):
    assert clients(store, 'config case_sensitive = true | filter agent_hostname = "dc01"') == ["10.0.0.5"]


def test_contains_follows_case_sensitivity(store):
    assert clients(store, 'filter net_smb_user contains "BO"') == ["10.0.0.5"]
    assert clients(store, 'config case_sensitive = true | filter net_smb_user contains "BO"') == []


def test_not_contains(store):
    assert clients(store, 'filter net_smb_user not contains "o"') == ["10.0.0.5", "10.0.0.7"]


# -- regex (~=, RE2 syntax; regextract)
def test_regex_match(store):
    assert clients(store, 'filter actor_remote_ip ~= "\\.[67]$"') == ["10.0.0.6", "10.0.0.7"]


def test_regextract_and_arrayindex_pull_a_host_from_a_unc_path(store):
    found = run(store, 'alter host = arrayindex(regextract(json_extract_scalar(action_rpc_func_str_call_fields, '
                       '"$.ServerName"), "^\\\\\\\\([^\\\\]+)"), 0) | filter host != null | fields host')
    assert found == [{"host": "10.0.0.66"}]


def test_split_replace_trim_lowercase_coalesce_if(store):
    found = run(store, 'filter action_rpc_func_opnum = 14 | alter parts = split(actor_remote_ip, "."), '
                       'last = arrayindex(parts, -1), r = replace(agent_hostname, "DC", "dc-"), '
                       't = trim("  x  "), u = uppercase(net_smb_user), c = coalesce(net_rpc_auth_type, 7), '
                       'i = if(action_rpc_func_opnum = 14, "yes", "no"), s = concat(to_string(net_rpc_call_id), "-", '
                       'lowercase(agent_hostname)), n = to_integer("42") '
                       '| fields parts, last, r, t, u, c, i, s, n')
    assert found == [{"parts": ["10", "0", "0", "7"], "last": "7", "r": "dc-02", "t": "x", "u": "ALICE",
                      "c": 7, "i": "yes", "s": "3-dc02", "n": 42}]


# -- comp (several aggregates in one stage; count(field) counts non-null values)
def test_comp_with_several_aggregates(store):
    found = run(store, 'alter r = json_extract_scalar(action_rpc_func_str_call_fields, "$.RootShare") '
                       '| comp count() as n, count(r) as shares, count_distinct(agent_hostname) as hosts, '
                       'min(action_rpc_func_opnum) as lo, max(action_rpc_func_opnum) as hi, '
                       'sum(action_rpc_func_opnum) as total, avg(action_rpc_func_opnum) as mean, '
                       'values(net_smb_user) as users by actor_remote_ip | sort asc actor_remote_ip')
    assert found == [
        {"actor_remote_ip": "10.0.0.5", "n": 2, "shares": 1, "hosts": 2, "lo": 12, "hi": 13, "total": 25,
         "mean": 12.5, "users": ["Bob", "alice"]},
        {"actor_remote_ip": "10.0.0.6", "n": 1, "shares": 0, "hosts": 1, "lo": 13, "hi": 13, "total": 13,
         "mean": 13.0, "users": ["carol"]},
        {"actor_remote_ip": "10.0.0.7", "n": 1, "shares": 1, "hosts": 1, "lo": 14, "hi": 14, "total": 14,
         "mean": 14.0, "users": ["alice"]}]


def test_earliest_and_latest_follow_time(store):
    found = run(store, "comp earliest(agent_hostname) as first, latest(agent_hostname) as last by net_smb_user "
                       "| filter net_smb_user = \"alice\"")
    assert found == [{"net_smb_user": "alice", "first": "DC01", "last": "DC02"}]


# -- dedup (keeps the first or last record by the by field) and sort / limit
def test_dedup_keeps_the_first_record_by_ascending_time(store):
    found = run(store, "fields actor_remote_ip, agent_hostname | dedup actor_remote_ip by asc _time "
                       "| sort asc actor_remote_ip")
    assert [(r["actor_remote_ip"], r["agent_hostname"]) for r in found] == [
        ("10.0.0.5", "DC01"), ("10.0.0.6", "DC02"), ("10.0.0.7", "DC02")]


def test_dedup_keeps_the_last_record_by_descending_time(store):
    found = run(store, "fields actor_remote_ip, agent_hostname | dedup actor_remote_ip by desc _time "
                       "| filter actor_remote_ip = \"10.0.0.5\"")
    assert [r["agent_hostname"] for r in found] == ["dc01"]


def test_sort_then_fields_without_the_sort_field_keeps_the_order(store):
    found = run(store, "sort asc net_smb_user, desc _time | fields actor_remote_ip")
    # sort compares exact values: "Bob" sorts before "alice"; the two alices newest first
    assert [r["actor_remote_ip"] for r in found] == ["10.0.0.5", "10.0.0.7", "10.0.0.5", "10.0.0.6"]


def test_sort_desc_and_limit(store):
    found = run(store, "sort desc _time | limit 2 | fields _time")
    assert [r["_time"][:10] for r in found] == ["2026-03-07", "2026-02-06"]


# -- extract_time parts (GMT), format_timestamp, timestamp_diff
def test_extract_time_parts(store):
    found = run(store, 'filter action_rpc_func_opnum = 14 | alter d = extract_time(_time, "DAY"), '
                       'h = extract_time(_time, "HOUR"), mi = extract_time(_time, "MINUTE"), '
                       'mo = extract_time(_time, "MONTH"), y = extract_time(_time, "YEAR"), '
                       'w = extract_time(_time, "DAYOFWEEK"), yd = extract_time(_time, "DAYOFYEAR"), '
                       'q = extract_time(_time, "QUARTER") | fields d, h, mi, mo, y, w, yd, q')
    # 2026-03-07 23:59 UTC is a Saturday (BigQuery DAYOFWEEK: Sunday = 1 .. Saturday = 7)
    assert found == [{"d": 7, "h": 23, "mi": 59, "mo": 3, "y": 2026, "w": 7, "yd": 66, "q": 1}]


def test_day_of_month_makes_two_months_one_day(store):
    found = run(store, 'alter day = extract_time(_time, "DAY") | comp count_distinct(day) as days, count() as n '
                       'by actor_remote_ip | filter actor_remote_ip = "10.0.0.5"')
    assert found == [{"actor_remote_ip": "10.0.0.5", "days": 1, "n": 2}]     # Jan 5 and Feb 5


def test_format_timestamp_and_timestamp_diff(store):
    found = run(store, 'filter action_rpc_func_opnum = 12 | alter d = format_timestamp("%Y-%m-%d", _time), '
                       'later = timestamp_diff(_time, 1767225600000, "DAY") | fields d, later')
    assert found == [{"d": "2026-01-05", "later": 4}]          # 2026-01-01T00:00Z + 4 whole days


def test_enum_constant_for_event_type(store):
    assert len(run(store, "filter event_type = ENUM.RPC_CALL")) == 4


def test_json_extract_keeps_json(store):
    found = run(store, 'filter action_rpc_func_opnum = 12 | alter j = json_extract(action_rpc_func_str_call_fields, '
                       '"$.RootShare") | fields j')
    assert found == [{"j": '"share"'}]


def test_a_function_that_cannot_take_its_values_is_null(store):
    """A part name read from a field, an index that is not a number: null, never an error
    (the streaming detector runs this on every event)."""
    found = run(store, 'filter action_rpc_func_opnum = 12 | alter p = extract_time(_time, agent_hostname), '
                       'i = arrayindex(split(actor_remote_ip, "."), agent_hostname), '
                       'ok = extract_time(_time, lowercase("day")) | fields p, i, ok')
    assert found == [{"p": None, "i": None, "ok": 5}]
