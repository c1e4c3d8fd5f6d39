"""Waiting for another SQLite writer's lock: the one bounded backoff of the store
(sensor/store/sqlite.py) and the sinks' spool (sensor/sinks/spool.py), two files that
several processes write at once (two sensors on one store, ``live --workers`` on one spool).

SQLite's own busy wait is not enough: it gives up at once where waiting could deadlock, a
reader becoming a writer, which is what ``PRAGMA journal_mode = WAL`` on a new file is while
another process holds its write lock (two writers opening a new file at the same moment).
So every statement that can meet another writer's lock runs through ``waiting_for_lock``,
with SQLite's busy wait off meanwhile. Standard library only: the sinks import it at start-up.
"""
from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter
from typing import Callable, TypeVar

# Taking the write lock: first retry after this, doubling up to the cap, with jitter so two
# writers do not retry in step; after the limit the file is reported stuck (a writer holds
# the lock for milliseconds per batch, so a minute means something else holds it: an open
# sqlite3 shell, a process stopped mid-transaction).
LOCK_RETRY_FIRST_SECONDS = 0.002
LOCK_RETRY_MAX_SECONDS = 0.25
LOCK_WAIT_LIMIT_SECONDS = 60.0
# What turns SQLite's busy wait off while the backoff waits.
NO_BUSY_WAIT = "PRAGMA busy_timeout = 0"

T = TypeVar("T")


class LockTaken(Exception):
    """Another connection holds the lock a step needs (``waiting_for_lock`` retries it)."""


class LockHeld(Exception):
    """The lock was not free within the bound: ``waited`` seconds while ``doing``."""

    def __init__(self, doing: str, waited: float):
        super().__init__(doing, waited)
        self.doing = doing
        self.waited = waited

    def sentence(self, path: str, what: str) -> str:
        """One line for the user about the ``what`` ("store", "spool") at ``path``."""
        return (f"{path}: another process has held the {what}'s lock for {self.waited:.0f} s while this one "
                f"was {self.doing} (an open sqlite3 shell? a stopped process?)")


def lock_taken(error: sqlite3.Error) -> bool:
    """SQLite's "database is locked" (SQLITE_BUSY) or "database table is locked" (SQLITE_LOCKED)."""
    return "locked" in str(error) or "busy" in str(error)


def waiting_for_lock(db, doing: str, step: Callable[[], T], stats: Counter, limit_seconds: float,
                     busy_wait: str, no_busy_wait: str = NO_BUSY_WAIT) -> T:
    """``step()``; while another connection holds a lock it needs (an SQLite lock error or
    LockTaken), again after a jittered backoff counted in ``stats`` ("lock_waits", and
    "lock_wait_ms" once done) for up to ``limit_seconds``, then LockHeld naming what was
    ``doing``. SQLite's busy wait on ``db`` is off (``no_busy_wait``) meanwhile and set back
    by ``busy_wait`` after."""
    delay = LOCK_RETRY_FIRST_SECONDS
    waited = 0.0
    db.execute(no_busy_wait)        # the loop below waits, and counts
    try:
        while True:
            try:
                result = step()
                break
            except LockTaken:
                pass
            except sqlite3.OperationalError as e:
                if not lock_taken(e):
                    raise
            if waited >= limit_seconds:
                raise LockHeld(doing, waited)
            pause = delay * random.uniform(0.5, 1.0)
            time.sleep(pause)
            waited += pause
            stats["lock_waits"] += 1
            delay = min(delay * 2, LOCK_RETRY_MAX_SECONDS)
    finally:
        db.execute(busy_wait)
    if waited:
        stats["lock_wait_ms"] += int(waited * 1000)
    return result
