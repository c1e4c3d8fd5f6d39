"""While the PostgreSQL store is unreachable, a sensor keeps capturing: each batch it would
have written (events and coercion alerts, not yet judged) waits in a local on-disk spool,
the SIEM sinks' Spool (sensor/sinks/spool.py: a SQLite file, bounded in bytes, the oldest
dropped and counted in events and alerts when it is full). Retries back off from
RETRY_FIRST_SECONDS doubling to ``retry_max_seconds``; once the database answers, the spooled
batches are written oldest first through the same transaction as a live batch (so the
detector's day counts and alerts are raised then, in order), and new batches wait behind
them until the spool is empty. A batch leaves the spool only after its transaction
committed: a sensor killed in between writes it again on the next start, and the store's
ON CONFLICT keys make that a no-op (no event, key day or alert twice).

Each sensor process writes a spool file of its own, ``store-<database>-<slot>.db`` in the
spool directory, holding the slot's lock file (flock) while it runs: processes of one host
(``live --workers``, several replays) never share one, and a sensor that starts delivers a
spool a previous process of the same database left, before its own batches. A spool file is
made only when the database first fails; an empty one is removed at the end.

Only a lost connection is spooled. Anything else the database says (permission denied, a
constraint) ends the run with one line as before: spooling a configuration error would hide
it. A database that does not answer at start is an outage like any other: the sensor starts
spooling, and the first delivery connects and checks (migrates) the schema as a start does;
if the database then turns out unusable (the password refused, a missing database, a schema
too new) the run ends with one line naming what stays in the spool for the next run.
"""
from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, TypeVar

from sensor.coercion.events import CoercionAlert
from sensor.events import RpcCallEvent
from sensor.net.stream import FlowKey
from sensor.sinks.sender import FLUSH_SECONDS, RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS
from sensor.sinks.spool import Spool
from sensor.store.sqlite import StoreError

T = TypeVar("T")

# Default bound of the store's spool: an event is about 1.25 kB of JSON, so this holds about
# 200,000 events, hours of a busy mirror port's DCE/RPC calls.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# Longest wait between two attempts to reach the database (how late a recovery is noticed):
# the sinks' back-off, from their first wait.
DEFAULT_RETRY_MAX_SECONDS = RETRY_MAX_SECONDS
# At the end of a run, how long to keep trying to reach the database to empty the spool
# (the sinks' wait for a collector); what is left is delivered by the next run of the
# sensor against the same database.
DEFAULT_FLUSH_SECONDS = FLUSH_SECONDS
# Longest one commit spends delivering spooled batches before capture goes on, so a long
# backlog drains between packets instead of stalling the capture.
DELIVER_SLICE_SECONDS = 0.25


@dataclass(frozen=True)
class StoreSpoolSettings:
    """The PostgreSQL store's spool settings ([store] of the configuration)."""
    directory: str = ""           # load_config: outputs.spool_dir, else "spool" beside the db or in the
                                  # state directory ("" here: the current directory)
    max_bytes: int = DEFAULT_MAX_BYTES
    retry_max_seconds: float = DEFAULT_RETRY_MAX_SECONDS
    flush_seconds: float = DEFAULT_FLUSH_SECONDS


@dataclass(frozen=True)
class Batch:
    """What a sensor commits at once: new events and coercion alerts, not yet judged, and the
    clock bound of its "event time ahead of the clock" count (wall clock when it was made)."""
    events: list[RpcCallEvent]
    coercion: list[CoercionAlert]
    ahead_ms: int

    @property
    def items(self) -> int:
        return len(self.events) + len(self.coercion)

    def to_record(self) -> str:
        return json.dumps({"ahead_ms": self.ahead_ms, "events": [e.to_dict() for e in self.events],
                           "coercion": [asdict(a) for a in self.coercion]}, separators=(",", ":"))

    @classmethod
    def from_record(cls, record: str) -> "Batch":
        data = json.loads(record)
        return cls([RpcCallEvent(**e) for e in data["events"]],
                   [_coercion_alert(a) for a in data["coercion"]], data["ahead_ms"])


def _coercion_alert(fields: dict) -> CoercionAlert:
    flows = {name: FlowKey(**fields[name]) for name in ("inbound_flow", "auth_flow") if fields[name]}
    return CoercionAlert(**(fields | flows | {"call_event_ids": tuple(fields["call_event_ids"])}))


