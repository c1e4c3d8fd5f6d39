"""The store's spool (sensor/store/spooled.py) while PostgreSQL is unreachable: batches that
wait on disk, in order, bounded, each process in a slot of its own; then, against a real
server (tests/store/postgres_server.py), a replay that finishes while the database is down
and a later run that delivers, a full spool, and a SIGKILL while batches wait."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from sensor.coercion.correlate import Correlator
from sensor.events import RpcCallEvent
from sensor.store.postgres import StoreUnavailable
from sensor.store.spooled import Batch, StoreSpool, StoreSpoolSettings
from sensor.store.sqlite import StoreError
from tests.conftest import PCAPS, ROOT, decode_capture
from test_postgres import contents, wait_until_stored
from workload import records, repeated

DATABASE = "postgresql://sensor@db.example/dfs"


def real_batch(ahead_ms: int = 0) -> Batch:
    """The events and coercion alerts of a real capture (the pipeline and correlator over
    impacket's coercion of a Samba DC, authenticating back in clear)."""
    decoded, _ = decode_capture(PCAPS / "coerced-auth-clear.pcap")
    correlator = Correlator()
    coercion = [alert for record in decoded for alert in correlator.feed(record)] + correlator.close()
    events = [r for r in decoded if isinstance(r, RpcCallEvent)]
    assert events and coercion and any(a.inbound_flow for a in coercion)
    return Batch(events, coercion, ahead_ms)


def numbered(n: int) -> Batch:
    """A batch told apart by its clock bound (what the policy tests follow through the spool)."""
    return Batch([], [], n)


class Database:
    """A store callable that is down until told otherwise, and remembers what it stored."""

    def __init__(self) -> None:
        self.up = True
        self.stored: list[int] = []

    def __call__(self, batch: Batch) -> None:
        if not self.up:
            raise StoreUnavailable(f"{DATABASE}: cannot connect: Connection refused")
        self.stored.append(batch.ahead_ms)


def spool(tmp_path: Path, messages: list | None = None, **settings) -> StoreSpool:
    return StoreSpool(StoreSpoolSettings(str(tmp_path / "spool"), **({"retry_max_seconds": 0.2} | settings)),
                      DATABASE, None if messages is None else messages.append)


def test_a_batch_survives_the_spool_unchanged():
    batch = real_batch(1_795_000_000_000)
    again = Batch.from_record(batch.to_record())
    assert again == batch
    assert [a.envelope("s1").to_json() for a in again.coercion] == [a.envelope("s1").to_json() for a in batch.coercion]


def test_while_the_database_answers_nothing_is_spooled_or_written_to_disk(tmp_path):
    db = Database()
    s = spool(tmp_path)
    for n in range(3):
        s.write(numbered(n), db)
    s.close()
    assert db.stored == [0, 1, 2]
    assert list((tmp_path / "spool").iterdir()) == []


def test_batches_wait_while_it_is_down_and_arrive_in_order_when_it_is_back(tmp_path):
    db, messages = Database(), []
    s = spool(tmp_path, messages)
    s.write(numbered(0), db)
    db.up = False
    for n in range(1, 5):
        s.write(numbered(n), db)           # the first finds it down, the rest do not even try
        s.deliver(db)
    assert (db.stored, s.waiting, s.outage) == ([0], 4, True)
    assert len(messages) == 1 and "Connection refused; capture goes on" in messages[0]
    db.up = True
    s.write(numbered(5), db)               # behind the spooled ones, not before them
    time.sleep(0.6)                        # past the longest back-off
    s.deliver(db, seconds=5)
    s.write(numbered(6), db)               # the spool is empty again: stored at once
    assert db.stored == [0, 1, 2, 3, 4, 5, 6]
    assert (s.waiting, s.delivered, s.outage) == (0, 5, False)
    assert "reachable again" in messages[-1]
    s.close()
    assert [p.suffix for p in (tmp_path / "spool").iterdir()] == [".lock"]    # the empty spool is gone


def test_a_full_spool_drops_the_oldest_batches_counts_their_items_and_warns_once(tmp_path):
    db, messages = Database(), []
    event = real_batch().events[0]
    one = len(Batch([event, event], [], 0).to_record())
    s = spool(tmp_path, messages, max_bytes=3 * one + 10)
    db.up = False
    for n in range(10):
        s.write(Batch([event, event], [], n), db)
    assert s.dropped == 2 * 7                 # 7 batches of 2 events went, oldest first
    assert sum("the store spool is full" in m for m in messages) == 1
    db.up = True
    time.sleep(0.6)
    s.flush(db)
    assert db.stored == [7, 8, 9]             # the newest, in order
    s.close()


def test_end_of_run_gives_up_after_flush_seconds_and_the_next_process_delivers_first(tmp_path):
    db, messages = Database(), []
    first = spool(tmp_path, messages, flush_seconds=0.5)
    db.up = False
    for n in range(3):
        first.write(numbered(n), db)
    started = time.monotonic()
    first.flush(db)
    assert 0.5 <= time.monotonic() - started < 3
    first.close()
    assert first.waiting == 3 and "Connection refused; capture goes on" in messages[-1]
    db.up = True
    second = spool(tmp_path)
    assert second.waiting == 3               # a previous process's spool of this database
    second.write(numbered(3), db)
    second.deliver(db, seconds=5)
    assert db.stored == [0, 1, 2, 3]
    second.close()


def test_processes_of_one_host_spool_apart_and_other_databases_are_not_touched(tmp_path):
    db = Database()
    db.up = False
    a, b = spool(tmp_path), spool(tmp_path)
    a.write(numbered(1), db)
    b.write(numbered(2), db)
    assert a.path != b.path
    other = StoreSpool(StoreSpoolSettings(str(tmp_path / "spool")), "postgresql://sensor@db.example/other")
    assert other.waiting == 0
    a.close()
    c = spool(tmp_path)                        # a's file is free again, b's is held
    assert (c.path, c.waiting) == (a.path, 1)
    for s in (b, c, other):
        s.close()


def test_only_a_lost_connection_is_spooled(tmp_path):
    def refused(batch):
        raise StoreError(f"{DATABASE}: permission denied for table events")

    s = spool(tmp_path)
    with pytest.raises(StoreError, match="permission denied"):
        s.write(numbered(0), refused)
    assert s.waiting == 0
    s.close()


def test_an_unwritable_spool_directory_is_one_error_at_start(tmp_path):
    (tmp_path / "spool").write_text("a file, not a directory")
    with pytest.raises(StoreError, match="cannot use the store's spool directory"):
        spool(tmp_path)


# -- against a real PostgreSQL -------------------------------------------------------------

def config(tmp_path: Path, **store) -> Path:
    path = tmp_path / "sensor.toml"
    settings = {"retry_max_seconds": 0.5, "flush_seconds": 1.0} | store
    path.write_text(f'[outputs]\nspool_dir = "{tmp_path / "spool"}"\n[store]\n'
                    + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    return path


def replay(url: str, conf: Path, alerts: Path, *captures: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sensor.cli", "replay", "--config", str(conf), "--db", url,
                             "--alerts", str(alerts), *map(str, captures)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return err


def empty_capture(like: Path, out: Path) -> Path:
    """A capture with no frames: a run that only delivers what its spool holds."""
    out.write_bytes(records(like)[0])
    return out


def spooled(tmp_path: Path) -> tuple[int, set[str]]:
    """(batches, event ids) waiting in the spool files under tmp_path/spool."""
    batches, ids = 0, set()
    for path in (tmp_path / "spool").glob("store-*.db"):
        with sqlite3.connect(path) as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'spool'").fetchone():
                continue                  # just made, its table not yet
            for (line,) in conn.execute("SELECT line FROM spool"):
                batches += 1
                ids |= {e["event_id"] for e in json.loads(line)["events"]}
    return batches, ids


def alert_ids(*paths: Path) -> list[str]:
    return [json.loads(line)["alert_id"] for path in paths for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_postgres_stopped_for_10_s_mid_replay_loses_nothing(postgres, tmp_path):
    """The replay reads on while the database is down (its batches spooled), and delivers
    them when it is back: every event and alert arrives, the store equals a clean run's."""
    capture = repeated(PCAPS / "dfscoerce-smb21.pcap", tmp_path / "days.pcap", 3000, days=4)
    conf = config(tmp_path, flush_seconds=120.0)
    clean = postgres.create_database("outage_clean")
    finished(replay(clean, conf, tmp_path / "clean.jsonl", capture))
    url = postgres.create_database("outage")
    proc = replay(url, conf, tmp_path / "alerts.jsonl", capture)
    stored = wait_until_stored(url, proc)
    postgres.pause()
    try:
        time.sleep(10)
        assert spooled(tmp_path)[0] > 0, "nothing waited in the spool"
    finally:
        postgres.resume()
    summary = finished(proc)
    assert "batch(es) waited in the spool while the database was unreachable and were delivered in order" in summary
    after = contents(url)
    assert 0 < stored < len(after["events"]), "the outage did not land mid-replay"
    assert after == contents(clean)
    assert sorted(alert_ids(tmp_path / "alerts.jsonl")) == sorted(alert_ids(tmp_path / "clean.jsonl"))


@pytest.mark.slow
def test_a_replay_finishes_while_postgres_is_down_and_the_next_run_delivers_in_order(postgres, tmp_path):
    """The database stops mid-replay and stays down: the replay reads on to the end (exit 0,
    the summary names what waits), and the next run delivers every batch, in order: the
    store equals a clean run's (day counts, hence alerts, depend on the order), no alert twice.
    The second capture's probable coercion (an encrypted session, then the victim's machine
    account authenticating out) is seen while the database is down: its pair's day is
    recorded and counted at delivery, as a clean run does at once."""
    capture = repeated(PCAPS / "dfscoerce-smb21.pcap", tmp_path / "days.pcap", 3000, days=4)
    # five days on: past the DFSCoerce copies, so no decoded call confirms it
    later = repeated(PCAPS / "coerced-auth-encrypted.pcap", tmp_path / "encrypted.pcap", 1, shift_days=5)
    captures = (capture, later)
    conf = config(tmp_path)
    clean = postgres.create_database("spool_clean")
    finished(replay(clean, conf, tmp_path / "clean.jsonl", *captures))
    url = postgres.create_database("spool_outage")
    proc = replay(url, conf, tmp_path / "first.jsonl", *captures)
    stored = wait_until_stored(url, proc)
    postgres.pause()
    try:
        summary = finished(proc)             # while the database is still down
        waiting, ids = spooled(tmp_path)
    finally:
        postgres.resume()
    assert "capture goes on, batches wait in a spool" in summary
    assert f"store: {waiting:,} batch(es) wait in the spool" in summary and waiting > 1
    assert "store: 1 probable-coercion pair(s) seen while the database was unreachable" in summary
    assert stored > 0 and 0 < len(ids) <= 6000 - stored      # the outage landed mid-replay
    delivery = finished(replay(url, conf, tmp_path / "second.jsonl",
                               empty_capture(capture, tmp_path / "empty.pcap")))
    assert f"store: {waiting:,} batch(es) waited in the spool" in delivery
    expected = contents(clean)
    assert any(rule == "probable-coercion-pair" for rule, *_ in expected["key_days"])
    assert any(rule == "probable-coercion" for _, rule, *_ in expected["alert_records"])
    assert contents(url) == expected
    assert spooled(tmp_path) == (0, set())
    delivered = alert_ids(tmp_path / "first.jsonl", tmp_path / "second.jsonl")
    assert sorted(delivered) == sorted(alert_ids(tmp_path / "clean.jsonl"))   # every alert once
    days = [json.loads(line)["day"] for path in ("first.jsonl", "second.jsonl")
            for line in (tmp_path / path).read_text().splitlines()]
    assert days == sorted(days)                                               # in capture order


@pytest.mark.slow
def test_a_full_spool_keeps_the_newest_batches_and_reports_the_drops(postgres, tmp_path):
    capture = repeated(PCAPS / "dfscoerce-smb21.pcap", tmp_path / "days.pcap", 3000, days=4)
    conf = config(tmp_path, spool_max_bytes=3_000_000)        # about two batches of 1000 events
    url = postgres.create_database("spool_full")
    proc = replay(url, conf, tmp_path / "first.jsonl", capture)
    stored = wait_until_stored(url, proc)
    postgres.pause()
    try:
        summary = finished(proc)
        waiting, kept = spooled(tmp_path)
    finally:
        postgres.resume()
    dropped = int(summary.split("store: the spool was full: ")[1].split(" ")[0].replace(",", ""))
    assert summary.count("the store spool is full") == 1
    assert dropped > 0 and stored + dropped + len(kept) == 6000
    finished(replay(url, conf, tmp_path / "second.jsonl", empty_capture(capture, tmp_path / "empty.pcap")))
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT event_id, ts_ms FROM events ORDER BY ts_ms, event_id").fetchall()
    assert len(rows) == stored + len(kept)
    assert {event_id for event_id, _ in rows[-len(kept):]} == kept           # the newest are the ones kept


def snapshot(tmp_path: Path) -> dict[Path, bytes]:
    """Each spool file as it is now, consistent (SQLite's backup: the WAL included)."""
    saved = {}
    for path in (tmp_path / "spool").glob("store-*.db"):
        copy = path.with_suffix(".copy")
        with sqlite3.connect(path) as source, sqlite3.connect(copy) as target:
            source.backup(target)
        saved[path] = copy.read_bytes()
        copy.unlink()
    return saved


def restore(saved: dict[Path, bytes]) -> None:
    for path, data in saved.items():
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.write_bytes(data)


@pytest.mark.slow
def test_a_sensor_killed_while_batches_wait_loses_none_and_adds_no_duplicate(postgres, tmp_path):
    """SIGKILL while batches wait: every batch committed to the spool arrives with the next
    run. Killed again after that run's commits but before its spool acknowledgements (the
    spool put back as it was): the batches are written again and change nothing, and no
    alert line is written twice. A rerun of the capture then ends as a clean run."""
    capture = repeated(PCAPS / "dfscoerce-smb21.pcap", tmp_path / "days.pcap", 3000, days=4)
    conf = config(tmp_path, flush_seconds=600.0)           # it would wait for the database at the end
    clean = postgres.create_database("spool_kill_clean")
    finished(replay(clean, conf, tmp_path / "clean.jsonl", capture))
    url = postgres.create_database("spool_kill")
    victim = replay(url, conf, tmp_path / "first.jsonl", capture)
    wait_until_stored(url, victim)
    postgres.pause()
    try:
        deadline = time.monotonic() + 120
        while spooled(tmp_path)[0] < 3:
            assert time.monotonic() < deadline and victim.poll() is None, "nothing was spooled"
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(30)
    finally:
        postgres.resume()
    waiting, ids = spooled(tmp_path)
    with psycopg.connect(url) as conn:
        before = {row[0] for row in conn.execute("SELECT event_id FROM events")}
    assert waiting >= 3 and not before & ids
    saved = snapshot(tmp_path)
    empty = empty_capture(capture, tmp_path / "empty.pcap")
    finished(replay(url, conf, tmp_path / "second.jsonl", empty))
    after = contents(url)
    assert {event_id for event_id, _ in after["events"]} == before | ids      # nothing spooled was lost
    restore(saved)
    again = finished(replay(url, conf, tmp_path / "third.jsonl", empty))
    assert f"store: {waiting:,} batch(es) waited in the spool" in again
    assert contents(url) == after and (tmp_path / "third.jsonl").read_text() == ""
    finished(replay(url, conf, tmp_path / "fourth.jsonl", capture))
    assert contents(url) == contents(clean)
    lines = alert_ids(*(tmp_path / f"{n}.jsonl" for n in ("first", "second", "third", "fourth")))
    assert len(lines) == len(set(lines))


def test_a_host_that_does_not_answer_costs_a_writer_half_a_second_not_the_connect_timeout(postgres, pg_url):
    """The connection is lost and the server's address now leads to a listener that never
    answers (a hung host): run_batch gives up within RECONNECT_WAIT_SECONDS (the sensor
    spools and captures on) while the connection attempt goes on in the background."""
    import socket

    from sensor.store import open_store
    from sensor.store.postgres import RECONNECT_WAIT_SECONDS

    store = open_store(pg_url)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)                       # the kernel completes handshakes; nobody answers
        with postgres.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                          (pg_url.rsplit("/", 1)[1],))
        store.db.url = pg_url.replace(f":{postgres.port}/", f":{silent.getsockname()[1]}/")
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                store.run_batch(lambda: store.newest_event_ms())
            assert time.monotonic() - started < RECONNECT_WAIT_SECONDS + 0.5
    store.db.url = pg_url
    deadline = time.monotonic() + 30           # the hung attempt times out; the next one connects
    while True:
        try:
            assert store.run_batch(lambda: store.newest_event_ms()) is None
            break
        except StoreUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    store.close()
