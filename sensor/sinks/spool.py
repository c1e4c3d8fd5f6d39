"""The on-disk spool between the sensor and a remote collector (or an unreachable PostgreSQL
store, sensor/store/spooled.py): a SQLite file of text records in arrival order, bounded in
bytes. A record holds ``items`` things (a sink's line is one alert or event; a store batch
holds many), so what a full spool drops is counted in the things the user cares about.

Lines are deleted only once the collector took them (at-least-once delivery: a line sent
just before a crash or a lost acknowledgement is sent again; receivers dedupe on alert_id
or event_id). When the lines waiting exceed the bound, the oldest are dropped and counted,
never silently: the newest alerts are the ones an analyst needs first after an outage.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

# Default bound of one spool: days of alerts, or minutes to hours of a busy event stream.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# A writer waits this long for the other process's lock (two --workers share one spool).
BUSY_TIMEOUT_MS = 10_000


class Spool:
    """One connection; use it from one thread."""

    def __init__(self, path: str, max_bytes: int = DEFAULT_MAX_BYTES):
        self.path = path
        self.max_bytes = max_bytes
        self.dropped = 0
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                        "bytes INTEGER NOT NULL, line TEXT NOT NULL, items INTEGER NOT NULL DEFAULT 1)")
        if "items" not in {row[1] for row in self.db.execute("PRAGMA table_info(spool)")}:
            # a spool written before records had a count: each of its lines is one item
            self.db.execute("ALTER TABLE spool ADD COLUMN items INTEGER NOT NULL DEFAULT 1")

    def push(self, lines: list[str], items: list[int] | None = None) -> int:
        """Append ``lines`` (``items``: what each holds, default one); drop the oldest beyond
        the bound. Returns how many items were dropped."""
        counts = items or [1] * len(lines)
        self.db.execute("BEGIN IMMEDIATE")
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
        self.db.execute("DELETE FROM spool WHERE seq <= ?", (last_seq,))

    def depth(self) -> int:
        return self.db.execute("SELECT count(*) FROM spool").fetchone()[0]

    def bytes(self) -> int:
        return self.db.execute("SELECT coalesce(sum(bytes), 0) FROM spool").fetchone()[0]

    def close(self) -> None:
        self.db.close()
