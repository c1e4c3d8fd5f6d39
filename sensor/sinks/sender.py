"""A sink that ships lines to a remote collector through the spool, from a thread of its own.

``write`` only appends to a list in memory and wakes a thread, so capture never waits for
the network or the disk. That thread moves lines into the spool at once (within
milliseconds); a second one sends the oldest spooled lines in batches, and a batch leaves the
spool only after the transport says the collector has it. A failed send is retried with exponential backoff
(RETRY_FIRST_SECONDS doubling up to RETRY_MAX_SECONDS) while new lines keep being spooled.
Neither thread ends on a failing spool (its lock held past the bound, a full disk, a damaged
file): each says it once and retries the same way, and what was sent but not taken out of the
spool is sent again. A spooled line that is not a record (``Unformattable``) leaves the spool,
counted as rejected, rather than block every line after it.

Forked decoders (``live --workers``) inherit the sink but not its threads: the first write in
a new process starts threads and spool connections of their own (SQLite serialises the two
processes). Each sender sends only the lines its spool claimed for its process (Spool.peek), so
parent and workers never send the same line while both live; the lines a process claimed and
did not see taken are sent by a sibling once it is gone (killed, crashed), never lost. No
spool connection crosses the fork: where the threads already run (a previous run left lines,
so the parent sends them from the start), they close their spools before it and open them
again after it (SQLite: a connection must not be carried across a fork, as the child would
share the parent's lock bookkeeping of the file while holding none of its locks).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import weakref
from pathlib import Path
import time
from typing import Callable, Protocol, TypeVar

from sensor.anomaly import Stats
from sensor.sinks.spool import Spool

# Lines per send: one HTTP request, or one burst of syslog frames.
BATCH_LINES = 500
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
# At close (end of a replay, service stop), the longest the sender goes on emptying the spool
# (outputs.spool_flush_seconds): a collector that answers takes thousands of lines in that
# time, and a stopping service must not outlast systemd's stop timeout. A send that fails at
# close ends the wait at once (the collector is down: no point in backing off). What is left
# stays in the on-disk spool and is sent by the next run.
FLUSH_SECONDS = 5.0
# How long past the flush deadline close() waits for a sender that is in a send: the spool's
# last acknowledgement is a short SQLite transaction.
SEND_SLACK_SECONDS = 0.5
# Longest the sender sleeps without news (it is woken when lines are spooled).
WAKE_SECONDS = 0.5
# Lines held in memory when the spool itself cannot be written (its disk is full): the
# oldest beyond this are counted as dropped.
MAX_PENDING_LINES = 100_000
# Before a fork, the longest the threads are given to close their spools: a send in progress
# ends first (the transports' I/O timeouts are 5 and 10 s). One still sending after this keeps
# its connection open across the fork rather than stop the fork.
FORK_PARK_SECONDS = 15.0
# What a transport's format step raises on a line of the wrong shape (json.loads' ValueError,
# a field of the wrong type met by .get or arithmetic).
FORMAT_ERRORS = (ValueError, TypeError, AttributeError)

T = TypeVar("T")


class SinkUnavailable(Exception):
    """The collector did not take the batch, or only its first ``delivered`` lines; the
    message says why, for the log."""

    def __init__(self, message: str, delivered: int = 0):
        super().__init__(message)
        self.delivered = delivered


class Unformattable(ValueError):
    """A spooled line that is not a record the transport can make a message of (not JSON, not
    an object: written by hand, by an older version, or damaged), at ``position`` in the batch.
    Raised before anything of the batch is sent."""

    def __init__(self, position: int, reason: str):
        super().__init__(reason)
        self.position = position


def record_of(line: str) -> dict:
    """A spooled line's record (a JSON object), or ValueError saying what it is instead."""
    record = json.loads(line)
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {type(record).__name__}, not an object")
    return record


def formatted(batch: list, format_one: Callable[..., T]) -> list[T]:
    """``format_one`` of each of a batch's lines (or of what was made of them, in the same
    order); Unformattable for the first it fails on."""
    out = []
    for position, item in enumerate(batch):
        try:
            out.append(format_one(item))
        except FORMAT_ERRORS as e:
            raise Unformattable(position, f"{type(e).__name__}: {e}") from None
    return out


class Transport(Protocol):
    rejected: int          # records the collector refused for good (not sent again)
    rejection: str         # why, the last time, for the warning

    def send(self, lines: list[str]) -> None:
        """Deliver every line (or count it as rejected) or raise SinkUnavailable; Unformattable
        (nothing sent) for a line that is not a record."""
    def idle(self) -> None:
        """Between batches: redeliver what a connection that ended may have lost, or raise
        SinkUnavailable."""
    def forked(self) -> None:
        """In a forked worker, before its first send: let go of the connection the parent
        holds (this process's copy of it only: the parent goes on with it)."""
    def close(self) -> None: ...


