"""The PostgreSQL store: the same tables, migrations and queries as the SQLite store, for a
fleet of sensors writing one database (``--db postgresql://USER@HOST/DB``, psycopg 3).

The SQLite statements serve both dialects: ``?`` marks become ``%s``, and the migration
steps are translated (``_postgres_statement``), so the schema version is the same number in
both. A batch takes a transaction-level advisory lock first: writers of the whole fleet
then judge their batches one after another, exactly as SQLite's write lock makes them do,
so "count the key's days, raise at most one alert per rule, key and day" stays exact
however many sensors write (the UNIQUE constraints and ON CONFLICT keep replays idempotent).

The password comes from libpq's own sources (the URL, PGPASSWORD, PGPASSFILE, a passfile
parameter) and never appears in a message: every message names the URL without it.
"""
from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from sensor.anomaly import Stats
from sensor.events import RpcCallEvent
from sensor.store import BATCH_DEADLINE_SECONDS
from sensor.store.migrations import SCHEMA_VERSION
from sensor.sqlite_locks import LockTaken
from sensor.store.sqlite import AlertListing, Store, StoreError, T, envelope_sensor, event_row
from sensor.xql.dialects import POSTGRESQL

# The advisory lock every writer's batch takes ("dfs-sensor store" as 8 ASCII bytes).
WRITE_LOCK_KEY = int.from_bytes(b"dfsstore", "big") & 0x7FFF_FFFF_FFFF_FFFF
# A reader or writer gives up connecting after this long (an unreachable host).
CONNECT_TIMEOUT_SECONDS = 10
# A new connection after a lost one is opened by a thread of its own; a writer waits this
# long for it (a restarted server answers well within it), then goes on (the sensor spools
# its batch): an unreachable host's CONNECT_TIMEOUT_SECONDS is the thread's wait, never the
# capture's.
RECONNECT_WAIT_SECONDS = 0.5
# libpq keepalive and TCP_USER_TIMEOUT settings (unless the URL sets its own): a server that
# vanishes without a reset (a network partition) is found lost within about 20 s instead of
# the kernel's 15 minutes of retransmissions, so a batch in flight then does not hang on.
TCP_DEFAULTS = {"tcp_user_timeout": "10000", "keepalives_idle": "10", "keepalives_interval": "5",
                "keepalives_count": "2"}
# A writer's transaction waits for the server at most the store's deadline, by the client's
# own clock ([store] batch_deadline_seconds, BATCH_DEADLINE_SECONDS by default): a server
# process that is stopped or hung (SIGSTOP, a frozen VM) never answers but its kernel keeps
# the TCP connection alive, so neither keepalives nor a server-side statement_timeout end the
# wait. Then the connection is shut down under libpq, the batch is spooled and capture goes
# on; a capture thread stalled much longer would lose packets to the kernel's ring. A read
# may take long (a hunt over a big table): after each deadline it asks the server for a new
# connection, and waits on while one opens (libpq's connect_timeout is 2 s at least).
MIN_CONNECT_TIMEOUT_SECONDS = 2
# What libpq says when no server answers now, and what a server that is starting or stopping
# says: the database will be back (the sensor spools). Anything else a connection meets (the
# password refused, a missing database or role, pg_hba.conf, TLS settings) is configuration:
# one line, exit 1, spooling would hide it.
UNREACHABLE = ("Connection refused", "No such file or directory", "timeout expired", "No route to host",
               "Network is unreachable", "Connection timed out", "Connection reset by peer",
               "closed the connection unexpectedly", "SSL SYSCALL error", "Temporary failure in name resolution",
               "the database system is starting up", "the database system is shutting down",
               "the database system is not yet accepting connections", "the database system is in recovery mode",
               "terminating connection due to administrator command", "too many clients already")


# Events per multi-row INSERT: 16 parameters each, well under the protocol's 65,535.
EVENTS_PER_INSERT = 1000
# psycopg logs a warning of its own when a pipeline ends in an error; the store reports
# every error as its one line, so those warnings must not reach stderr (Python's last-resort
# handler prints unhandled warnings there).
logging.getLogger("psycopg").addHandler(logging.NullHandler())


class StoreUnavailable(StoreError):
    """The database cannot be reached (the connection was lost or refused)."""


