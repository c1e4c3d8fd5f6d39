"""Issue 18 item 9: a damaged store is one line that says what is wrong and how to recover,
exit 1, never a traceback and never silent: random bytes over pages (quick_check when a
writer opens it, "malformed" met by a reader), a bad or doubled schema_version row, a
dropped table. The commands are the real `dfs-sensor` processes."""
from __future__ import annotations

import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rarity_events import rpc_event, ts_of
import sensor.store.sqlite as sqlite_store
from sensor.store.sqlite import ListFilter, Store, StoreDamaged, reported
from tests.conftest import PCAPS, ROOT

CAPTURE = PCAPS / "dfscoerce-smb21.pcap"
EVENTS = 3000            # ~5 MB of events: the damage lands on pages in the middle of the table
PAGE = 4096


def build_store(path: Path) -> None:
    store = Store(str(path))
    with store.transaction():
        for n in range(EVENTS):
            store.add_event(rpc_event(ts_of("2026-11-01") + n * 60, call_id=n, client=f"10.0.{n % 200}.5"))
    store.close()


def dfs_sensor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensor.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def assert_damage_reported(done: subprocess.CompletedProcess, what: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dfs-sensor: error: "), done.stderr
    assert what in lines[0] and ".recover" in lines[0], lines[0]


def overwrite(path: Path, offset: int, size: int, seed: int) -> None:
    noise = random.Random(seed).randbytes(size)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(noise)


@pytest.fixture
def store(tmp_path) -> Path:
    path = tmp_path / "s.db"
    build_store(path)
    return path


def test_random_64k_in_the_store_is_reported_by_readers_and_writers(store):
    size = store.stat().st_size
    overwrite(store, size // 2 // PAGE * PAGE, 64 * 1024, seed=1)
    assert_damage_reported(dfs_sensor("events", "--db", str(store), "--limit", "100000"), "damaged")
    assert_damage_reported(dfs_sensor("hunt", "--db", str(store), "--until", "2026-12-01"), "damaged")
    assert_damage_reported(dfs_sensor("replay", "--db", str(store), str(CAPTURE)), "quick_check")


@pytest.mark.parametrize("seed", range(4))
def test_random_4k_in_the_middle_is_caught_when_a_writer_opens_the_store(store, seed):
    size = store.stat().st_size
    offset = random.Random(seed).randrange(PAGE, size - PAGE)    # aligned or not, any page
    overwrite(store, offset, 4096, seed)
    assert_damage_reported(dfs_sensor("replay", "--db", str(store), str(CAPTURE)), "quick_check")


@pytest.mark.parametrize("damage, what", [
    ("UPDATE schema_version SET version = 'abc'", "schema_version holds version 'abc'"),
    ("INSERT INTO schema_version SELECT version FROM schema_version", "schema_version holds 2 rows"),
    ("DELETE FROM schema_version", "schema_version holds 0 rows"),
    ("DROP TABLE events", "table events"),
    ("DROP INDEX alerts_by_time", "index alerts_by_time"),
])
def test_damaged_schema_is_reported_by_readers_and_writers(store, damage, what):
    with sqlite3.connect(store) as db:
        db.execute(damage)
    db.close()
    assert_damage_reported(dfs_sensor("replay", "--db", str(store), str(CAPTURE)), what)
    assert_damage_reported(dfs_sensor("alerts", "--db", str(store)), what)
    assert_damage_reported(dfs_sensor("events", "--db", str(store)), what)


def test_a_file_that_is_not_a_store_is_reported(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (x)")
    db.close()
    for args in (["alerts"], ["replay", str(CAPTURE)]):
        done = dfs_sensor(args[0], "--db", str(other), *args[1:])
        assert done.returncode == 1 and "not a dfs-sensor store" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_a_big_store_checks_its_state_tables_at_open_and_events_when_read(store, monkeypatch):
    """Over FULL_CHECK_MAX_BYTES (512 MiB) a writer's open checks the detector's tables, not
    the events' pages (minutes on a 1M-event store); here the limit is lowered instead."""
    monkeypatch.setattr(sqlite_store, "FULL_CHECK_MAX_BYTES", 0)
    with sqlite3.connect(store) as db:
        db.execute("INSERT INTO key_days VALUES ('r', 'k', '2026-11-01')")
        root = dict(db.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'table'"))
    db.close()
    events_page = root["events"]
    overwrite(store, (events_page - 1) * PAGE, PAGE, seed=7)      # the events b-tree's root
    Store(str(store)).close()                                      # not looked at on open
    with pytest.raises(StoreDamaged, match="damaged .*malformed"):
        with reported(str(store)):
            Store(str(store), readonly=True).events(ListFilter(limit=10))
    overwrite(store, (root["key_days"] - 1) * PAGE, PAGE, seed=8)  # detector state: caught at open
    with pytest.raises(StoreDamaged, match="damaged"):
        Store(str(store))


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="the sqlite3 shell (scripts/setup --test installs it)")
def test_the_readme_recovery_gives_a_usable_store(store, tmp_path):
    """README, Damaged store: Debian 12's sqlite3 3.40.1 fails `.recover` with "SQL logic
    error" on any file, so the steps there also give `.dump` with its final ROLLBACK turned
    into COMMIT: every table up to its first damaged page."""
    overwrite(store, store.stat().st_size // 2 // PAGE * PAGE, 64 * 1024, seed=1)
    recovered = tmp_path / "recovered.db"
    dump = subprocess.run(["sqlite3", str(store), ".dump"], capture_output=True, timeout=120)
    script = dump.stdout.replace(b"ROLLBACK; -- due to errors", b"COMMIT;")
    subprocess.run(["sqlite3", str(recovered)], input=script, capture_output=True, timeout=120, check=True)
    # A row whose bytes were hit but whose page still parses comes through: not UTF-8 ...
    listed = dfs_sensor("events", "--db", str(recovered), "--limit", "100000")
    assert_damage_reported(listed, "a row holds text that is not UTF-8")
    # ... and the README's next step drops it.
    subprocess.run(["sqlite3", str(recovered), "DELETE FROM events WHERE NOT json_valid(record); "
                    "DELETE FROM alerts WHERE NOT json_valid(record); "
                    "DELETE FROM coercion_alerts WHERE NOT json_valid(record); "
                    "DELETE FROM alert_records WHERE NOT json_valid(record)"],
                   capture_output=True, timeout=120, check=True)
    done = dfs_sensor("replay", "--db", str(recovered), str(CAPTURE))
    assert done.returncode == 0, done.stderr
    listed = dfs_sensor("events", "--db", str(recovered), "--limit", "100000", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    # the events before the first damaged page, and the new replay's two
    assert 2 < len(listed.stdout.splitlines()) < EVENTS
