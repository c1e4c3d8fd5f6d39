"""The on-disk spool between the sensor and a remote collector (or an unreachable PostgreSQL
store, sensor/store/spooled.py): a SQLite file of text records in arrival order, bounded in
bytes. A record holds ``items`` things (a sink's line is one alert or event; a store batch
holds many), so what a full spool drops is counted in the things the user cares about.

Lines are deleted only once the collector took them (at-least-once delivery: a line sent
just before a crash or a lost acknowledgement is sent again; receivers dedupe on alert_id
or event_id). When the lines waiting exceed the bound, the oldest are dropped and counted,
never silently: the newest alerts are the ones an analyst needs first after an outage.

Several processes may write one spool (``live --workers`` share a sink's spool): its open (the
switch to WAL mode, the table) and every write wait for another's lock with the store's
bounded backoff (sensor/sqlite_locks.py), counted in ``stats``; after the bound, one line.
"""
from __future__ import annotations

import sqlite3
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
        try:
            self._waiting_for_lock("switching it to WAL mode (PRAGMA journal_mode = WAL)",
                                   lambda: self.db.execute("PRAGMA journal_mode = WAL"))
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._waiting_for_lock("creating its table", lambda: self.db.execute(
                "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, bytes INTEGER NOT NULL, "
                "line TEXT NOT NULL, items INTEGER NOT NULL DEFAULT 1)"))
            if "items" not in {row[1] for row in self.db.execute("PRAGMA table_info(spool)")}:
                # a spool written before records had a count: each of its lines is one item
                self._waiting_for_lock("adding the items column to a spool of an older version", lambda: self.db.execute(
                    "ALTER TABLE spool ADD COLUMN items INTEGER NOT NULL DEFAULT 1"))
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

    def push(self, lines: list[str], items: list[int] | None = None) -> int:
        """Append ``lines`` (``items``: what each holds, default one); drop the oldest beyond
        the bound. Returns how many items were dropped."""
        counts = items or [1] * len(lines)
        self._waiting_for_lock("taking the write lock to append lines", lambda: self.db.execute("BEGIN IMMEDIATE"))
        try:
            self.db.executemany("INSERT INTO spool (bytes, line, items) VALUES (?, ?, ?)",
                                ((len(line.encode("utf-8")), line, n) for line, n in zip(lines, counts)))
            dropped = self._trim()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
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
        """The oldest ``limit`` lines as (seq, line)."""
        return self.db.execute("SELECT seq, line FROM spool ORDER BY seq LIMIT ?", (limit,)).fetchall()

    def ack(self, last_seq: int) -> None:
        """The collector has every line up to ``last_seq``."""
        self._waiting_for_lock("deleting the lines the collector took",
                               lambda: self.db.execute("DELETE FROM spool WHERE seq <= ?", (last_seq,)))

    def depth(self) -> int:
        return self.db.execute("SELECT count(*) FROM spool").fetchone()[0]

    def bytes(self) -> int:
        return self.db.execute("SELECT coalesce(sum(bytes), 0) FROM spool").fetchone()[0]

    def close(self) -> None:
        self.db.close()
