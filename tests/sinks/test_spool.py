"""The on-disk spool (sensor/sinks/spool.py) fed records directly: records of several items
(a PostgreSQL store's batches) are dropped whole, oldest first, and counted in items; a spool
file written before records had a count still opens and counts each line as one.

Several processes on one spool (``live --workers`` share a sink's): its open and its writes
wait for another writer's lock with the store's bounded backoff. What escaped SQLite's own
busy wait: two processes opening a NEW spool at once both switch it to WAL mode, and SQLite
gives up on the switch at once ('database is locked') instead of waiting. Real processes on
real files; a lock held by a sqlite3 connection of the test's own puts an opener in that
window every time.

Several processes sending from one spool: a line a live process claimed (peeked) is not
peeked by another, and another's ack leaves it; a killed process's claims lapse at once, a
live one's after the bound. The other process is a real one forked here."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

import sensor.sinks.spool as spool_module
from sensor import metrics
from sensor.outputs import OutputError
from sensor.sinks.spool import Spool, SpoolError
from sensor.sinks.targets import SinkSettings, _spool_path, open_sink
from tests.sqlite_locks import (HELD_SECONDS, SHORT_LIMIT_SECONDS, gives_up_at_the_bound, holding_the_write_lock,
                                opened_once_the_lock_is_freed, racing_opens)

# Rounds of processes opening a new spool at the same moment, each a new process forked from
# a server that has the spool's module loaded: on main 18 of 60 rounds of two (load 2-5) had a
# failed open, so 40 rounds of three pass there with a chance well under 1e-3.
ROUNDS = 40
OPENERS = 3
# How long a test waits for a sink's threads to spool a line.
SPOOLED_SECONDS = 10.0
# Rounds of processes opening one spool of an older version at the same moment.
MIGRATION_ROUNDS = 15
# The schema of the version before claims (and of the one before items, without its column).
SCHEMA_BEFORE_CLAIMS = ("CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, bytes INTEGER NOT NULL, "
                        "line TEXT NOT NULL, items INTEGER NOT NULL DEFAULT 1)")


def test_a_full_spool_drops_the_oldest_records_whole_and_counts_their_items(tmp_path):
    records = [f"batch {n:02d} " + "x" * 91 for n in range(10)]       # 100 bytes each
    spool = Spool(str(tmp_path / "s.db"), max_bytes=350)
    assert spool.push(records[:3], [5, 6, 7]) == 0
    assert spool.push(records[3:5], [1, 2]) == 11                      # 500 bytes: batches 0 and 1 go
    assert [line for _, line in spool.peek(10)] == records[2:5]
    assert (spool.dropped, spool.depth(), spool.bytes()) == (11, 3, 300)
    assert spool.push(records[5:6]) == 7                               # default: one item per record
    assert spool.dropped == 18
    spool.close()


def test_records_leave_only_when_acknowledged_and_survive_reopening(tmp_path):
    path = str(tmp_path / "s.db")
    spool = Spool(path)
    spool.push(["a", "b", "c"], [2, 2, 2])
    seq_a = spool.peek(1)[0][0]
    spool.ack(seq_a)
    spool.close()
    again = Spool(path)
    assert [line for _, line in again.peek(10)] == ["b", "c"]
    again.close()


def test_a_spool_written_before_items_were_counted_opens_and_counts_one_per_line(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(SCHEMA_BEFORE_CLAIMS.replace(", items INTEGER NOT NULL DEFAULT 1", ""))
    db.executemany("INSERT INTO spool (bytes, line) VALUES (?, ?)", [(10, "0123456789")] * 3)
    db.commit()
    db.close()
    spool = Spool(str(path), max_bytes=15)
    assert spool.push(["new"]) == 2                                     # two old lines dropped
    assert [line for _, line in spool.peek(10)] == ["0123456789", "new"]
    spool.close()


def test_processes_opening_a_new_spool_at_the_same_moment_all_open_it(tmp_path):
    paths, failures = racing_opens(Spool, "sensor.sinks.spool", tmp_path, ROUNDS, OPENERS)
    for path in paths:
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT count(*) FROM spool").fetchone() == (0,)
        db.close()
    assert failures == []


def test_opening_a_new_spool_waits_while_another_process_holds_its_lock(tmp_path):
    spool = opened_once_the_lock_is_freed(Spool, tmp_path / "s.db")
    assert spool.push(["a"]) == 0 and [line for _, line in spool.peek(1)] == ["a"]
    spool.close()


def test_a_lock_never_freed_at_open_ends_with_one_line_naming_the_spool_and_the_wal_switch(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "LOCK_WAIT_LIMIT_SECONDS", SHORT_LIMIT_SECONDS)
    path = tmp_path / "s.db"
    message = gives_up_at_the_bound(Spool, SpoolError, path)
    assert message.startswith(f"{path}: another process has held the spool's lock")


def test_a_sink_whose_new_spool_stays_locked_says_so_as_any_unusable_spool(tmp_path, monkeypatch):
    """What ``replay --alerts syslog+tcp://...`` prints and exits 1 with, as for a spool
    directory it cannot create ("TARGET: cannot use the spool: ...")."""
    monkeypatch.setattr(spool_module, "LOCK_WAIT_LIMIT_SECONDS", SHORT_LIMIT_SECONDS)
    target = "syslog+tcp://127.0.0.1:9"
    settings = SinkSettings(spool_dir=str(tmp_path / "spool"), sensor_name="s1")
    path = _spool_path(target, "alerts", settings)            # where the sink keeps its spool
    (tmp_path / "spool").mkdir()
    holder = holding_the_write_lock(path)
    with pytest.raises(OutputError) as raised:
        open_sink(target, "alerts", settings)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(
        f"{target}: cannot use the spool: {path}: another process has held the spool's lock for ")
    assert message.endswith(" s while this one was switching it to WAL mode (PRAGMA journal_mode = WAL) "
                            "(an open sqlite3 shell? a stopped process?)")
    holder.execute("COMMIT")
    holder.close()


def test_writes_wait_for_another_process_holding_the_lock_and_name_themselves_at_the_bound(tmp_path, monkeypatch):
    path = tmp_path / "s.db"
    spool = Spool(str(path))
    holder = holding_the_write_lock(path)
    threading.Timer(HELD_SECONDS, lambda: holder.execute("COMMIT")).start()
    assert spool.push(["a", "b"]) == 0                         # waited, then appended
    assert spool.stats["lock_waits"] > 0
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(HELD_SECONDS, lambda: holder.execute("COMMIT")).start()
    spool.ack(spool.peek(1)[0][0])                             # waited, then deleted
    assert [line for _, line in spool.peek(10)] == ["b"]
    monkeypatch.setattr(spool_module, "LOCK_WAIT_LIMIT_SECONDS", SHORT_LIMIT_SECONDS)
    seq_b = spool.peek(1)[0][0]
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(SpoolError, match="while this one was taking the write lock to append lines"):
        spool.push(["c"])
    with pytest.raises(SpoolError, match="while this one was claiming lines to send"):
        spool.peek(1)
    with pytest.raises(SpoolError, match="while this one was deleting the lines the collector took"):
        spool.ack(seq_b)
    holder.execute("COMMIT")
    assert [line for _, line in spool.peek(10)] == ["b"]       # nothing half done
    holder.close()
    spool.close()


def open_files(path: str) -> list[str]:
    """This process's descriptors open on the spool at ``path`` or its -wal/-shm."""
    links = (os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd"))
    return sorted(link for link in links if link.startswith(path))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waited(condition, seconds: float = SPOOLED_SECONDS) -> bool:
    until = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > until:
            return False
        time.sleep(0.02)
    return True


def test_no_spool_connection_crosses_a_fork_and_each_process_spools_with_its_own(tmp_path):
    """live --workers forks after the sinks open; a sink whose spool a previous run left lines
    in sends them from the start, so its threads hold spool connections when the parent forks.
    SQLite forbids carrying a connection across fork() (the child shares the parent's lock
    bookkeeping of the file while holding none of its locks): the threads close their spools
    for the fork, the child opens its own at its first write, the parent's reopen after it.
    On main the child held the parent's five descriptors of the spool."""
    target = f"syslog+tcp://127.0.0.1:{closed_port()}"             # a collector that is down
    settings = SinkSettings(spool_dir=str(tmp_path / "spool"), sensor_name="s1")
    path = _spool_path(target, "alerts", settings)
    left = Spool(path)
    left.push(['{"n": 0}'])      # alert lines: JSON
    left.close()
    messages: list[str] = []
    sink = open_sink(target, "alerts", settings, notify=messages.append)
    assert waited(lambda: messages), "the sender never tried the collector"     # its threads run
    assert open_files(path)                                            # the parent's connections
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:                                   # a worker: what it inherited, then a line of its own
        code = 1
        try:
            os.write(writing, ("\n".join(open_files(path)) + "\n").encode())
            sink.write('{"n": 1}')
            code = 0 if waited(lambda: sink.depth == 2) else 2
        finally:
            os._exit(code)
    os.close(writing)
    with os.fdopen(reading) as pipe:
        inherited = pipe.read().split()
    assert os.waitpid(child, 0)[1] == 0, "the worker could not spool its line"
    assert inherited == []
    sink.write('{"n": 2}')
    assert waited(lambda: sink.depth == 3), "the parent's threads did not spool after the fork"
    sink.close()
    spool = Spool(path)
    assert sorted(line for _, line in spool.peek(10)) == ['{"n": 0}', '{"n": 1}', '{"n": 2}']
    spool.close()


def test_a_sink_counts_its_waits_for_another_process_holding_the_spool(tmp_path):
    """What a --workers sibling in a write costs, in the sink's counters and --metrics-file."""
    target = f"syslog+tcp://127.0.0.1:{closed_port()}"
    settings = SinkSettings(spool_dir=str(tmp_path / "spool"), sensor_name="s1")
    sink = open_sink(target, "alerts", settings)
    holder = holding_the_write_lock(_spool_path(target, "alerts", settings))
    threading.Timer(HELD_SECONDS, lambda: holder.execute("COMMIT")).start()
    sink.write('{"n": 1}')
    assert waited(lambda: sink.depth == 1), "the line was not spooled after the lock was freed"
    assert sink.lock_waits > 0
    outputs = type("Outputs", (), {"events": None, "alerts": sink})
    assert metrics.output_counters(outputs)[4] == {"alerts": sink.lock_waits}
    sink.close()
    holder.close()


def lines(rows: list[tuple[int, str]]) -> list[str]:
    return [line for _, line in rows]


class Claimant:
    """Another process (forked here) sending from the spool at ``path``: its connection claims
    the oldest ``count`` lines it may send (``seqs``); then it acks them when told to, or
    waits to be killed."""

    def __init__(self, path: str, count: int):
        seqs_in, seqs_out = os.pipe()
        self._orders_in, self._orders = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.close(self._orders)                # its end only: a parent that ends is EOF here
                spool = Spool(path)
                seqs = [seq for seq, _ in spool.peek(count)]
                os.write(seqs_out, (json.dumps(seqs) + "\n").encode())
                if os.read(self._orders_in, 1) == b"a":
                    spool.ack(seqs[-1])
                spool.close()
                code = 0
            finally:
                os._exit(code)
        os.close(seqs_out)
        os.close(self._orders_in)
        with os.fdopen(seqs_in) as answer:
            self.seqs = json.loads(answer.readline())

    def ack(self) -> None:
        os.write(self._orders, b"a")
        os.close(self._orders)
        assert os.waitpid(self.pid, 0)[1] == 0

    def kill(self) -> None:
        """SIGKILL, not reaped: a zombie until ``reap``."""
        os.kill(self.pid, signal.SIGKILL)

    def reap(self) -> None:
        os.close(self._orders)
        os.waitpid(self.pid, 0)


def test_a_live_processes_claimed_lines_are_peeked_by_no_other_and_left_by_its_acks(tmp_path):
    """``live --workers``: parent and workers send from one spool; on main a peek was the
    oldest lines whoever was sending them, and an ack deleted every line up to its seq."""
    path = str(tmp_path / "s.db")
    spool = Spool(path)
    spool.push(["a", "b", "c", "d"])
    first = Claimant(path, 2)
    assert len(first.seqs) == 2
    rows = spool.peek(1)
    assert lines(rows) == ["c"]                       # a and b are the first sibling's
    spool.push(["e"])
    second = Claimant(path, 10)                       # the seqs of three processes interleave
    assert len(second.seqs) == 2
    spool.ack(rows[-1][0])                            # c only
    assert spool.depth() == 4
    assert spool.peek(10) == []                       # d and e are the second sibling's
    second.ack()                                      # up to e: d and e, not the first's a and b
    assert spool.depth() == 2
    assert spool.peek(10) == []
    first.ack()
    assert spool.depth() == 0
    spool.close()


def test_a_killed_processes_claimed_lines_go_to_the_next_peek(tmp_path):
    path = str(tmp_path / "s.db")
    spool = Spool(path)
    spool.push(["a", "b", "c"])
    sibling = Claimant(path, 2)
    assert lines(spool.peek(10)) == ["c"]
    sibling.kill()                                    # a zombie, not yet reaped: gone all the same
    assert waited(lambda: lines(spool.peek(10)) == ["a", "b", "c"], 5), "the killed process still held a and b"
    sibling.reap()
    spool.ack(spool.peek(10)[-1][0])
    assert spool.depth() == 0
    spool.close()


def test_a_live_processes_claim_lapses_after_the_bound(tmp_path, monkeypatch):
    """A process stopped or hung with lines claimed: a sibling sends them once the claim is
    CLAIM_STALE_SECONDS old; the claimant's late ack then leaves them (they are the sibling's)."""
    monkeypatch.setattr(spool_module, "CLAIM_STALE_SECONDS", 0.5)
    path = str(tmp_path / "s.db")
    spool = Spool(path)
    spool.push(["a", "b"])
    sibling = Claimant(path, 1)
    assert lines(spool.peek(10)) == ["b"]
    time.sleep(0.6)
    assert lines(spool.peek(10)) == ["a", "b"]
    sibling.ack()
    assert spool.depth() == 2
    spool.close()


def test_a_claim_whose_pid_a_later_process_took_is_no_claim(tmp_path):
    """A pid is used again (after a crash, a reboot): the process that has it now started at
    another time than the claimant, so the claim is not its own."""
    path = str(tmp_path / "s.db")
    spool = Spool(path)
    spool.push(["before", "after"])
    sleeper = subprocess.Popen(["sleep", "60"])
    started = spool_module.process_start(sleeper.pid)
    assert started is not None
    db = sqlite3.connect(path)
    db.executemany("UPDATE spool SET claim_pid = ?, claim_start = ?, claimed_at = ? WHERE line = ?",
                   [(sleeper.pid, started - 1, time.time(), "before"), (sleeper.pid, started, time.time(), "after")])
    db.commit()
    db.close()
    assert lines(spool.peek(10)) == ["before"]
    sleeper.kill()
    sleeper.wait()
    assert lines(spool.peek(10)) == ["before", "after"]
    spool.close()


def test_a_claimant_is_known_from_its_own_stat_file_alone(tmp_path, monkeypatch):
    """The service's unit has ProcSubset=pid (no /proc/stat, /proc/uptime): a sibling's claim
    is judged from /proc/PID/stat alone, and an unreadable one never makes peek fail."""
    real_read_text = Path.read_text

    def pid_files_only(self, *args, **kwargs):
        if self.parts[:2] == ("/", "proc") and not (len(self.parts) > 2 and self.parts[2].isdigit()):
            raise PermissionError(13, "hidden by ProcSubset=pid", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", pid_files_only)
    path = str(tmp_path / "s.db")
    spool = Spool(path)
    spool.push(["mine", "siblings", "unknown"])
    sleeper = subprocess.Popen(["sleep", "60"])
    db = sqlite3.connect(path)
    db.executemany("UPDATE spool SET claim_pid = ?, claim_start = ?, claimed_at = ? WHERE line = ?",
                   [(sleeper.pid, spool_module.process_start(sleeper.pid), time.time(), "siblings"),
                    (sleeper.pid, None, time.time(), "unknown")])
    db.commit()
    db.close()
    assert lines(spool.peek(10)) == ["mine", "unknown"]
    sleeper.kill()
    sleeper.wait()
    spool.close()


def old_spool(path, lines: list[str]) -> None:
    """A spool as the version before claims wrote it."""
    db = sqlite3.connect(path)
    db.execute(SCHEMA_BEFORE_CLAIMS)
    db.executemany("INSERT INTO spool (bytes, line, items) VALUES (?, ?, 1)", [(len(line), line) for line in lines])
    db.commit()
    db.close()


def test_a_spool_of_the_version_before_claims_opens_with_its_lines_free(tmp_path):
    path = tmp_path / "old.db"
    old_spool(path, ["a", "b"])
    spool = Spool(str(path))
    assert lines(spool.peek(1)) == ["a"]
    sibling = Claimant(str(path), 10)
    assert sibling.seqs == [2]                        # b was free; a is this process's
    sibling.ack()
    assert lines(spool.peek(10)) == ["a"]
    spool.close()


def test_processes_opening_a_spool_of_an_older_version_at_the_same_moment_all_migrate_it(tmp_path):
    """Each opener finds the claim columns missing; one adds them, under the write lock, and the
    others find them there when they hold it (an ALTER TABLE adding a column a sibling just
    added fails with "duplicate column name")."""
    for n in range(MIGRATION_ROUNDS):
        old_spool(tmp_path / f"{n}.db", ["a"])
    paths, failures = racing_opens(Spool, "sensor.sinks.spool", tmp_path, MIGRATION_ROUNDS, OPENERS)
    assert failures == []
    for path in paths:
        spool = Spool(path)
        assert lines(spool.peek(10)) == ["a"]
        spool.close()
