"""Issue 16, the PostgreSQL store against a real server (tests/store/postgres_server.py):
the same schema version as SQLite, several sensors replaying into one database at once end
as one serial replay, a SIGKILLed sensor rerun ends as a clean run, and bad credentials or a
missing database are one line (no password) and exit 1."""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from postgres_server import PASSWORD
from sensor.store import open_store
from sensor.store.migrations import SCHEMA_VERSION
from sensor.store.sqlite import _expected_schema
from tests.conftest import PCAPS, ROOT
from workload import repeated

SENSORS = 4
# Four lab captures whose detector keys differ (client address, ServerName, or none decoded: sealed).
DISJOINT = ["dfscoerce-smb21.pcap", "dfscoerce-ipv6.pcap", "dfscoerce-fragmented.pcap", "dfscoerce-rpc-privacy.pcap"]


def replay(url: str, *captures: Path, sensor_name: str = "fleet-test") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sensor.cli", "replay", "--db", url, "--alerts", "/dev/null",
                             "--sensor-name", sensor_name, *map(str, captures)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return err


def contents(url: str) -> dict[str, list]:
    with psycopg.connect(url) as conn:
        return {
            "events": conn.execute("SELECT event_id, record FROM events ORDER BY event_id").fetchall(),
            "key_days": conn.execute("SELECT * FROM key_days ORDER BY 1, 2, 3").fetchall(),
            "alerts": conn.execute("SELECT rule, key, day, record FROM alerts ORDER BY 1, 2, 3").fetchall(),
            "alert_records": conn.execute("SELECT alert_id, rule, day, suppressed_by, record FROM alert_records "
                                          "ORDER BY 1").fetchall(),
        }


def test_the_schema_is_the_sqlite_one_at_the_same_version(pg_url):
    store = open_store(pg_url)
    assert store.schema_version == SCHEMA_VERSION
    assert _expected_schema() <= store._schema_names()
    store.close()
    open_store(pg_url).close()                    # reopening migrates nothing twice
    reader = open_store(pg_url, readonly=True)
    assert reader.events() == [] and reader.schema_version == SCHEMA_VERSION
    reader.close()


@pytest.mark.slow
def test_sensors_replaying_the_same_days_at_once_equal_one_serial_run(postgres, tmp_path):
    """Each sensor replays the same 6 days in time order: whoever stores a key's day first
    judges it, having stored every earlier day itself, so the day counts are the serial ones."""
    capture = repeated(PCAPS / "dfscoerce-smb21.pcap", tmp_path / "days.pcap", 600, days=6)
    serial = postgres.create_database("same_serial")
    finished(replay(serial, capture))
    fleet = postgres.create_database("same_fleet")
    for proc in [replay(fleet, capture) for _ in range(SENSORS)]:
        finished(proc)
    expected = contents(serial)
    assert len(expected["events"]) == 1200 and len(expected["alerts"]) == 12
    assert contents(fleet) == expected


@pytest.mark.slow
def test_sensors_replaying_different_captures_at_once_equal_one_serial_run(postgres, tmp_path):
    captures = [repeated(PCAPS / name, tmp_path / name, 300, days=3) for name in DISJOINT]
    serial = postgres.create_database("mixed_serial")
    finished(replay(serial, *captures))
    fleet = postgres.create_database("mixed_fleet")
    for proc in [replay(fleet, capture) for capture in captures]:
        finished(proc)
    expected = contents(serial)
    assert len(expected["events"]) == 2 * 300 * len(DISJOINT)
    assert len(expected["alerts"]) == 2 * 3 * len(DISJOINT)       # 2 keys a capture, 3 days
    assert contents(fleet) == expected


# Four lab captures of the same attack over different SMB dialects: different bytes and event
# ids, the same detector keys (client, server, call, ServerName, RootShare).
SAME_KEYS = ["dfscoerce-smb21.pcap", "dfscoerce-smb202.pcap", "dfscoerce-smb311-clear.pcap", "dfscoerce-smb1.pcap"]
# Each sensor's block of days starts this many days after the previous one's: more than the
# detector's 30-day lookback, so a day's count sees its own block's days only.
BLOCK_SPACING_DAYS = 40
BLOCK_DAYS = 8              # past the threshold of 7: the last two days of a block raise nothing
SHARED_DAY = 200            # every sensor sees the key on this day too, at the same time


