"""`hunt` (the XQL engine running the shipped DFSCoerce rule file, with --match, --day-mode
and --threshold applied) returns exactly what the Cortex XDR query returns over the same
stored events.

The oracle below is an independent SQL translation of the query (events.md), line by line,
reading only the stored event records (the xdr_data fields), not the store's key columns:

    | alter day = extract_time(_time, "DAY"),
            dfs_relay_server = json_extract_scalar(action_rpc_func_str_call_fields, "$.ServerName"),
            dfs_root_share = json_extract_scalar(action_rpc_func_str_call_fields, "$.RootShare")
    | filter event_type = 22 and action_rpc_interface_uuid = "{4FC742E0-...}"
             and action_rpc_func_name = "NetrDfsRemoveStdRoot" and action_rpc_func_opnum in (12, 13)
    | comp count_distinct(day) as day_count by <key>
    | filter day_count < 7

over the time range (until - lookback, until]. ``utc-date`` replaces XQL's day of the month
with the calendar date; ``opnum-12-13`` drops the name condition.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from rarity_events import EFSR_UUID, rpc_event, ts_of
from sensor.detect.rarity import RaritySettings, hunt
from sensor.store.sqlite import Store

QUERY = """
WITH xdr_data AS (SELECT
        json_extract(record, '$._time')                 AS _time,
        json_extract(record, '$.event_timestamp')       AS event_timestamp,
        json_extract(record, '$.event_type')            AS event_type,
        json_extract(record, '$.action_rpc_interface_uuid') AS action_rpc_interface_uuid,
        json_extract(record, '$.action_rpc_func_name')  AS action_rpc_func_name,
        json_extract(record, '$.action_rpc_func_opnum') AS action_rpc_func_opnum,
        json_extract(record, '$.action_rpc_func_str_call_fields') AS action_rpc_func_str_call_fields,
        json_extract(record, '$.actor_type')            AS actor_type,
        json_extract(record, '$.agent_hostname')        AS agent_hostname,
        json_extract(record, '$.agent_id')              AS agent_id,
        json_extract(record, '$.actor_remote_ip')       AS actor_remote_ip
    FROM events),
altered AS (SELECT *,
        {day} AS day,
        json_extract(action_rpc_func_str_call_fields, '$.ServerName') AS dfs_relay_server,
        json_extract(action_rpc_func_str_call_fields, '$.RootShare') AS dfs_root_share
    FROM xdr_data
    WHERE event_timestamp > :start AND event_timestamp <= :until)
SELECT actor_type, action_rpc_func_name, action_rpc_func_opnum, agent_hostname, agent_id,
       actor_remote_ip, dfs_relay_server, dfs_root_share, count(DISTINCT day) AS day_count_dfrpc_src_dst_func
FROM altered
WHERE event_type = 22 AND action_rpc_interface_uuid = '{{4FC742E0-4A10-11CF-8273-00AA004AE673}}'
      {name_filter} AND action_rpc_func_opnum IN (12, 13)
GROUP BY actor_type, action_rpc_func_name, action_rpc_func_opnum, agent_hostname, agent_id,
         actor_remote_ip, dfs_relay_server, dfs_root_share
