"""What the lock tests of the store (tests/store/test_lock_waits.py) and of the sinks' spool
(tests/sinks/test_spool.py) share: both wait with the one backoff of sensor/sqlite_locks.py."""
from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import pytest

# How long the test's own connection holds the lock, and the bound a store or spool is given
# instead of its minute when the test waits for it to give up.
HELD_SECONDS = 0.5
SHORT_LIMIT_SECONDS = 0.5


def holding_the_write_lock(path) -> sqlite3.Connection:
    """A connection of the test's own in a write transaction on ``path``: on a new file,
    the state of another writer switching it to WAL mode (it holds the write lock, then
    waits for the readers to leave)."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def opened_once_the_lock_is_freed(opener: type, path: Path):
    """``opener(path)`` while the test's connection holds the lock for HELD_SECONDS: it must
    wait that long (counted in its stats) and come up in WAL mode. Returns what it opened."""
    holder = holding_the_write_lock(path)
    threading.Timer(HELD_SECONDS, lambda: holder.execute("COMMIT")).start()
    started = time.monotonic()
    opened = opener(str(path))
    assert time.monotonic() - started >= HELD_SECONDS * 0.9
    assert opened.stats["lock_waits"] > 0 and opened.stats["lock_wait_ms"] >= HELD_SECONDS * 1000 * 0.5
    assert opened.db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    holder.close()
    return opened


def gives_up_at_the_bound(opener: type, error: type, path: Path) -> str:
    """``opener(path)`` while the test's connection never lets go of the lock (the caller has
    set the bound to SHORT_LIMIT_SECONDS): it must raise ``error`` at the backoff's bound, not
    at SQLite's own busy timeout, naming the WAL switch. Returns the error's message."""
    holder = holding_the_write_lock(path)
    started = time.monotonic()
    with pytest.raises(error) as raised:
        opener(str(path))
    waited = time.monotonic() - started
    holder.execute("COMMIT")
    holder.close()
    message = str(raised.value)
    assert "\n" not in message
    assert "while this one was switching it to WAL mode (PRAGMA journal_mode = WAL)" in message
    assert SHORT_LIMIT_SECONDS <= waited < SHORT_LIMIT_SECONDS + 2
    return message


def _open_once(opener: type, path: str, barrier, results) -> None:
    """In a process of its own: open ``path`` at the same moment as the others."""
    barrier.wait()
    try:
        opener(path).close()
        results.put(None)
    except Exception as e:      # the store's StoreError, the spool's sqlite3.Error: said as text
        results.put(str(e))


def racing_opens(opener: type, module: str, directory: Path, rounds: int, processes: int) -> tuple[list[str], list[str]]:
    """``rounds`` times, ``processes`` processes open one new file with ``opener`` at the same
    moment, each forked from a server that has ``module`` loaded (so they start within
    microseconds of each other). Returns the files and the failures' messages."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([module])
    paths, failures = [], []
    for n in range(rounds):
        path = str(directory / f"{n}.db")
        barrier, results = context.Barrier(processes), context.Queue()
        openers = [context.Process(target=_open_once, args=(opener, path, barrier, results)) for _ in range(processes)]
        for process in openers:
            process.start()
        failures += [error for error in (results.get(timeout=120) for _ in openers) if error]
        for process in openers:
            process.join(timeout=60)
        paths.append(path)
    return paths, failures
