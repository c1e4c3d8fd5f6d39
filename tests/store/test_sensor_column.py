"""Issue 16, item 1: every row names the sensor that stored it (schema step 5), on SQLite and on
a real PostgreSQL alike: the writer fills it from --sensor-name, `events` and `alerts` filter
on it (--sensor), XQL reads it as a field, `store copy` carries it, and a store of version 4
gets it for the rows it already had from their JSON."""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys

import psycopg
import pytest

from rarity_events import rpc_event, ts_of
from sensor.store import open_store
from sensor.store.migrations import MIGRATIONS, SCHEMA_VERSION
from sensor.store.postgres import _postgres_statement
from sensor.store.sqlite import event_row
from tests.conftest import PCAPS, ROOT

# Two sensors, two captures with different clients (10.0.0.66 over IPv4; the IPv6 one).
SITES = {"dc-site-a": PCAPS / "dfscoerce-smb21.pcap", "dc-site-b": PCAPS / "dfscoerce-ipv6.pcap"}


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "sensor.cli", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def select(target: str, sql: str) -> list[tuple]:
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
    conn = sqlite3.connect(target)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "sensor.db")
    return request.getfixturevalue("pg_url")


def test_every_row_names_the_sensor_that_stored_it(target, tmp_path):
    for name, capture in SITES.items():
        cli("replay", "--db", target, "--sensor-name", name, "--alerts", "/dev/null", str(capture))
    clients = {name: {r[0] for r in select(target, f"SELECT actor_remote_ip FROM events WHERE sensor = '{name}'")}
               for name in SITES}
    assert clients["dc-site-a"] == {"10.0.0.66"} and clients["dc-site-b"] and "10.0.0.66" not in clients["dc-site-b"]
    for table in ("events", "alerts", "alert_records"):
        rows = select(target, f"SELECT sensor, record FROM {table}")
        assert rows and {sensor for sensor, _ in rows} == set(SITES), table
        if table != "alerts":       # the event's and the envelope's JSON say the same
            assert all(json.loads(record)["sensor"] == sensor for sensor, record in rows)

    listed = [json.loads(line) for line in cli("events", "--db", target, "--sensor", "dc-site-b",
                                                "--format", "json").stdout.splitlines()]
    assert listed and {e["sensor"] for e in listed} == {"dc-site-b"}
    assert len(listed) == len(select(target, "SELECT 1 FROM events WHERE sensor = 'dc-site-b'"))
    alerts = [json.loads(line) for line in cli("alerts", "--db", target, "--sensor", "dc-site-a",
                                                "--format", "json").stdout.splitlines()]
    assert alerts and {a["sensor"] for a in alerts} == {"dc-site-a"} and {a["src_ip"] for a in alerts} == {"10.0.0.66"}
    assert cli("events", "--db", target, "--sensor", "nobody", "--format", "json").stdout == ""

    counted = cli("hunt", "--db", target, "--xql", "-", "--format", "json",
                  stdin="comp count() as n by sensor | sort asc sensor").stdout
    assert [json.loads(line) for line in counted.splitlines()] == [
        {"sensor": name, "n": len(select(target, f"SELECT 1 FROM events WHERE sensor = '{name}'"))} for name in SITES]

    copied = str(tmp_path / "copy.db")          # PostgreSQL -> SQLite, or SQLite -> SQLite
    cli("store", "copy", "--from", target, "--to", copied)
    for table in ("events", "alerts", "alert_records"):
        order = "record" if table != "alerts" else "rule, key, day"
        assert select(copied, f"SELECT sensor, record FROM {table} ORDER BY {order}") == \
            select(target, f"SELECT sensor, record FROM {table} ORDER BY {order}")


def test_a_version_4_store_gets_the_sensor_of_the_rows_it_had(target):
    """Step 5 on a store that already held rows: events and envelopes take the sensor their
    JSON names (null where they name none), a rarity alert's state row its first event's."""
    named = dataclasses.replace(rpc_event(ts_of("2026-11-01")), sensor="old-sensor")
    unnamed = rpc_event(ts_of("2026-11-02"), call_id=2)         # from before events named their sensor
    envelope = json.dumps({"alert_id": "a1", "sensor": "old-sensor"})
    postgres = target.startswith("postgresql://")
    mark = "%s" if postgres else "?"
    conn = psycopg.connect(target, autocommit=True) if postgres else sqlite3.connect(target)
    for step in MIGRATIONS[:4]:
        for statement in step:
            conn.execute(_postgres_statement(statement) if postgres else statement)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (4)")
    for event in (named, unnamed):
        conn.execute(f"INSERT INTO events VALUES ({','.join([mark] * 16)})", event_row(event)[:16])
    conn.execute(f"INSERT INTO alert_records (alert_id, rule, day, ts_ms, record) VALUES ({mark},'r','d',1,{mark})",
                 ("a1", envelope))
    conn.execute("INSERT INTO alerts (rule, key, day, first_seen_ms, last_seen_ms, agent_hostname, agent_ip, "
                 f"actor_remote_ip, opnum, record) VALUES ('r','k','d',1,1,'DC01','10.0.0.10','10.0.0.5',13,{mark})",
                 (json.dumps({"event_ids": [named.event_id]}),))
    if not postgres:
        conn.commit()
    conn.close()

    store = open_store(target)
    assert store.schema_version == SCHEMA_VERSION == 5
    store.close()
    assert sorted(select(target, "SELECT event_id, sensor FROM events"), key=str) == sorted(
        [(named.event_id, "old-sensor"), (unnamed.event_id, None)], key=str)
    assert select(target, "SELECT sensor FROM alert_records") == [("old-sensor",)]
    assert select(target, "SELECT sensor FROM alerts") == [("old-sensor",)]