HAVING day_count_dfrpc_src_dst_func < :threshold
"""
DAY_EXPRESSIONS = {
    "day-of-month": "CAST(substr(_time, 9, 2) AS INTEGER)",    # extract_time(_time, "DAY"), GMT
    "utc-date": "substr(_time, 1, 10)",
}
MS_PER_DAY = 86_400_000


def query_rows(store: Store, until_ms: int, s: RaritySettings) -> list[tuple]:
    sql = QUERY.format(day=DAY_EXPRESSIONS[s.day_mode],
                       name_filter="AND action_rpc_func_name = 'NetrDfsRemoveStdRoot'"
                       if s.match == "seed-exact" else "")
    rows = store.db.execute(sql, {"start": until_ms - s.lookback_days * MS_PER_DAY, "until": until_ms,
                                  "threshold": s.threshold or 7}).fetchall()
    return sorted(rows, key=repr)


def hunt_rows(store: Store, until_ms: int | None, s: RaritySettings) -> list[tuple]:
    return sorted((tuple(r.values()) for r in hunt(store, until_ms, s)), key=repr)


CLIENTS = ["10.0.0.5", "10.0.0.6", "fe80::5"]
SERVERS = [("DC01", "10.0.0.10"), ("DC02", "10.0.0.11")]
RELAYS = ["10.0.0.66", "attacker.lab", None]
START = ts_of("2026-01-20", 0)
SPAN_DAYS = 100    # crosses three month ends, so day-of-month numbers repeat


def random_events(rng: random.Random, n: int) -> list:
    events = []
    for i in range(n):
        server, server_ip = rng.choice(SERVERS)
        kind = rng.random()
        events.append(rpc_event(
            START + rng.uniform(0, SPAN_DAYS * 86400), call_id=i,
            client=rng.choice(CLIENTS), server=server, server_ip=server_ip,
            opnum=rng.choice([12, 13, 13, 14]),
            name="NetrDfsRemoveStdRoot" if kind < 0.05 else None,     # a name that disagrees with its opnum
            relay=rng.choice(RELAYS), share=rng.choice(["test", "share", None]),
            uuid=EFSR_UUID if kind > 0.95 else "{4FC742E0-4A10-11CF-8273-00AA004AE673}",
            event_type=21 if 0.9 < kind <= 0.95 else 22,
            actor_type=rng.choice([2, 2, 4]),
            fields="{}" if 0.05 <= kind < 0.08 else None))             # sealed stub: no arguments
    return events


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = Store(str(tmp_path_factory.mktemp("hunt") / "s.db"))
    with store.transaction():
        for event in random_events(random.Random(4), 3000):
            store.add_event(event)
    yield store
    store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(day_mode=st.sampled_from(["utc-date", "day-of-month"]),
       match=st.sampled_from(["opnum-12-13", "seed-exact"]),
       threshold=st.integers(1, 40), lookback_days=st.integers(1, 120),
       until_day=st.one_of(st.none(), st.floats(0, SPAN_DAYS + 5)))
def test_hunt_equals_the_query(store, day_mode, match, threshold, lookback_days, until_day):
    s = RaritySettings(threshold=threshold, lookback_days=lookback_days, day_mode=day_mode, match=match)
    until_ms = store.newest_event_ms() if until_day is None else int((START + until_day * 86400) * 1000)
    expected = query_rows(store, until_ms, s)
    assert hunt_rows(store, None if until_day is None else until_ms, s) == expected


def test_the_comparison_has_teeth(store):
    """Over this data the settings change the answer, so equality above is not vacuous."""
    newest = store.newest_event_ms()
    answers = {(dm, m): query_rows(store, newest, RaritySettings(day_mode=dm, match=m, lookback_days=60))
               for dm in ("utc-date", "day-of-month") for m in ("opnum-12-13", "seed-exact")}
    assert all(answers.values())
    assert len({repr(a) for a in answers.values()}) == 4
    # with a 60-day window day numbers repeat: day-of-month counts fewer days for some group
    by_date = {r[:8]: r[8] for r in query_rows(store, newest, RaritySettings(threshold=99, lookback_days=60))}
    by_dom = {r[:8]: r[8] for r in query_rows(store, newest, RaritySettings(threshold=99, lookback_days=60,
                                                                              day_mode="day-of-month"))}
    assert any(by_dom[k] < by_date[k] for k in by_date)


def test_window_edges_match_the_query(tmp_path):
    """(until - lookback, until]: an event exactly at the start is out, one exactly at until is in."""
    s = RaritySettings(lookback_days=2)
    until = ts_of("2026-03-10", 6)
    store = Store(str(tmp_path / "s.db"))
    with store.transaction():
        for ts, client in ((until - 2 * 86400, "10.0.0.1"), (until - 2 * 86400 + 0.001, "10.0.0.2"),
                           (until, "10.0.0.3"), (until + 0.001, "10.0.0.4")):
            store.add_event(rpc_event(ts, client=client))
    rows = hunt_rows(store, int(until * 1000), s)
    assert rows == query_rows(store, int(until * 1000), s)
    assert [r[5] for r in rows] == ["10.0.0.2", "10.0.0.3"]
    store.close()