def unreachable(error: psycopg.Error) -> bool:
    """A connection attempt failed because no server answered now (not a configuration error)."""
    text = str(error)
    return any(phrase in text for phrase in UNREACHABLE)


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _postgres_statement(statement: str) -> str:
    """A migration statement written for SQLite, in PostgreSQL: rowid tables get an identity
    key, integers are 64-bit (epoch milliseconds), WITHOUT ROWID has no meaning there, and
    SQLite's NOCASE collation has no equal (the XQL compiler's PostgreSQL dialect folds case
    in the query instead, sensor/xql/dialects.py)."""
    statement = statement.replace("WITHOUT ROWID", "").replace(" COLLATE NOCASE", "")
    statement = re.sub(r"\bINTEGER PRIMARY KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", statement)
    return re.sub(r"\bINTEGER\b", "BIGINT", statement)


class _Connection:
    """psycopg with the sqlite3 calls the store makes: ``execute`` with ``?`` marks, and
    ``in_transaction``. Every database error becomes a StoreError naming the redacted URL."""

    def __init__(self, url: str, readonly: bool, later: bool = False,
                 seconds: float = BATCH_DEADLINE_SECONDS) -> None:
        """``later``: when no server answers now, no connection yet (``conn`` is None, the
        error in ``unreachable``): ``reconnect`` opens it. Else that is a StoreError too.
        ``seconds``: the deadline of a batch, and of a statement outside one (``watched``)."""
        self.url = url
        self.name = redacted(url)
        self.readonly = readonly
        self.seconds = seconds
        self._watching = False              # a deadline is running (a batch's, or a statement's)
        self._reconnecting: Future | None = None
        self.unreachable: StoreUnavailable | None = None
        try:
            given = conninfo_to_dict(url)
        except psycopg.Error as e:
            raise StoreError(f"{self.name}: cannot connect: {_first_line(e)}") from None
        self.options = {k: v for k, v in TCP_DEFAULTS.items() if k not in given}
        self.conn: psycopg.Connection | None = None
        try:
            self.conn = self._connect()
        except StoreUnavailable as e:
            if not later:
                raise
            self.unreachable = e

    def _connect(self) -> psycopg.Connection:
        """A new connection; StoreUnavailable when no server answers, StoreError otherwise."""
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                   **self.options)
        except psycopg.Error as e:
            raise (StoreUnavailable if unreachable(e) else StoreError)(
                f"{self.name}: cannot connect: {_first_line(e)}") from None
        conn.read_only = self.readonly
        return conn

    @property
    def lost(self) -> bool:
        return self.conn is None or self.conn.closed or self.conn.broken

    @contextmanager
    def deadline(self, seconds: float, slow_is_fine: bool = False) -> Iterator[None]:
        """The block's waits for the server end after ``seconds``: a watcher thread shuts the
        socket down under libpq, whose wait then ends as a lost connection (StoreUnavailable).
        ``slow_is_fine`` (a read): each time ``seconds`` pass, the wait goes on while the server
        opens a new connection (it works on the statement); it ends when none opens."""
        conn = self.conn
        guard = threading.Lock()
        done = threading.Event()
        expired = threading.Event()

        def watch() -> None:
            while not done.wait(seconds):
                if slow_is_fine and self._answers(seconds):
                    continue
                with guard:
                    if done.is_set():
                        return              # the block ended meanwhile: the connection is fine
                    expired.set()
                    try:
                        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
                            sock.shutdown(socket.SHUT_RDWR)
                    except (OSError, psycopg.Error):
                        pass                # closed already
                return

        threading.Thread(target=watch, name="store deadline", daemon=True).start()
        self._watching = True
        try:
            yield
        except StoreError:
            if expired.is_set():
                nor = ", nor a new connection" if slow_is_fine else ""
                raise StoreUnavailable(f"{self.name}: no answer from the server within {seconds:g} s{nor} "
                                       "(a stopped or hung server process?)") from None
            raise
        finally:
            self._watching = False
            with guard:
                done.set()

    @contextmanager
    def watched(self) -> Iterator[None]:
        """A statement outside a batch (a read command's, a writer's at start) under the
        patient deadline: a slow one goes on, a hung server ends it."""
        if self._watching:
            yield
            return
        with self.deadline(self.seconds, slow_is_fine=True):
            yield

    def _answers(self, seconds: float) -> bool:
        """Whether the server opens a new connection within ``seconds``: it is working, not
        stopped (a refused password, a full server: it answered)."""
        try:
            psycopg.connect(self.url, autocommit=True, **self.options,
                            connect_timeout=max(MIN_CONNECT_TIMEOUT_SECONDS, math.ceil(seconds))).close()
            return True
        except psycopg.Error as e:
            return not unreachable(e) or "too many clients" in str(e)

    def reconnect(self) -> None:
        """A new connection in place of the lost one, opened in the background: when it is
        not there within RECONNECT_WAIT_SECONDS, StoreUnavailable (the next call collects it)."""
        if self._reconnecting is None:
            self._reconnecting = Future()
            threading.Thread(target=self._connect_into, args=(self._reconnecting,), name="store reconnect",
                             daemon=True).start()
        try:
            conn = self._reconnecting.result(timeout=RECONNECT_WAIT_SECONDS)
        except TimeoutError:
            raise StoreUnavailable(f"{self.name}: cannot connect: no answer yet (connecting in the "
                                   "background)") from None
        finally:
            if self._reconnecting.done():
                self._reconnecting = None
        if self.conn is not None:
            self.conn.close()
        self.conn = conn

    def _connect_into(self, future: Future) -> None:
        try:
            future.set_result(self._connect())
        except StoreError as e:
            future.set_exception(e)

    def execute(self, sql: str, args: tuple | list = ()):
        if self.conn is None:
            raise self.unreachable
        with self.watched():
            try:
                return self.conn.execute(sql.replace("%", "%%").replace("?", "%s"), args)
            except psycopg.Error as e:
                raise (StoreUnavailable if self.lost else StoreError)(f"{self.name}: {_first_line(e)}") from None

    @property
    def in_transaction(self) -> bool:
        return self.conn is not None and self.conn.info.transaction_status != pq.TransactionStatus.IDLE

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self._reconnecting is not None:      # a connection it opens after this is closed at once
            self._reconnecting.add_done_callback(lambda f: f.exception() is None and f.result().close())


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class PostgresStore(Store):
    INSERT_IGNORE = "INSERT INTO {table} {columns}VALUES ({marks}) ON CONFLICT DO NOTHING"
    LEAST, GREATEST = "LEAST", "GREATEST"
    NO_BUSY_WAIT = BUSY_WAIT = "SELECT 1"        # waits are the advisory lock's, in _begin
    XQL_DIALECT = POSTGRESQL

    def __init__(self, url: str, readonly: bool = False, later: bool = False,
                 deadline: float = BATCH_DEADLINE_SECONDS):
        """``later`` (a sensor, which spools): when no server answers now, the store opens
        without a connection (``unreachable`` says why) and its first batch connects, checks
        and migrates the schema as a start does, then writes. ``deadline``: how long a batch
        waits for the server; a statement outside a batch waits on while the server opens a
        new connection each time it passes (``_Connection.deadline``)."""
        # The alerts read or written in the current batch's transaction, by (rule, key, day):
        # the batch holds the fleet's write lock, so nobody else changes them meanwhile, and a
        # busy key's hits cost no round trip each. None outside a batch.
        self._alerts: dict[tuple[str, str, str], dict | None] | None = None
        self.path = redacted(url)
        self.readonly = readonly
        self.stats = Stats()
        self.db = _Connection(url, readonly, later, deadline)
        self.unreachable = self.db.unreachable
        if self.unreachable is None:
            self._open_schema()

    def _open_schema(self) -> None:
        try:
            if self.readonly:
                self._check_schema(migrating=False)
            else:
                self._migrate()
        except StoreUnavailable:
            raise                       # lost again: the next batch tries again
        except BaseException:
            self.db.close()
            raise
        self.unreachable = None

    def _migrate(self) -> None:
        try:
            super()._migrate()
        except StoreError as e:
            if "must be owner" not in str(e):
                raise
            raise StoreError(f"{e} (the schema is older than this dfs-sensor's, version {SCHEMA_VERSION}: "
                             f"the database's owner runs `dfs-sensor store migrate --db URL` once)") from None

    def query(self, sql: str, params: dict) -> list[tuple]:
        """A read in psycopg's own parameter style (%(name)s: the XQL compiler's)."""
        with self.db.watched():
            try:
                return self.db.conn.execute(sql, params).fetchall()
            except psycopg.Error as e:
                raise StoreError(f"{self.path}: {_first_line(e)}") from None

    def _schema_names(self) -> set[tuple[str, str]]:
        return set(self.db.execute(
            "SELECT 'table', tablename FROM pg_tables WHERE schemaname = current_schema() "
            "UNION SELECT 'index', indexname FROM pg_indexes WHERE schemaname = current_schema()"))

    def _migration_statements(self, step: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_postgres_statement(statement) for statement in step)

    @contextmanager
    def transaction(self, doing: str = "a batch") -> Iterator[None]:
        """Outside a batch (a migration, `store copy`): the whole transaction under one patient
        deadline, not a watcher per statement."""
        with self.db.watched(), super().transaction(doing):
            yield

    def run_batch(self, write: Callable[[], T]) -> T:
        """``write()`` in one transaction; when the connection was lost (the server restarted
        since the last batch, a failover), once more whole on a new connection (counted in
        ``stats``). StoreUnavailable when that fails too: the sensor spools the batch and
        retries later (sensor/store/spooled.py); it waits here at most RECONNECT_WAIT_SECONDS,
        and for the server's answers the store's deadline. A store opened while the server
        was unreachable checks (migrates) the schema first, once connected: a StoreError then
        (the password refused, a schema too new) ends the run."""
        lost = None
        if not self.db.lost:
            try:
                return self._pipelined(write)
            except StoreUnavailable as e:
                lost = e
        self.stats["reconnects"] += 1
        try:
            self.db.reconnect()
        except StoreUnavailable:
            if lost is None:
                raise
            raise lost from None        # what ended the connection, for the one line of the outage
        if self.unreachable is not None:
            self._open_schema()         # a statement's patient deadline: a long migration goes on
        return self._pipelined(write)

    def _pipelined(self, write: Callable[[], T]) -> T:
        """One transaction in libpq's pipeline mode: statements whose result the batch does
        not read (key days, alert updates) go out without waiting for the server, and the
        day's alert of a key is read once per batch, so a batch costs a few round trips."""
        try:
            with self.db.deadline(self.db.seconds):
                try:
                    with self.db.conn.pipeline():
                        return super().run_batch(write)
                except psycopg.Error as e:          # raised where the pipeline syncs, outside execute
                    raise (StoreUnavailable if self.db.lost else StoreError)(
                        f"{self.path}: {_first_line(e)}") from None
        finally:
            self._alerts = None

    # In pipeline mode a statement's row count is known only once its results are read:
    # the inserts whose outcome the batch needs return a row, and reading it waits for it.
    def add_event(self, event: RpcCallEvent, row: tuple | None = None) -> bool:
        row = row or event_row(event)
        return self.db.execute(self.insert_ignore_sql("events", "", len(row)) + " RETURNING 1",
                               row).fetchone() is not None

    def add_events(self, events: list[RpcCallEvent], rows: list[tuple]) -> list[bool]:
        """Multi-row INSERTs for the batch (a round trip per EVENTS_PER_INSERT, not per
        event); the ids they return are the new events (an id twice in the batch: the first)."""
        new: set[str] = set()
        for start in range(0, len(rows), EVENTS_PER_INSERT):
            chunk = rows[start:start + EVENTS_PER_INSERT]
            marks = ",".join(["(" + ",".join("?" * len(chunk[0])) + ")"] * len(chunk))
            new.update(r[0] for r in self.db.execute(
                f"INSERT INTO events VALUES {marks} ON CONFLICT DO NOTHING RETURNING event_id",
                [v for row in chunk for v in row]))
        added = []
        for event in events:
            added.append(event.event_id in new)
            new.discard(event.event_id)
        return added

    def add_alert_record(self, alert_id: str, rule: str, day: str, ts_ms: int, line: str,
                         suppressed_by: str | None = None) -> bool:
        return self.db.execute(
            self.insert_ignore_sql("alert_records", "(alert_id, rule, day, ts_ms, suppressed_by, record, sensor) ", 7)
            + " RETURNING 1", (alert_id, rule, day, ts_ms, suppressed_by, line, envelope_sensor(line))
        ).fetchone() is not None

    def alert_record(self, rule: str, key: str, day: str) -> dict | None:
        if self._alerts is None:
            return super().alert_record(rule, key, day)
        if (rule, key, day) not in self._alerts:
            self._alerts[rule, key, day] = super().alert_record(rule, key, day)
        return self._alerts[rule, key, day]

    def put_alert(self, rule: str, key: str, day: str, record: dict, first_seen_ms: int,
                  last_seen_ms: int, listing: AlertListing) -> None:
        super().put_alert(rule, key, day, record, first_seen_ms, last_seen_ms, listing)
        if self._alerts is not None:
            self._alerts[rule, key, day] = record

    def _begin(self) -> None:
        self.db.execute("BEGIN")
        if not self.db.execute("SELECT pg_try_advisory_xact_lock(?)", (WRITE_LOCK_KEY,)).fetchone()[0]:
            self.db.execute("ROLLBACK")
            raise LockTaken
        self._alerts = {}
