"""The on-disk spool between the sensor and a remote collector (or an unreachable PostgreSQL
store, sensor/store/spooled.py): a SQLite file of text records in arrival order, bounded in
bytes. A record holds ``items`` things (a sink's line is one alert or event; a store batch
holds many), so what a full spool drops is counted in the things the user cares about.

Lines are deleted only once the collector took them (at-least-once delivery: a line sent
just before a crash or a lost acknowledgement is sent again; receivers dedupe on alert_id
or event_id).

Several processes may send from one spool (``live --workers``: each forked worker runs a sender
of its own): ``peek`` claims the lines it returns for this process (its pid and the time, in
the transaction that picks them), and returns only lines no live process claimed, so in normal
operation each line is sent by one process. A claim lapses when its process is gone (a crash, a
kill: the survivors send its lines, never lost) or after CLAIM_STALE_SECONDS (a process stopped
or hung); ``ack`` deletes only this process's claimed lines, never a sibling's in flight. When the lines waiting exceed the bound, the oldest are dropped and counted,
never silently: the newest alerts are the ones an analyst needs first after an outage.

Several processes may write one spool (``live --workers`` share a sink's spool): its open (the
switch to WAL mode, the table) and every write wait for another's lock with the store's
bounded backoff (sensor/sqlite_locks.py), counted in ``stats``; after the bound, one line.
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Callable, TypeVar

from sensor.anomaly import Stats
from sensor.sqlite_locks import LOCK_WAIT_LIMIT_SECONDS, LockHeld, waiting_for_lock

# Default bound of one spool: days of alerts, or minutes to hours of a busy event stream.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# A statement waits this long on a lock SQLite takes briefly (a WAL recovery, a reader's
# snapshot); another writer's lock is waited for by ``_waiting_for_lock``.
BUSY_TIMEOUT_MS = 10_000
BUSY_WAIT = f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}"
# A claim older than this is another process's no more: longer than a live sender ever holds
# lines without claiming them again at its next peek (a failed send's backoff, at most 30 s,
# sender.RETRY_MAX_SECONDS; one send, whose every I/O step times out within 10 s; a fork's
# park, at most 15 s), so only a process stopped or hung loses its lines to a sibling, which
# then sends them a second time (the at-least-once case, as after a crash).
CLAIM_STALE_SECONDS = 120.0
# Columns added since the first spool version, with their definitions: a spool written by an
# older version gets them at open. ``items``: what a record holds (each old line is one);
# ``claim_pid``, ``claim_start``, ``claimed_at``: the process whose sender peeked the line (its
# pid and start time), and when (none: free).
ADDED_COLUMNS = {"items": "INTEGER NOT NULL DEFAULT 1", "claim_pid": "INTEGER", "claim_start": "INTEGER",
                 "claimed_at": "REAL"}
# Whether the claimant still lives: SQL function claim_held(pid, start).
CLAIM_HELD = "claim_held"

T = TypeVar("T")


class SpoolError(sqlite3.OperationalError):
    """The spool cannot be used; one line. An SQLite error, so that whoever handles a failing
    spool (the sinks at start and while spooling, the store's spool) handles this too."""


class Spool:
    """One connection; use it from one thread (and in the process that opened it)."""

    def __init__(self, path: str, max_bytes: int = DEFAULT_MAX_BYTES, stats: Stats | None = None):
        self.path = path
        self.max_bytes = max_bytes
        self.dropped = 0
        # Times another process held the lock a statement needed, and the milliseconds waited
        # ("lock_waits", "lock_wait_ms"): ``stats`` to go on counting in the caller's counter.
        self.stats = Stats() if stats is None else stats
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SpoolError(f"{path}: cannot make its directory: {e.strerror or e}") from None
        self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self.db.create_function(CLAIM_HELD, 2, claim_held)
        self.pid = os.getpid()        # the claimant of this connection's peeks
        self.start = process_start(self.pid)
        try:
            self._waiting_for_lock("switching it to WAL mode (PRAGMA journal_mode = WAL)",
                                   lambda: self.db.execute("PRAGMA journal_mode = WAL"))
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._waiting_for_lock("creating its table", lambda: self.db.execute(
                "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, bytes INTEGER NOT NULL, "
                "line TEXT NOT NULL, " + ", ".join(f"{name} {kind}" for name, kind in ADDED_COLUMNS.items()) + ")"))
            if set(ADDED_COLUMNS) - self._columns():
                self._in_write_transaction("to add columns to a spool of an older version", self._add_columns)
        except BaseException:
            self.db.close()
            raise

    def _waiting_for_lock(self, doing: str, step: Callable[[], T]) -> T:
        """``step()``, waiting while another process holds the lock it needs; after
        LOCK_WAIT_LIMIT_SECONDS a SpoolError naming the file and what was ``doing``."""
        try:
            return waiting_for_lock(self.db, doing, step, self.stats, LOCK_WAIT_LIMIT_SECONDS, BUSY_WAIT)
        except LockHeld as e:
            raise SpoolError(e.sentence(self.path, "spool")) from None

    def _columns(self) -> set[str]:
        return {row[1] for row in self.db.execute("PRAGMA table_info(spool)")}

    def _add_columns(self) -> None:
        """The columns an older version's spool lacks (looked at again under the write lock: a
        sibling process opening it at the same moment may have added them)."""
        for name in ADDED_COLUMNS.keys() - self._columns():
            self.db.execute(f"ALTER TABLE spool ADD COLUMN {name} {ADDED_COLUMNS[name]}")

    def _in_write_transaction(self, doing: str, step: Callable[[], T]) -> T:
        """``step()`` in a transaction holding the write lock (waited for), committed, or
        rolled back if it fails."""
        self._waiting_for_lock(f"taking the write lock {doing}", lambda: self.db.execute("BEGIN IMMEDIATE"))
        try:
            result = step()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return result

    def push(self, lines: list[str], items: list[int] | None = None) -> int:
        """Append ``lines`` (``items``: what each holds, default one); drop the oldest beyond
        the bound. Returns how many items were dropped."""
        counts = items or [1] * len(lines)

        def append() -> int:
            self.db.executemany("INSERT INTO spool (bytes, line, items) VALUES (?, ?, ?)",
                                ((len(line.encode("utf-8")), line, n) for line, n in zip(lines, counts)))
            return self._trim()

        dropped = self._in_write_transaction("to append lines", append)
        self.dropped += dropped
        return dropped

    def _trim(self) -> int:
        total = self.bytes()
        if total <= self.max_bytes:
            return 0
        # The newest rows that fit stay; everything older goes.
        cutoff = self.db.execute(
            "SELECT seq FROM (SELECT seq, sum(bytes) OVER (ORDER BY seq DESC) AS kept FROM spool) "
            "WHERE kept > ? ORDER BY seq DESC LIMIT 1", (self.max_bytes,)).fetchone()[0]
        dropped = self.db.execute("SELECT sum(items) FROM spool WHERE seq <= ?", (cutoff,)).fetchone()[0]
        self.db.execute("DELETE FROM spool WHERE seq <= ?", (cutoff,))
        return dropped

    def peek(self, limit: int) -> list[tuple[int, str]]:
        """The oldest ``limit`` lines no other live process claimed, as (seq, line), claimed
        for this one (its own earlier claims renewed): free lines, its own, and those whose
        claimant is gone or whose claim is older than CLAIM_STALE_SECONDS."""
        now = time.time()
        rows = self._waiting_for_lock("claiming lines to send", lambda: self.db.execute(
            "UPDATE spool SET claim_pid = :pid, claim_start = :start, claimed_at = :now WHERE seq IN (SELECT seq "
            f"FROM spool WHERE claim_pid IS NULL OR claim_pid = :pid OR claimed_at < :stale "
            f"OR NOT {CLAIM_HELD}(claim_pid, claim_start) ORDER BY seq LIMIT :limit) RETURNING seq, line",
            {"pid": self.pid, "start": self.start, "now": now, "stale": now - CLAIM_STALE_SECONDS,
             "limit": limit}).fetchall())
        return sorted(rows)

    def ack(self, last_seq: int) -> None:
        """The collector has every line this process claimed up to ``last_seq`` (the seqs of
        processes sending at once interleave: a sibling's claimed lines stay)."""
        self._waiting_for_lock("deleting the lines the collector took", lambda: self.db.execute(
            "DELETE FROM spool WHERE seq <= ? AND claim_pid = ?", (last_seq, self.pid)))

    def depth(self) -> int:
        return self.db.execute("SELECT count(*) FROM spool").fetchone()[0]

    def bytes(self) -> int:
        return self.db.execute("SELECT coalesce(sum(bytes), 0) FROM spool").fetchone()[0]

    def close(self) -> None:
        self.db.close()


def process_start(pid: int) -> int | None:
    """When process ``pid`` of this host started, in clock ticks since boot (proc(5)
    /proc/PID/stat field 22), which no other process with the same pid shares; None where it is
    gone, a zombie (killed, not yet reaped), or cannot be read (no procfs, another user's
    process hidden by the unit's ProtectProc=invisible)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()        # after "pid (comm) ": the comm may hold spaces
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def claim_held(pid: int, start: int | None) -> bool:
    """Whether the process that claimed a line lives: ``pid`` is alive and started when the
    claimant did (a pid used again by a later process holds no claim of the one before). A
    claimant whose start could not be read is taken as gone (its lines may be sent twice, never
    lost)."""
    return start is not None and process_start(pid) == start