class StoreSpool:
    """The spool of one sensor process and its retry clock; used from the sensor's thread."""

    def __init__(self, settings: StoreSpoolSettings, database: str,
                 notify: Callable[[str], None] | None = None) -> None:
        from sensor.store.postgres import StoreUnavailable    # psycopg only for a fleet store

        self.unavailable = StoreUnavailable
        self.settings = settings
        self.database = database            # the URL without its password, for messages
        self.notify = notify or (lambda message: None)
        self.directory = Path(settings.directory)
        self.prefix = "store-" + hashlib.sha256(database.encode()).hexdigest()[:12]
        self.dropped = 0                    # events and coercion alerts pushed out of the full spool
        self.delivered = 0                  # spooled batches written to the database
        self.waiting = 0                    # batches in the spool
        self.outage = False                 # the last attempt found the database unreachable
        self._spool: Spool | None = None
        self._path = ""
        self._spool_failing = False
        self._warned_full = False
        self._lock = None
        self._backoff = 0.0
        self._retry_at = 0.0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            usable = os.access(self.directory, os.W_OK | os.X_OK)
        except OSError as e:
            raise StoreError(f"{self.directory}: cannot use the store's spool directory: {e.strerror or e}") from None
        if not usable:
            raise StoreError(f"{self.directory}: cannot use the store's spool directory: not writable")
        self._claim(leftover=True)

    @property
    def path(self) -> str:
        """This process's spool file (once it has one)."""
        return self._path or str(self.directory / f"{self.prefix}-*.db")

    def write(self, batch: Batch, store: Callable[[Batch], None]) -> None:
        """``store(batch)`` now if nothing waits and the database answers, else spool it."""
        if not self.waiting and not self.outage:
            try:
                store(batch)
                return
            except self.unavailable as e:
                self.failed(e)
        self._push(batch)

    def attempt(self, step: Callable[[], T], otherwise: T) -> T:
        """Another store step (retention, the correlator's pair days) if the database is
        answering, else ``otherwise`` (the step is skipped)."""
        if self.outage:
            return otherwise
        try:
            return step()
        except self.unavailable as e:
            self.failed(e)
            return otherwise

    def deliver(self, store: Callable[[Batch], None], seconds: float = DELIVER_SLICE_SECONDS) -> None:
        """Spooled batches, oldest first, for up to ``seconds``, when a retry is due."""
        until = time.monotonic() + seconds
        while self.waiting and time.monotonic() >= self._retry_at:
            seq, record = self._spool.peek(1)[0]
            try:
                batch = Batch.from_record(record)
            except (ValueError, TypeError, KeyError) as e:   # damaged on disk: cannot ever be written
                self.notify(f"{self.path}: an unreadable batch was dropped from the store spool: {e}")
                batch = None
            if batch is not None:
                try:
                    store(batch)
                except self.unavailable as e:
                    self.failed(e)
                    return
                except StoreError as e:
                    raise StoreError(f"{e}; {self.waiting:,} batch(es) stay in the spool {self.path}: the next "
                                     "run against this database delivers them first") from None
                self.delivered += 1
            self._spool.ack(seq)
            self.waiting = self._spool.depth()
            self._recovered()
            if time.monotonic() >= until:
                return

    def flush(self, store: Callable[[Batch], None]) -> None:
        """End of the run: deliver everything that waits while the database answers; while
        it does not, retry for up to ``flush_seconds`` (then the next run delivers)."""
        deadline = time.monotonic() + self.settings.flush_seconds
        while self.waiting:
            if not self.outage:
                self.deliver(store, float("inf"))
                continue
            now = time.monotonic()
            if now >= deadline:
                return
            time.sleep(max(0.0, min(self._retry_at, deadline) - now))
            if time.monotonic() >= self._retry_at:
                self.deliver(store, float("inf"))

    def close(self) -> None:
        """Release the slot; an empty spool file goes (what waits, the run's summary names)."""
        if self._spool is None:
            return
        self._spool.close()
        if not self.waiting:
            for suffix in ("", "-wal", "-shm"):
                Path(self._spool.path + suffix).unlink(missing_ok=True)
        self._spool = None
        self._lock.close()

    def _push(self, batch: Batch) -> None:
        try:
            if self._spool is None:
                self._claim(leftover=False)
            dropped = self._spool.push([batch.to_record()], [batch.items])
        except (OSError, sqlite3.Error) as e:      # its disk is full or gone: this batch is lost
            if not self._spool_failing:
                self.notify(f"{self.directory}: cannot spool for the store: {e}; dropping batches "
                            "while the database is unreachable (counted)")
            self._spool_failing = True
            self.dropped += batch.items
            return
        self._spool_failing = False
        if dropped and not self._warned_full:
            self._warned_full = True
            self.notify(f"{self._spool.path}: the store spool is full ({self.settings.max_bytes:,} bytes): "
                        "dropping the oldest batches (counted in the summary and metrics)")
        self.dropped += dropped
        self.waiting = self._spool.depth()

    def failed(self, error: Exception) -> None:
        """The database did not answer: retry after the back-off (the first time: one line)."""
        self._backoff = min(max(RETRY_FIRST_SECONDS, self._backoff * 2), self.settings.retry_max_seconds)
        self._retry_at = time.monotonic() + self._backoff
        if not self.outage:
            self.outage = True
            self.notify(f"{error}; capture goes on, batches wait in a spool in {self.directory} (retrying, "
                        f"at most {self.settings.max_bytes:,} bytes, oldest dropped first)")

    def _recovered(self) -> None:
        self._backoff = 0.0
        self._retry_at = 0.0
        if self.outage:
            self.outage = False
            self.notify(f"{self.database}: reachable again; delivering the spooled batches "
                        f"({self.dropped:,} event(s) and alert(s) dropped from the full spool meanwhile)")

    def _claim(self, leftover: bool) -> None:
        """Take the first slot no other process holds: with ``leftover``, only one whose
        spool file a previous process left (there is nothing to do otherwise)."""
        if leftover:
            numbers = (p.name[len(self.prefix) + 1:-3] for p in self.directory.glob(f"{self.prefix}-*.db"))
            slots = sorted(int(n) for n in numbers if n.isdigit())
        else:
            slots = itertools.count()
        for slot in slots:
            base = self.directory / f"{self.prefix}-{slot}"
            lock = open(f"{base}.lock", "a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            if leftover and not Path(f"{base}.db").exists():     # delivered by its holder meanwhile
                lock.close()
                continue
            self._lock = lock
            self._spool = Spool(f"{base}.db", self.settings.max_bytes)
            self._path = self._spool.path
            self.waiting = self._spool.depth()
            return