class SpooledSink:
    def __init__(self, path: str, transport: Transport, spool_path: str, spool_max_bytes: int,
                 on_error: Callable[[str], None] | None = None, flush_seconds: float = FLUSH_SECONDS):
        self.path = path                  # the target as the user wrote it, for messages
        self.transport = transport
        self.spool_path = spool_path
        self.spool_max_bytes = spool_max_bytes
        self.on_error = on_error or (lambda message: None)
        self.flush_seconds = flush_seconds
        self.lines = 0                    # handed to write()
        self.sent = 0                     # taken by the collector
        self.rejected = 0                 # refused for good (not sent again): by the collector, or unformattable
        self._refused = 0                 # of those, the collector's (the transport's count)
        self._unformattable_said = False
        self.dropped = 0                  # pushed out of the full spool (oldest first)
        self.depth = 0                    # lines waiting in the spool
        self._pending: list[str] = []
        self._cv = threading.Condition()
        self._closing = False
        self._spool_failing = False
        self._pid = None
        self._threads: list[threading.Thread] = []
        spool = Spool(spool_path, spool_max_bytes)     # refuse an unusable spool at start
        self.depth = spool.depth()
        spool.close()
        # Another process's lock met by this process's spool connections (Spool.stats): the
        # open above, then one counter per thread.
        self._lock_stats = [spool.stats]
        if self.depth:           # a previous run left lines: send them even if this one has none
            self._start()

    @property
    def lost(self) -> int:
        return self.dropped

    @property
    def lock_waits(self) -> int:
        """Times a statement on the spool found another process (a --workers sibling) holding
        its lock, in this process."""
        return sum(stats["lock_waits"] for stats in self._lock_stats)

    def write(self, line: str) -> None:
        if self._pid != os.getpid():
            self._start()
        with self._cv:
            self._pending.append(line)
            if len(self._pending) > MAX_PENDING_LINES:
                del self._pending[0]
                self.dropped += 1
            self.lines += 1
            self._cv.notify()

    def files(self) -> list[str]:
        """The spool's directory and files, for the user the service drops to."""
        base = Path(self.spool_path)
        return [str(p) for p in (base.parent, base, Path(f"{base}-wal"), Path(f"{base}-shm")) if p.exists()]

    def reopen(self) -> None:
        """SIGHUP: nothing to reopen; the next send reconnects if the collector went away."""

    def close(self) -> None:
        if not self._threads or self._pid != os.getpid():
            return
        with self._cv:
            self._closing = True
            self._cv.notify()
        spooler, sender = self._threads
        spooler.join()               # every line written reaches the disk
        # The sender stops by itself at its deadline, or at once when a send fails; a send
        # that hangs (a collector that accepts and never answers) is left behind, a daemon
        # thread, at the same deadline.
        sender.join(self.flush_seconds + SEND_SLACK_SECONDS)
        self._threads = []
        _running.discard(self)
        if sender.is_alive():
            self.on_error(f"{self.path}: the collector did not answer within {self.flush_seconds:g} s; "
                          f"what it did not take waits in the spool {self.spool_path} for the next run")
        elif self.depth:
            self.on_error(f"{self.path}: {self.depth:,} line(s) wait in the spool {self.spool_path} "
                          "for the next run")

    def _start(self) -> None:
        """The threads of this process (at the first write, or the first after a fork): one
        moves lines from memory to the spool, one sends from the spool, so a collector that
        hangs a send never keeps lines from reaching the disk."""
        if self._pid is not None:        # a forked worker: the parent's connection is not ours
            self.transport.forked()
            self._lock_stats = []
        spooler_stats, sender_stats = Stats(), Stats()
        self._lock_stats += [spooler_stats, sender_stats]
        self._pid = os.getpid()
        self._cv = threading.Condition()
        self._pending = []
        self._closing = False
        self._spooler_done = False
        self._wake = threading.Event()
        self._fork = threading.Condition()   # guards the two below
        self._forking = False                # a fork is about to happen in this process
        self._parked = 0                     # threads whose spool is closed for it, or that ended
        _running.add(self)
        self._threads = [threading.Thread(target=self._thread, args=(self._spooler, spooler_stats),
                                          name=f"spool {self.path}", daemon=True),
                         threading.Thread(target=self._thread, args=(self._sender, sender_stats),
                                          name=f"send {self.path}", daemon=True)]
        for thread in self._threads:
            thread.start()

    def _spooler(self, lock_stats: Stats) -> None:
        spool = None                         # opened at the first batch (and after a failure)
        give_up = None                       # closing, and the spool fails: when to stop trying
        try:
            while True:
                with self._cv:
                    while not self._pending and not self._closing and not self._forking:
                        self._cv.wait()
                    batch, self._pending = self._pending, []
                    closing = self._closing
                if batch:
                    spool = self._spool(spool, batch, lock_stats)
                    self._wake.set()
                    if spool is None and closing:     # tried until the flush bound, not forever
                        give_up = give_up or time.monotonic() + self.flush_seconds
                        if time.monotonic() >= give_up:
                            self._unspooled_at_close()
                            return
                elif closing:
                    return
                spool = self._parked_for_fork(spool)
        finally:
            if spool is not None:
                spool.close()
            self._spooler_done = True
            self._wake.set()

    def _sender(self, lock_stats: Stats) -> None:
        """Send rounds until done; a spool that fails under them (its lock held past the bound,
        a full disk, a damaged file) is an outage like the collector's: said once, backed off
        from, its connection opened again. A batch sent and not acknowledged in the spool is
        sent again (at-least-once)."""
        spool = None                         # opened at the first round (and after a failure)
        spool_backoff = 0.0
        spool_failing = False
        self._backoff = 0.0                  # the collector's outage, in _send_round
        self._failing = False
        self._deadline = None                # closing: when the flush ends
        self._limit = BATCH_LINES            # lines in the next batch
        try:
            while True:
                spool = self._parked_for_fork(spool)
                try:
                    spool = spool or Spool(self.spool_path, self.spool_max_bytes, lock_stats)
                    if self._send_round(spool):
                        return
                except sqlite3.Error as e:
                    if spool is not None:
                        spool.close()
                        spool = None
                    spool_backoff = min(max(RETRY_FIRST_SECONDS, spool_backoff * 2), RETRY_MAX_SECONDS)
                    if not spool_failing:
                        spool_failing = True
                        self.on_error(f"{self.path}: cannot send from the spool {self.spool_path}: {e}; "
                                      "retrying (lines sent and not yet taken out of it are sent again)")
                    if self._spooler_done:      # closing: what is left waits for the next run
                        return
                    self._sleep(spool_backoff)
                    continue
                spool_backoff = 0.0
                if spool_failing:
                    spool_failing = False
                    self.on_error(f"{self.path}: sending from the spool again")
        finally:
            self.transport.close()
            if spool is not None:
                spool.close()

    def _send_round(self, spool: Spool) -> bool:
        """Send one batch (or wait for lines); True when the sender is done (closing)."""
        self.depth = depth = spool.depth()
        if self._spooler_done:       # closing, and everything written is spooled
            self._deadline = self._deadline or time.monotonic() + self.flush_seconds
            if time.monotonic() >= self._deadline:
                return True
        # Lines a sibling process (a --workers worker, or the parent) claimed are its to send.
        rows = spool.peek(self._limit) if depth else []
        self._limit = BATCH_LINES
        if not rows:
            try:
                self.transport.idle()
            except SinkUnavailable:
                pass                 # tried again at the next wake
            if self._deadline is not None:      # closing: what a live sibling claimed is its to send
                return True
            self._wake.wait(timeout=WAKE_SECONDS)
            self._wake.clear()
            return False
        try:
            self.transport.send([line for _, line in rows])
        except Unformattable as e:
            # Nothing was sent: the lines before it go first, as a batch of their own;
            # then it is the oldest, and leaves the spool (it would block every later line).
            if e.position:
                self._limit = e.position
            else:
                self._unformattable(spool, rows[0][0], e)
            return False
        except SinkUnavailable as e:
            if e.delivered:
                self._delivered(spool, rows[:e.delivered])
            self._backoff = min(max(RETRY_FIRST_SECONDS, self._backoff * 2), RETRY_MAX_SECONDS)
            if not self._failing:
                self._failing = True
                self.on_error(f"{self.path}: {e}; lines wait in the spool {self.spool_path} "
                              f"(retrying, at most {self.spool_max_bytes:,} bytes, oldest dropped first)")
            if self._deadline is not None:      # closing, and the collector is down
                return True
            self._sleep(self._backoff)
            return False
        self._delivered(spool, rows)
        self._backoff = 0.0
        if self._failing:
            self._failing = False
            self.on_error(f"{self.path}: delivering again ({self.dropped:,} line(s) dropped "
                          "from the full spool meanwhile)")
        return False

    def _park(self) -> None:
        """Before a fork in this process: wait (up to FORK_PARK_SECONDS) until both threads
        have closed their spools (``_parked_for_fork``)."""
        if self._pid != os.getpid() or not self._threads:
            return
        with self._fork:
            self._forking = True
        with self._cv:
            self._cv.notify()
        self._wake.set()
        with self._fork:
            self._fork.wait_for(lambda: self._parked == len(self._threads), FORK_PARK_SECONDS)

    def _unpark(self) -> None:
        """After the fork, in the parent: the threads open their spools again."""
        with self._fork:
            self._forking = False
            self._fork.notify_all()

    def _parked_for_fork(self, spool: Spool | None) -> Spool | None:
        """In a thread, between two uses of ``spool``: if a fork is coming, close it and wait
        until the fork is over; then None (the thread opens it again at its next use, where a
        failing open is handled as any failing spool)."""
        with self._fork:
            if not self._forking:
                return spool
            if spool is not None:
                spool.close()
            self._parked += 1
            self._fork.notify_all()
            self._fork.wait_for(lambda: not self._forking)
            self._parked -= 1
        return None

    def _thread(self, work: Callable[[Stats], None], lock_stats: Stats) -> None:
        """A thread's ``work``; once it ends (its spool closed), a coming fork need not wait for it."""
        try:
            work(lock_stats)
        finally:
            with self._fork:
                self._parked += 1
                self._fork.notify_all()

    def _delivered(self, spool: Spool, rows: list[tuple[int, str]]) -> None:
        """The collector answered for ``rows``: they leave the spool, taken or refused."""
        spool.ack(rows[-1][0])
        refused = self.transport.rejected - self._refused
        if refused and not self._refused:
            self.on_error(f"{self.path}: the collector refused {refused:,} record(s) ({self.transport.rejection}); "
                          "refused records are not sent again, only counted (metrics: output_rejected_lines_total)")
        self._refused += refused
        self.rejected += refused
        self.sent += len(rows) - refused

    def _unformattable(self, spool: Spool, seq: int, error: Unformattable) -> None:
        """The oldest spooled line (``seq``) is not a record: it leaves the spool, counted as
        rejected; said the first time."""
        spool.ack(seq)
        if not self._unformattable_said:
            self._unformattable_said = True
            self.on_error(f"{self.path}: a line in the spool {self.spool_path} is not a record it can send "
                          f"({error}); such lines are not sent, only counted (metrics: output_rejected_lines_total)")
        self.rejected += 1

    def _sleep(self, seconds: float) -> None:
        """Back off, cut short when closing begins (then one more try decides)."""
        until = time.monotonic() + seconds
        while time.monotonic() < until and not self._spooler_done and not self._forking:
            time.sleep(min(WAKE_SECONDS / 5, until - time.monotonic()))

    def _unspooled_at_close(self) -> None:
        """Closing, and the spool has not taken the lines in memory within the flush bound:
        they are counted as dropped and said, rather than keep the process from ending."""
        with self._cv:
            lost, self._pending = len(self._pending), []
            self.dropped += lost
        self.on_error(f"{self.path}: {lost:,} line(s) could not be spooled to {self.spool_path} within "
                      f"{self.flush_seconds:g} s of closing and are lost (metrics: spool_dropped_total)")

    def _spool(self, spool: Spool | None, batch: list[str], lock_stats: Stats) -> Spool | None:
        """Append ``batch`` to the spool (opened first if ``spool`` is None); the spool, or None
        when it failed (closed, opened again at the next batch)."""
        try:
            spool = spool or Spool(self.spool_path, self.spool_max_bytes, lock_stats)
            self.dropped += spool.push(batch)
        except sqlite3.Error as e:   # the spool's disk is full or gone, its lock held: keep them in memory
            if spool is not None:
                spool.close()
            with self._cv:
                self._pending[:0] = batch
                excess = len(self._pending) - MAX_PENDING_LINES
                if excess > 0:
                    del self._pending[:excess]
                    self.dropped += excess
            if not self._spool_failing:
                self._spool_failing = True
                self.on_error(f"{self.path}: cannot spool to {self.spool_path}: {e}; holding up to "
                              f"{MAX_PENDING_LINES:,} lines in memory")
            time.sleep(RETRY_FIRST_SECONDS)
            return None
        if self._spool_failing:
            self._spool_failing = False
            self.on_error(f"{self.path}: spooling again")
        try:
            self.depth = spool.depth()
        except sqlite3.Error:
            pass      # the batch is in; the gauge waits for the sender's next round, which says why
        return spool


# The sinks whose threads run in this process: parked around a fork, so that no spool
# connection crosses it (a forked worker opens its own at its first write).
_running: weakref.WeakSet[SpooledSink] = weakref.WeakSet()


def _park_all() -> None:
    for sink in list(_running):
        sink._park()


def _unpark_all() -> None:
    for sink in list(_running):
        sink._unpark()


os.register_at_fork(before=_park_all, after_in_parent=_unpark_all, after_in_child=_running.clear)