@pytest.mark.slow
def test_sensors_seeing_the_same_keys_on_different_days_equal_one_serial_run(postgres, tmp_path):
    """4 sensors (4 names) each replay their own capture of the attack (same keys), day-shifted
    into their own block of 8 days, then all of them onto one shared day, at the same time
    into one database: the alerts (rule, key, day, day count) are those of one sensor
    replaying every copy in time order, the shared day has one alert per key, and every row
    names the sensor whose capture it came from.

    Blocks are further apart than the lookback: a streaming detector judges a key's day
    when it stores it, so days of one window stored out of time order by different sensors
    would be counted differently from a serial run (README, "Many sensors")."""
    copies = {}
    for n, name in enumerate(SAME_KEYS):
        sensor = f"sensor-{n}"
        copies[sensor] = [
            repeated(PCAPS / name, tmp_path / f"{sensor}-block.pcap", BLOCK_DAYS, days=BLOCK_DAYS,
                     shift_days=n * BLOCK_SPACING_DAYS),
            repeated(PCAPS / name, tmp_path / f"{sensor}-shared.pcap", 1, shift_days=SHARED_DAY)]
    serial = postgres.create_database("keys_serial")
    in_time_order = [files[0] for files in copies.values()] + [files[1] for files in copies.values()]
    raised = alerts_written(finished(replay(serial, *in_time_order)))
    fleet = postgres.create_database("keys_fleet")
    procs = [replay(fleet, *files, sensor_name=sensor) for sensor, files in copies.items()]
    assert sum(alerts_written(finished(proc)) for proc in procs) == raised    # none written out twice

    def alerts(url: str) -> list[tuple]:
        with psycopg.connect(url) as conn:
            return sorted((rule, key, day, json.loads(record)["day_count"])
                          for rule, key, day, record in conn.execute("SELECT rule, key, day, record FROM alerts"))
    expected = alerts(serial)
    keys = {key for _, key, _, _ in expected}
    assert len(keys) == 2                                        # opnum 12 and 13, the same in every capture
    assert len(expected) == len(keys) * (len(SAME_KEYS) * 6 + 1)  # 6 rare days a block, and the shared day
    assert sorted(count for *_, count in expected) == sorted(
        list(range(1, 7)) * len(SAME_KEYS) * len(keys) + [1] * len(keys))
    assert raised == len(expected)
    assert alerts(fleet) == expected
    assert contents(fleet)["key_days"] == contents(serial)["key_days"]
    with psycopg.connect(fleet) as conn:
        events = conn.execute("SELECT sensor, record FROM events").fetchall()
        envelopes = conn.execute("SELECT sensor, record FROM alert_records").fetchall()
        states = conn.execute("SELECT sensor FROM alerts").fetchall()
    assert len(events) == len(contents(serial)["events"]) == len(SAME_KEYS) * (BLOCK_DAYS + 1) * 2
    for sensor, text in events:
        record = json.loads(text)
        assert record["sensor"] == sensor and record["net_capture_file"].startswith(sensor + "-")
    assert {sensor for sensor, _ in envelopes} == set(copies) and all(
        json.loads(text)["sensor"] == sensor for sensor, text in envelopes)
    assert {sensor for (sensor,) in states} == set(copies)


def alerts_written(summary: str) -> int:
    """The alerts a replay wrote out, from its summary line ("..., 3 alert(s) in ...")."""
    return int(re.search(r"(\d+) alert\(s\)", summary).group(1))


