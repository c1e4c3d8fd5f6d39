"""The alert envelope (sensor/alerts.py): every shipped capture's alerts and events match the
shipped schemas, what is streamed is what `alerts`/`events --format json` return, alert ids
are stable across replays and sensors, and --events writes only new events."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.schema_check import check
from sensor.alerts import AlertEnvelope, Flow, RuleMeta, iso_utc, make_alert_id

ROOT = Path(__file__).resolve().parents[1]
# The lab's DFSCoerce captures and the coercion family's (PetitPotam, PrinterBug, ...).
PCAPS = sorted((ROOT / "pcaps").glob("*.pcap")) + sorted((ROOT / "pcaps" / "family").glob("*.pcap"))
DFS_SENSOR = str(ROOT / ".venv" / "bin" / "dfs-sensor")
COERCION = ("coercion-confirmed", "probable-coercion", "probable-dfscoerce-encrypted")
# The family's XQL rules (sensor/rules/family), each with a capture that raises it.
FAMILY = ("dfscoerce-rare-dfsnm-other-call", "coercion-rare-efsr-call", "coercion-rare-even-call",
          "coercion-rare-fsrvp-call", "coercion-rare-par-call", "coercion-rare-rprn-call")


def run(*args) -> str:
    return subprocess.run([DFS_SENSOR, *map(str, args)], capture_output=True, text=True, check=True).stdout


def canonical(line: str) -> str:
    return json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"))


def replay_each(db: Path, sensor: str, *options) -> list[str]:
    """Replay every shipped capture into ``db``, one run each; the alert lines on stdout."""
    return [line for pcap in PCAPS
            for line in run("replay", "--db", db, "--sensor-name", sensor, *options, pcap).splitlines()]


@pytest.fixture(scope="module")
def every_capture(tmp_path_factory):
    """Every shipped capture replayed into one store, one replay each (the lab recorded them
    seconds apart: in one run the correlator would link one capture's call to another's
    back-authentication): (dir, streamed alerts, streamed events)."""
    tmp = tmp_path_factory.mktemp("all")
    replay_each(tmp / "s.db", "sensor-a", "--events", tmp / "events.jsonl", "--alerts", tmp / "alerts.jsonl")
    return tmp, (tmp / "alerts.jsonl").read_text().splitlines(), (tmp / "events.jsonl").read_text().splitlines()


def test_every_alert_and_event_of_every_capture_matches_the_schema(every_capture):
    _, alerts, events = every_capture
    records = [check("alert", line) for line in alerts]
    for line in events:
        assert check("event", line)["sensor"] == "sensor-a"
    rules = {a["rule"]["id"] for a in records}
    assert rules == {"dfscoerce-rare-dfsnm-root-call", *COERCION, *FAMILY}     # every rule fired somewhere
    assert all(a["sensor"] == "sensor-a" and a["event_type"] == "alert" for a in records)
    assert len({a["alert_id"] for a in records}) == len(records)
    for alert in records:
        assert "" not in [v for v in alert.values() if not isinstance(v, (dict, list))]
        if alert["rule"]["id"] == "coercion-confirmed":
            # the inbound call's flow and the back-authentication's, both as community ids
            assert len(alert["community_id"]) == 2 and alert["victim_name"] == "DC01"
            assert (alert["src_ip"], alert["dest_ip"]) == (alert["client_ip"], alert["victim_ip"])


def test_streamed_and_stored_alerts_and_events_are_the_same_records(every_capture):
    tmp, alerts, events = every_capture
    listed = run("alerts", "--db", tmp / "s.db", "--format", "json", "--limit", 10_000).splitlines()
    assert sorted(map(canonical, listed)) == sorted(map(canonical, alerts))
    assert sorted(listed) == sorted(alerts)            # byte for byte, even before key ordering
    stored = run("events", "--db", tmp / "s.db", "--format", "json", "--limit", 1_000_000).splitlines()
    assert sorted(map(canonical, stored)) == sorted(map(canonical, events))


def test_a_second_replay_writes_no_event_and_no_alert_again(every_capture, tmp_path):
    tmp, alerts, events = every_capture
    again = tmp_path / "events.jsonl"
    out = run("replay", "--db", tmp / "s.db", "--sensor-name", "sensor-a", "--events", again, *PCAPS)
    assert out == "" and again.read_text() == ""


def test_alert_ids_are_the_same_on_another_sensor_and_store(every_capture, tmp_path):
    _, alerts, _ = every_capture
    other = replay_each(tmp_path / "b.db", "sensor-b")
    ids = {json.loads(line)["alert_id"] for line in alerts}
    assert {json.loads(line)["alert_id"] for line in other} == ids
    assert {json.loads(line)["sensor"] for line in other} == {"sensor-b"}


def test_envelope_of_a_rule_with_its_own_fields():
    rule = RuleMeta("x-rule", "X", "1.2", "low", None)
    envelope = AlertEnvelope(rule, 1764300000.5, ["a", 1], "2025-11-28",
                             (Flow("10.0.0.1", 5000, "10.0.0.2", 445),), "s1", {"who": "", "n": [""]})
    record = check("alert", envelope.to_json())
    assert record["timestamp"] == "2025-11-28T03:20:00.500000Z"
    assert record["who"] is None and record["n"] == [None]         # "" never goes out
    assert record["alert_id"] == make_alert_id("x-rule", ["a", 1], "2025-11-28")
    assert record["alert_id"] != make_alert_id("x-rule", ["a", 1], "2025-11-29")
    with pytest.raises(ValueError, match="overwrite"):
        AlertEnvelope(rule, 0.0, [], "1970-01-01", (), "s", {"src_ip": "x"})


def test_timestamps_keep_microseconds():
    assert iso_utc(0.000001) == "1970-01-01T00:00:00.000001Z"
    assert iso_utc(1764300000.123456) == "2025-11-28T03:20:00.123456Z"


@pytest.mark.parametrize("name", ["alert", "event"])
def test_the_shipped_schemas_are_valid_draft_2020_12(name):
    from jsonschema import Draft202012Validator

    from sensor import schema
    Draft202012Validator.check_schema(schema.load(name))


def test_the_schema_refuses_what_the_envelope_forbids():
    good = json.loads(AlertEnvelope(RuleMeta("r", "R", 1, "low", "T1187"), 0.0, [], "1970-01-01",
                                    (Flow("10.0.0.1", 1, "10.0.0.2", 2),), "s").to_json())
    check("alert", good)
    for broken in (good | {"extra": ""}, good | {"timestamp": "1970-01-01T00:00:00Z"},
                   good | {"src_ip": "10.0.0.300"}, good | {"alert_id": "x"},
                   good | {"rule": good["rule"] | {"severity": "urgent"}}):
        with pytest.raises(AssertionError, match="does not match its schema"):
            check("alert", broken)


def test_later_hits_the_same_day_change_no_record_and_raise_nothing(tmp_path):
    """Two captures of the same two keys on one day: the second run streams no alert (the same
    alert_ids), the stored records stay byte for byte what the first run streamed (hits 1: the
    alert as raised), and the day's count goes on in the detector's state, which the `alerts`
    table shows."""
    db = tmp_path / "s.db"
    first = run("replay", "--db", db, ROOT / "pcaps" / "dfscoerce-smb21.pcap").splitlines()
    assert len(first) == 2 and all(json.loads(line)["hits"] == 1 for line in first)
    assert run("replay", "--db", db, ROOT / "pcaps" / "dfscoerce-smb202.pcap") == ""
    assert sorted(run("alerts", "--db", db, "--format", "json").splitlines()) == sorted(first)
    table = run("alerts", "--db", db).splitlines()
    header = table[0].split()
    rows = [dict(zip(header, line.split())) for line in table[1:]]
    assert sorted(r["alert_id"] for r in rows) == sorted(json.loads(line)["alert_id"] for line in first)
    assert {r["hits"] for r in rows} == {"2"}
    assert all(r["last_seen"].startswith("2026-11-28T04:39:12.") for r in rows)   # the second capture's call
