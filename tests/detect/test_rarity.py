"""The streaming rarity detector: distinct days per key, one alert per key per day, state in the store."""
from __future__ import annotations

import json
import random
from datetime import date, timedelta

import pytest
from hypothesis import settings, strategies as st, given

from rarity_events import EFSR_UUID, rpc_event, ts_of
from sensor.detect.rarity import MAX_ALERT_EVENT_IDS, RULE, RarityDetector, RaritySettings, event_row
from sensor.store.sqlite import Store
from test_hunt_equals_query import random_events
from rarity_oracle import comparable, expected_alerts


def days_from(start: str, n: int) -> list[str]:
    first = date.fromisoformat(start)
    return [(first + timedelta(days=i)).isoformat() for i in range(n)]


class Run:
    """Store + detector, fed the way the Sensor feeds them: new events only, in a transaction."""

    def __init__(self, path, settings: RaritySettings = RaritySettings(family=False)):
        self.store = Store(str(path))
        self.detector = RarityDetector(settings, self.store)

    def feed(self, event):
        with self.store.transaction():
            return self.detector.feed(event) if self.store.add_event(event) else []

    def close(self):
        self.store.close()


@pytest.fixture
def run(tmp_path):
    r = Run(tmp_path / "s.db")
    yield r
    r.close()


def test_first_six_distinct_days_alert_and_the_seventh_does_not(run):
    alerts = [run.feed(rpc_event(ts_of(day))) for day in days_from("2026-11-01", 8)]
    assert [len(a) for a in alerts] == [1, 1, 1, 1, 1, 1, 0, 0]
    assert [a[0].day_count for a in alerts[:6]] == [1, 2, 3, 4, 5, 6]
    assert [a[0].day for a in alerts[:6]] == days_from("2026-11-01", 6)


def test_one_alert_per_key_per_day_and_later_hits_update_it(run):
    first = rpc_event(ts_of("2026-11-03", 1), call_id=1)
    [alert] = run.feed(first)
    assert alert.hits == 1 and alert.event_ids == (first.event_id,)
    later = [rpc_event(ts_of("2026-11-03", 1, m), call_id=m) for m in range(2, 5)]
    assert all(run.feed(e) == [] for e in later)
    [stored] = run.store.alerts()
    assert stored["hits"] == 4
    assert stored["first_seen"] == first._time and stored["last_seen"] == later[-1]._time
    assert stored["event_ids"] == [first.event_id] + [e.event_id for e in later]
    assert stored["day_count"] == 1


def test_alert_event_ids_are_bounded_but_hits_keep_counting(run):
    for n in range(MAX_ALERT_EVENT_IDS + 10):
        run.feed(rpc_event(ts_of("2026-11-03") + n, call_id=n))
    [stored] = run.store.alerts()
    assert stored["hits"] == MAX_ALERT_EVENT_IDS + 10
    assert len(stored["event_ids"]) == MAX_ALERT_EVENT_IDS


def test_the_same_event_twice_changes_nothing(run):
    event = rpc_event(ts_of("2026-11-03"))
    assert len(run.feed(event)) == 1
    assert run.feed(event) == []
    [stored] = run.store.alerts()
    assert stored["hits"] == 1


def test_each_key_field_makes_its_own_key(run):
    base = ts_of("2026-11-03")
    variants = [rpc_event(base), rpc_event(base + 1, client="10.0.0.6"), rpc_event(base + 2, server="DC02"),
                rpc_event(base + 3, relay="10.9.9.9"), rpc_event(base + 4, share="other"),
                rpc_event(base + 5, opnum=12), rpc_event(base + 6, actor_type=4),
                rpc_event(base + 7, relay=None, share=None)]
    assert all(len(run.feed(e)) == 1 for e in variants)
    # user, port and capture file are context, not key: same key, same day, no new alert
    assert run.feed(rpc_event(base + 8, user="bob")) == []


def test_restart_keeps_the_day_count(tmp_path):
    days = days_from("2026-11-01", 8)
    first = Run(tmp_path / "s.db")
    assert all(len(first.feed(rpc_event(ts_of(d)))) == 1 for d in days[:4])
    first.close()
    second = Run(tmp_path / "s.db")
    assert [a[0].day_count for a in (second.feed(rpc_event(ts_of(d))) for d in days[4:6])] == [5, 6]
    assert second.feed(rpc_event(ts_of(days[6]))) == []
    second.close()