def wait_until_stored(url: str, proc) -> int:
    """Until the replay ``proc`` has committed events into the database at ``url`` (2 min at
    most); how many it had then."""
    deadline = time.monotonic() + 120
    while True:
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'events'").fetchone()[0] \
                and conn.execute("SELECT count(*) FROM events").fetchone()[0]
        if stored:
            return stored
        assert time.monotonic() < deadline and proc.poll() is None, "the replay stored nothing"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_sensor_killed_and_rerun_ends_as_a_clean_run(postgres, tmp_path):
    capture = repeated(PCAPS / "dfscoerce-smb21.pcap", tmp_path / "days.pcap", 2000, days=4)
    clean = postgres.create_database("kill_clean")
    finished(replay(clean, capture))
    killed = postgres.create_database("kill_victim")
    victim = replay(killed, capture)
    wait_until_stored(killed, victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(30)
    assert 0 < len(contents(killed)["events"]) < 4000, "the kill did not land midway"
    finished(replay(killed, capture))
    assert contents(killed) == contents(clean)


@pytest.mark.parametrize("command", ["alerts", "replay"])
def test_wrong_password_and_missing_database_are_one_line_without_the_password(postgres, command):
    extra = [str(PCAPS / "dfscoerce-smb21.pcap")] if command == "replay" else []
    for url, what in ((postgres.url("postgres", "not-the-password"), "password authentication failed"),
                      (postgres.url("no_such_db"), 'database "no_such_db" does not exist')):
        done = subprocess.run([sys.executable, "-m", "sensor.cli", command, "--db", url, *extra], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dfs-sensor: error: postgresql://postgres@127.0.0.1:")
        assert what in lines[0]
        assert PASSWORD not in done.stderr and "not-the-password" not in done.stderr


def sqlite_contents(path: Path) -> dict[str, list]:
    conn = sqlite3.connect(path)
    state = {table: conn.execute(f"SELECT {columns} FROM {table} ORDER BY 1, 2, 3").fetchall()
             for table, columns in COPIED.items()}
    conn.close()
    return state


COPIED = {"events": "event_id, ts_ms, utc_date, record", "key_days": "rule, key, utc_date",
          "alerts": "rule, key, day, first_seen_ms, last_seen_ms, record",
          "alert_records": "alert_id, rule, day, ts_ms, suppressed_by, record"}


def store_copy(source: str, destination: str) -> str:
    done = subprocess.run([sys.executable, "-m", "sensor.cli", "store", "copy", "--from", source, "--to",
                           destination], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_store_copy_round_trips_sqlite_through_postgres(pg_url, tmp_path):
    original = tmp_path / "sensor.db"
    captures = [PCAPS / "dfscoerce-smb21.pcap", PCAPS / "coerced-auth-clear.pcap",
                repeated(PCAPS / "dfscoerce-ipv6.pcap", tmp_path / "days.pcap", 50, days=5)]
    finished(replay(str(original), *captures))
    before = sqlite_contents(original)
    assert all(before.values())                  # every table has rows, alert envelopes too

    first = store_copy(str(original), pg_url)
    assert "events: 103 of 103 added" in first
    assert "events: 0 of 103 added" in store_copy(str(original), pg_url)     # idempotent
    with psycopg.connect(pg_url) as conn:
        in_postgres = {table: conn.execute(f"SELECT {columns} FROM {table} ORDER BY 1, 2, 3").fetchall()
                       for table, columns in COPIED.items()}
    assert in_postgres == before

    back = tmp_path / "back.db"
    store_copy(pg_url, str(back))
    assert sqlite_contents(back) == before
    listed = subprocess.run([sys.executable, "-m", "sensor.cli", "alerts", "--db", pg_url, "--format", "json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == len(before["alert_records"])
    assert any(r[1] == "coercion-confirmed" for r in before["alert_records"])      # the coercion rules' too


def test_least_privilege_roles_write_and_read_only_what_they_should(postgres, pg_url):
    open_store(pg_url).close()                               # the owner creates the schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute((ROOT / "scripts" / "postgres-roles.sql").read_text())
        for role in ("dfs_sensor", "dfs_analyst"):
            conn.execute(f"ALTER ROLE {role} PASSWORD '{PASSWORD}'")
    try:
        sensor_url = pg_url.replace("postgres:", "dfs_sensor:", 1)
        analyst_url = pg_url.replace("postgres:", "dfs_analyst:", 1)
        finished(replay(sensor_url, PCAPS / "dfscoerce-smb21.pcap", PCAPS / "coerced-auth-clear.pcap"))
        listed = subprocess.run([sys.executable, "-m", "sensor.cli", "alerts", "--db", analyst_url, "--format",
                                 "json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 3, listed.stderr
        for reading in (["hunt"], ["hunt", "--xql", str(ROOT / "sensor" / "rules" / "dfscoerce" / "opnum-12-13.xql")],
                        ["events", "--sensor", "fleet-test"]):       # reads compile to PostgreSQL's SQL
            read = subprocess.run([sys.executable, "-m", "sensor.cli", *reading, "--db", analyst_url, "--format",
                                   "json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert read.returncode == 0 and read.stdout.strip(), read.stderr
        refused = replay(analyst_url, PCAPS / "dfscoerce-ipv6.pcap")
        _, err = refused.communicate(timeout=60)
        assert refused.returncode == 1 and "permission denied for table events" in err
        assert len(err.strip().splitlines()) == 1 and PASSWORD not in err
        with psycopg.connect(sensor_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE alerts")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for role in ("dfs_sensor", "dfs_analyst"):
                conn.execute(f"DROP OWNED BY {role}")
                conn.execute(f"DROP ROLE {role}")


def test_an_older_fleet_schema_is_migrated_by_its_owner_not_by_a_sensor(postgres, pg_url):
    """The sensors' role may not alter tables: on a store of version 4 a sensor stops with one
    line naming the fix, `store migrate` as the owner brings it to the current version, and
    the sensor then writes (its rows naming it)."""
    from sensor.store.migrations import MIGRATIONS
    from sensor.store.postgres import _postgres_statement

    with psycopg.connect(pg_url, autocommit=True) as conn:
        for step in MIGRATIONS[:4]:
            for statement in step:
                conn.execute(_postgres_statement(statement))
        conn.execute("CREATE TABLE schema_version (version BIGINT NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (4)")
        conn.execute((ROOT / "scripts" / "postgres-roles.sql").read_text())
        conn.execute(f"ALTER ROLE dfs_sensor PASSWORD '{PASSWORD}'")
    sensor_url = pg_url.replace("postgres:", "dfs_sensor:", 1)
    try:
        refused = replay(sensor_url, PCAPS / "dfscoerce-smb21.pcap")
        _, err = refused.communicate(timeout=60)
        assert refused.returncode == 1 and err.strip().splitlines() == [
            f"dfs-sensor: error: {sensor_url.replace(':' + PASSWORD, '')}: must be owner of table events (the "
            f"schema is older than this dfs-sensor's, version {SCHEMA_VERSION}: the database's owner runs "
            f"`dfs-sensor store migrate --db URL` once)"]
        migrated = subprocess.run([sys.executable, "-m", "sensor.cli", "store", "migrate", "--db", pg_url],
                                  cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert migrated.returncode == 0 and f"schema version {SCHEMA_VERSION}" in migrated.stderr
        finished(replay(sensor_url, PCAPS / "dfscoerce-smb21.pcap", sensor_name="dc01"))
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT DISTINCT sensor FROM events").fetchall() == [("dc01",)]
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for role in ("dfs_sensor", "dfs_analyst"):
                conn.execute(f"DROP OWNED BY {role}")
                conn.execute(f"DROP ROLE {role}")


def test_an_event_twice_in_one_batch_is_new_once(pg_url):
    from rarity_events import rpc_event, ts_of
    from sensor.store.sqlite import event_row

    store = open_store(pg_url)
    first, second = rpc_event(ts_of("2026-11-01")), rpc_event(ts_of("2026-11-02"))
    batch = [first, second, first]
    assert store.run_batch(lambda: store.add_events(batch, [event_row(e) for e in batch])) == [True, True, False]
    assert store.run_batch(lambda: store.add_events(batch, [event_row(e) for e in batch])) == [False, False, False]
    store.close()


def test_a_fleet_store_of_version_3_gets_the_envelopes_sqlite_gets(pg_url, tmp_path):
    """Step 4 on PostgreSQL: its SQL translated, and the older alerts' rows converted to the
    same envelopes (byte for byte) as in a SQLite store holding the same rows."""
    from sensor.store.migrations import MIGRATIONS
    from sensor.store.postgres import _postgres_statement
    from test_migrations import V2_COERCION, V2_RARE

    insert_rare = ("INSERT INTO alerts (rule, key, day, first_seen_ms, last_seen_ms, agent_hostname, agent_ip, "
                   "actor_remote_ip, opnum, record) VALUES (?,?,?,?,?,?,?,?,?,?)")
    insert_coercion = "INSERT INTO coercion_alerts (rule, key, day, ts_ms, record) VALUES (?,?,?,?,?)"
    lite = sqlite3.connect(tmp_path / "v3.db")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for step in MIGRATIONS[:3]:
            for statement in step:
                conn.execute(_postgres_statement(statement))
                lite.execute(statement)
        for db in (conn, lite):
            mark = "%s" if db is conn else "?"
            db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            db.execute("INSERT INTO schema_version VALUES (3)")
            db.execute(insert_rare.replace("?", mark), V2_RARE)
            db.execute(insert_coercion.replace("?", mark), V2_COERCION)
    lite.commit()
    lite.close()
    stores = [open_store(pg_url), open_store(str(tmp_path / "v3.db"))]
    fleet, single = [store.alert_records() for store in stores]
    assert [store.schema_version for store in stores] == [SCHEMA_VERSION] * 2
    for store in stores:
        store.close()
    assert len(fleet) == 2 and fleet == single
