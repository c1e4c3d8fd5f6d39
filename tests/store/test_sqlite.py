"""The SQLite store: schema and migrations, WAL readers beside a writer, errors, pruning, listings."""
from __future__ import annotations

import sqlite3

import pytest

import sensor.store.sqlite as sqlite_store
from rarity_events import rpc_event, ts_of
from sensor.store.migrations import SCHEMA_VERSION
from sensor.hosts import HostQuery
from sensor.store.sqlite import ListFilter, Store, StoreError


def test_fresh_database_is_migrated_and_in_wal_mode(tmp_path):
    path = tmp_path / "deep" / "dir" / "s.db"
    store = Store(str(path))
    assert store.schema_version == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"schema_version", "events", "key_days", "alerts"} <= tables
    store.close()
    again = Store(str(path))      # reopening runs no step twice
    assert again.schema_version == SCHEMA_VERSION
    again.close()


def test_a_failing_migration_leaves_nothing_behind(tmp_path, monkeypatch):
    broken = [("CREATE TABLE half_done (x INTEGER)", "THIS IS NOT SQL")]
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", broken)
    monkeypatch.setattr(sqlite_store, "SCHEMA_VERSION", 1)
    with pytest.raises(StoreError, match="s.db"):
        Store(str(tmp_path / "s.db"))
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []


def test_later_migration_steps_run_on_an_older_database(tmp_path, monkeypatch):
    Store(str(tmp_path / "s.db")).close()
    steps = sqlite_store.MIGRATIONS + [("CREATE TABLE added_later (x INTEGER)",)]
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", steps)
    monkeypatch.setattr(sqlite_store, "SCHEMA_VERSION", len(steps))
    store = Store(str(tmp_path / "s.db"))
    assert store.schema_version == len(steps)
    store.db.execute("SELECT * FROM added_later")
    store.close()


def test_newer_schema_is_refused(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    store.db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    store.close()
    with pytest.raises(StoreError, match="newer"):
        Store(str(tmp_path / "s.db"))


def test_corrupt_file_and_unwritable_path_are_one_line_errors(tmp_path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database, just some text " * 200)
    with pytest.raises(StoreError) as e:
        Store(str(corrupt))
    assert str(corrupt) in str(e.value) and "\n" not in str(e.value)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError) as e:
        Store(str(blocker / "sub" / "s.db"))      # a parent that is a file
    assert "\n" not in str(e.value)


def test_a_reader_reads_while_a_writer_holds_a_transaction(tmp_path):
    path = str(tmp_path / "s.db")
    writer = Store(path)
    reader = Store(path, readonly=True)
    committed = rpc_event(ts_of("2026-11-01"))
    with writer.transaction():
        writer.add_event(committed)
    pending = rpc_event(ts_of("2026-11-02"))
    with writer.transaction():
        assert writer.add_event(pending)
        # the writer holds the write lock; the reader is neither blocked nor shown uncommitted rows
        assert [e["event_id"] for e in reader.events()] == [committed.event_id]
    assert {e["event_id"] for e in reader.events()} == {committed.event_id, pending.event_id}
    writer.close()
    reader.close()


def test_rollback_on_error_keeps_neither_event_nor_alert(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_event(rpc_event(ts_of("2026-11-01")))
            raise RuntimeError("crash between event and alert")
    assert store.events() == []
    store.close()


def test_add_event_is_idempotent_by_event_id(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    event = rpc_event(ts_of("2026-11-01"))
    assert store.add_event(event) is True
    assert store.add_event(event) is False
    assert len(store.events()) == 1
    store.close()


def test_prune_drops_events_and_key_days_before_the_horizon(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    old, new = rpc_event(ts_of("2026-10-01")), rpc_event(ts_of("2026-11-01"))
    with store.transaction():
        for e in (old, new):
            store.add_event(e)
        store.add_key_day("r", "k", "2026-10-01")
        store.add_key_day("r", "k", "2026-11-01")
    assert store.prune(int(ts_of("2026-10-15") * 1000)) == 1
    assert [e["event_id"] for e in store.events()] == [new.event_id]
    assert store.key_day_count("r", "k", "2026-01-01", "2026-12-31", day_of_month=False) == 1
    store.close()


def test_listing_filters(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    events = [rpc_event(ts_of("2026-11-01"), client="10.0.0.5", server="DC01", opnum=12),
              rpc_event(ts_of("2026-11-02"), client="10.0.0.6", server="DC02", server_ip="10.0.0.11"),
              rpc_event(ts_of("2026-11-03"), client="10.0.0.5", server="DC01", opnum=13)]
    with store.transaction():
        for e in events:
            store.add_event(e)

    def ids(**kw):
        hosts = {k: HostQuery.parse(v) for k, v in kw.items() if k in ("client", "server")}
        return [e["event_id"] for e in store.events(ListFilter(**kw | hosts))]

    assert ids() == [e.event_id for e in reversed(events)]           # newest first
    assert ids(client="10.0.0.5") == [events[2].event_id, events[0].event_id]
    assert ids(server="dc02") == ids(server="10.0.0.11") == [events[1].event_id]
    assert ids(server="dc02.corp.example.") == ids(server="::ffff:10.0.0.11") == [events[1].event_id]
    assert ids(client="10.0.0.0/30") == [] and ids(client="10.0.0.4/30") == [e.event_id for e in reversed(events)]
    assert ids(opnum=12) == [events[0].event_id]
    assert ids(since_ms=int(ts_of("2026-11-02", 0) * 1000), until_ms=int(ts_of("2026-11-02", 23) * 1000)) \
        == [events[1].event_id]
    assert ids(limit=1) == [events[2].event_id]
    store.close()