def test_days_before_the_window_do_not_count(tmp_path):
    run = Run(tmp_path / "s.db", RaritySettings(threshold=3, lookback_days=10, family=False))
    for day in days_from("2026-01-01", 3):
        run.feed(rpc_event(ts_of(day)))
    assert run.feed(rpc_event(ts_of("2026-01-04"))) == []          # 4 days in window: common
    [alert] = run.feed(rpc_event(ts_of("2026-01-13")))              # window Jan 4..13: 2 days
    assert alert.day_count == 2
    run.close()


def test_day_of_month_counts_the_same_day_number_once(tmp_path):
    settings = dict(threshold=7, lookback_days=90)
    dates = ["2026-01-05", "2026-02-05", "2026-03-05", "2026-03-06"]
    by_date = Run(tmp_path / "a.db", RaritySettings(**settings, day_mode="utc-date", family=False))
    by_dom = Run(tmp_path / "b.db", RaritySettings(**settings, day_mode="day-of-month", family=False))
    assert [by_date.feed(rpc_event(ts_of(d)))[0].day_count for d in dates] == [1, 2, 3, 4]
    # XQL DAY: Jan 5, Feb 5 and Mar 5 are all day 5; still one alert per calendar date
    assert [by_dom.feed(rpc_event(ts_of(d)))[0].day_count for d in dates] == [1, 1, 1, 2]
    by_date.close()
    by_dom.close()


@pytest.mark.parametrize("kwargs, default, seed_exact", [
    (dict(opnum=13), True, True),
    (dict(opnum=12), True, False),
    (dict(opnum=12, name="NetrDfsRemoveStdRoot"), True, True),   # the literal filter reads the name
    (dict(opnum=14), False, False),
    (dict(opnum=13, uuid=EFSR_UUID), False, False),
    # XQL compares values case-insensitively unless the query says config case_sensitive = true
    (dict(opnum=13, uuid="{4fc742e0-4a10-11cf-8273-00aa004ae673}"), True, True),
    (dict(opnum=13, event_type=21), False, False),
])
def test_match_modes(kwargs, default, seed_exact):
    row = event_row(rpc_event(ts_of("2026-11-03"), **kwargs))
    for match, expected in (("opnum-12-13", default), ("seed-exact", seed_exact)):
        [plan] = RarityDetector(RaritySettings(match=match, family=False), Store(":memory:")).plans
        assert (plan.event_row(row) is not None) is expected


def test_unmatched_events_are_stored_but_never_alert(run):
    assert run.feed(rpc_event(ts_of("2026-11-03"), opnum=14)) == []
    assert len(run.store.events()) == 1 and run.store.alerts() == []


def test_alert_json_has_the_key_counts_and_triage_context(run):
    event = rpc_event(ts_of("2026-11-03"), user="mallory", capture_file="x.pcap")
    [alert] = run.feed(event)
    record = json.loads(alert.to_json())
    assert record["rule"] == RULE
    assert {k: record[k] for k in ("actor_type", "action_rpc_func_name", "action_rpc_func_opnum",
                                    "agent_hostname", "agent_id", "actor_remote_ip",
                                    "dfs_relay_server", "dfs_root_share")} == {
        "actor_type": 2, "action_rpc_func_name": "NetrDfsRemoveStdRoot", "action_rpc_func_opnum": 13,
        "agent_hostname": "DC01", "agent_id": event.agent_id, "actor_remote_ip": "10.0.0.5",
        "dfs_relay_server": "10.0.0.66", "dfs_root_share": "test"}
    assert (record["day"], record["day_count"], record["hits"]) == ("2026-11-03", 1, 1)
    assert record["context"]["smb_user"] == "mallory"
    assert record["context"]["capture_file"] == "x.pcap"
    assert record["context"]["stub_sealed"] is False
    assert (record["rule_file"], record["rule_version"]) == ("sensor/rules/dfscoerce/opnum-12-13.xql", 1)
    assert run.store.alerts()[0] == record


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 150),
       match=st.sampled_from(["opnum-12-13", "seed-exact"]), day_mode=st.sampled_from(["utc-date", "day-of-month"]))
def test_streaming_equals_the_plain_python_oracle_on_generated_days(tmp_path_factory, seed, n, match, day_mode):
    """Generated events over 100 days (month ends, so day-of-month numbers repeat), fed in a
    shuffled order: the alerts are the oracle's (tests/rarity_oracle.py)."""
    events = random_events(random.Random(seed), n)
    random.Random(seed + 1).shuffle(events)
    run = Run(tmp_path_factory.mktemp("gen") / "s.db", RaritySettings(match=match, day_mode=day_mode, family=False))
    alerts = [a.to_dict() for e in events for a in run.feed(e)]
    run.close()
    assert [comparable(a) for a in alerts] == expected_alerts([e.to_dict() for e in events], match, day_mode)
