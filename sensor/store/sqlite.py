"""The SQLite store: events, detector state and alerts, shared by the sensor and its readers.

WAL mode lets ``hunt``, ``alerts`` and ``events`` read while a replay or live run writes:
readers open the file read-only (``Store(path, readonly=True)``: never created, never
migrated, never locked against a writer). Writers decode without holding the lock and write
short batches (``Store.transaction``), each taken with bounded, counted retries when
another writer holds the lock, so two sensors on one store both finish; opening the store
waits the same way (``_waiting_for_lock``).

Damage is reported, never met as a traceback: a writer runs ``PRAGMA quick_check`` when it
opens the store, every opener checks the schema, and any "malformed" error later becomes one
line with the recovery steps (README, "Damaged store").
"""
from __future__ import annotations

import json
import os
import pwd
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar
from urllib.parse import quote

from sensor.anomaly import Stats
from sensor.sqlite_locks import LOCK_WAIT_LIMIT_SECONDS, NO_BUSY_WAIT, LockHeld, lock_taken, waiting_for_lock
from sensor.xql.dialects import SQLITE
from sensor.xql.functions import extract_day, json_extract_scalar, utc_date
from sensor.events import RpcCallEvent
from sensor.hosts import HostQuery
from sensor.store.migrations import CONVERSIONS, MIGRATIONS, SCHEMA_VERSION

# A statement waits this long on a lock SQLite takes briefly (a WAL recovery, a reader's
# snapshot); the write lock itself is waited for by ``transaction``'s retries below.
BUSY_TIMEOUT_MS = 5_000
# A writer checks every page of a store up to this size when it opens it (PRAGMA quick_check:
# 0.6 s for 100k events, 473 MB); a bigger store would delay the start by minutes (69 s for
# 1M events, 4.7 GB; bench/store_check.py), so there only the detector's state tables are
# checked, and damage among the events is reported when a command touches it.
FULL_CHECK_MAX_BYTES = 512 * 1024 * 1024
# The table that grows with traffic; every other table is small detector state.
BULK_TABLES = frozenset({"events"})
# Rows a listing returns when the caller sets no limit: a screenful of context, not a dump.
DEFAULT_LIST_LIMIT = 100
RECOVERY_HINT = ("move it aside and rebuild it: `sqlite3 OLD.db .recover | sqlite3 NEW.db`, "
                 "or replay the captures into a new store (README: Damaged store)")


T = TypeVar("T")


class StoreError(Exception):
    """The store cannot be used; the message is one line for the user."""


class StoreDamaged(StoreError):
    """The file is not a store this sensor can trust: damaged pages, schema or rows."""


@dataclass(frozen=True)
class ListFilter:
    """Which stored events or alerts `events` and `alerts` list."""
    since_ms: int | None = None
    until_ms: int | None = None
    server: HostQuery | None = None     # the server that took the call (the victim of a coercion)
    client: HostQuery | None = None     # who called it
    opnum: int | None = None
    limit: int = DEFAULT_LIST_LIMIT
    rule: str | None = None             # alerts only
    sensor: str | None = None           # only rows stored by the sensor of this name


# Where a record names the server and the client (address fields, name fields): events by
# their xdr_data names; alerts by the envelope's flow, then the rules' own fields.
EVENT_SERVER = (("agent_ip",), ("agent_hostname",))
EVENT_CLIENT = (("actor_remote_ip",), ())
ALERT_SERVER = (("dest_ip", "victim_ip", "agent_ip"), ("agent_hostname", "victim_name"))
ALERT_CLIENT = (("src_ip", "client_ip", "actor_remote_ip"), ("client_name",))


@dataclass(frozen=True)
class AlertListing:
    """The alert row's columns that ``dfs-sensor alerts`` filters on: from the event that raised it."""
    agent_hostname: str
    agent_ip: str
    actor_remote_ip: str
    opnum: int
    sensor: str | None = None       # the sensor whose event raised it


def explain(path: str, error: sqlite3.Error, doing: str = "") -> StoreError:
    """One line for an SQLite error met on the store at ``path`` while ``doing`` (named
    when another process holds a lock)."""
    text = str(error)
    if text.startswith("Could not decode to UTF-8"):      # the message quotes the whole row
        return StoreDamaged(f"{path}: the store is damaged (a row holds text that is not UTF-8); "
                            f"{RECOVERY_HINT}")
    if isinstance(error, sqlite3.DatabaseError) and any(
            sign in text for sign in ("malformed", "not a database", "no such table", "no such column")):
        return StoreDamaged(f"{path}: the store is damaged ({text}); {RECOVERY_HINT}")
    if lock_taken(error):
        code = getattr(error, "sqlite_errorname", None)      # e.g. SQLITE_BUSY_RECOVERY
        return StoreError(f"{path}: another process holds the store's lock ({text}{f', {code}' if code else ''})"
                          + (f" while this one was {doing}" if doing else ""))
    return StoreError(f"{path}: {text}")


@contextmanager
def reported(path: str, doing: str = "") -> Iterator[None]:
    """Turn an SQLite error in the block (which is ``doing`` something) into a StoreError
    with one line for the user."""
    try:
        yield
    except sqlite3.Error as e:
        raise explain(path, e, doing) from None


def _who() -> str:
    uid = os.geteuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _open_failure(path: str, error: sqlite3.Error, readonly: bool) -> StoreError:
    """Why the file could not be opened, naming the path and the user."""
    target = Path(path)
    if readonly and not target.exists():
        return StoreError(f"{path}: no such store (nothing was replayed or captured into it; "
                          f"check --db)")
    directory = target.parent
    if not readonly and not os.access(directory, os.W_OK | os.X_OK):
        return StoreError(f"{path}: cannot open the store as {_who()}: directory {directory} is not "
                          f"writable (the store needs it for its -wal and -shm files)")
    if target.exists() and not os.access(target, os.R_OK if readonly else os.R_OK | os.W_OK):
        need = "readable" if readonly else "readable and writable"
        return StoreError(f"{path}: cannot open the store as {_who()}: the file is not {need}")
    return StoreError(f"{path}: cannot open the store as {_who()}: {error}")


@cache
def _expected_schema() -> frozenset[tuple[str, str]]:
    """(type, name) of every table and index the migrations create."""
    db = sqlite3.connect(":memory:")
    for step in MIGRATIONS:
        for statement in step:
            db.execute(statement)
    names = frozenset(db.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
    db.close()
    return names | {("table", "schema_version")}


class Store:
    # What differs between the SQL dialects (sensor/store/postgres.py has the others).
    INSERT_IGNORE = "INSERT OR IGNORE INTO {table} {columns}VALUES ({marks})"
    LEAST, GREATEST = "min", "max"
    NO_BUSY_WAIT, BUSY_WAIT = NO_BUSY_WAIT, f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}"
    XQL_DIALECT = SQLITE        # what `hunt` compiles its XQL to (sensor/xql/dialects.py)

    def __init__(self, path: str, readonly: bool = False):
        self.path = path
        self.readonly = readonly
        # Times a batch found the write lock taken, and the seconds it waited in all.
        self.stats = Stats()
        self.db = self._connect(readonly)
        try:
            with reported(path, "opening it"):
                self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                if readonly:
                    self._read_header()
                    self._check_schema(migrating=False)
                else:
                    # Each statement that can meet another writer's lock waits as a batch waits
                    # for the write lock: before WAL mode (a new file, another writer opening it
                    # too) the reads as well, and the switch, which SQLite never waits for.
                    self._waiting_for_lock("opening it", self._read_header)
                    self._waiting_for_lock("checking its pages (PRAGMA quick_check)", self._check_pages)
                    self._waiting_for_lock("switching it to WAL mode (PRAGMA journal_mode = WAL)",
                                           lambda: self.db.execute("PRAGMA journal_mode = WAL"))
                    # WAL + NORMAL: a commit survives a process crash (SIGKILL); only power loss
                    # can take back the last transactions, never corrupt the file.
                    self.db.execute("PRAGMA synchronous = NORMAL")
                    self._migrate()
        except BaseException:
            self.db.close()
            raise

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        path = self.path
        if path == ":memory:":
            return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if not readonly:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"{path}: cannot create the store's directory as {_who()}: "
                                 f"{e.strerror or e}") from None
        # mode=ro: never created, never written. A WAL reader needs the -shm file; where it
        # is missing and the directory is read-only (a read-only mount, a non-owner with no
        # writer running), no writer can be at work either, so the file is read as immutable.
        uris = [f"file:{quote(path)}?mode=ro"] if readonly else [f"file:{quote(path)}?mode=rwc"]
        if readonly and not Path(path + "-wal").exists() and not os.access(Path(path).parent, os.W_OK):
            uris = [f"file:{quote(path)}?mode=ro&immutable=1"]
        try:
            return sqlite3.connect(uris[0], uri=True, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as e:
            raise _open_failure(path, e, readonly) from None

    def _read_header(self) -> None:
        """Open the file for real (SQLite opens it at the first read): a file that is no
        store, or one this user cannot open, is one line here; another process's lock is
        left to the caller."""
        try:
            self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as e:
            if lock_taken(e):
                raise
            if "not a database" in str(e) or "malformed" in str(e):
                raise explain(self.path, e) from None
            raise _open_failure(self.path, e, self.readonly) from None

    def close(self) -> None:
        self.db.close()

    def query(self, sql: str, params: dict) -> Iterable[tuple]:
        """A read by the XQL compiler (sensor/xql/sql.py): its functions registered first."""
        from sensor.xql.sql import register     # hunt's compiler: not loaded by replay or live

        register(self.db)
        return self.db.execute(sql, params)

    # -- schema --------------------------------------------------------------------------
    def _check_pages(self) -> None:
        """PRAGMA quick_check: every page's b-tree structure and record format (not the
        indexes' agreement with their tables); on a store over FULL_CHECK_MAX_BYTES, the
        detector state tables only."""
        size = Path(self.path).stat().st_size if self.path != ":memory:" else 0
        if size <= FULL_CHECK_MAX_BYTES:
            rows = self.db.execute("PRAGMA quick_check(3)").fetchall()
        else:
            present = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            tables = sorted({name for kind, name in _expected_schema() if kind == "table"} & present - BULK_TABLES)
            rows = [row for table in tables for row in self.db.execute(f"PRAGMA quick_check('{table}')")
                    if row != ("ok",)] or [("ok",)]
        if rows != [("ok",)]:
            # Each row may hold several lines, the first naming the database ("*** in database main ***").
            problems = "; ".join(line for r in rows for line in str(r[0]).splitlines()
                                 if line and not line.startswith("***"))
            raise StoreDamaged(f"{self.path}: the store is damaged (quick_check: {problems}); {RECOVERY_HINT}")

    def _check_schema(self, migrating: bool) -> int:
        """The store's schema version, after checking its one row and its tables; a store
        with no schema at all is version 0 (new) when ``migrating``."""
        names = self._schema_names()
        if not names and migrating:
            return 0
        if ("table", "schema_version") not in names:
            raise StoreDamaged(f"{self.path}: not a dfs-sensor store (no schema_version table); "
                               f"check --db, or {RECOVERY_HINT}")
        rows = self.db.execute("SELECT version FROM schema_version").fetchall()
        if len(rows) != 1 or type(rows[0][0]) is not int or not 1 <= rows[0][0]:
            found = f"{len(rows)} rows" if len(rows) != 1 else f"version {rows[0][0]!r}"
            raise StoreDamaged(f"{self.path}: the store is damaged (schema_version holds {found}, "
                               f"not one version number); {RECOVERY_HINT}")
        version = rows[0][0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {version} is newer than this "
                             f"dfs-sensor understands ({SCHEMA_VERSION}); upgrade dfs-sensor")
        if version == SCHEMA_VERSION:
            missing = sorted(f"{kind} {name}" for kind, name in _expected_schema() - names)
            if missing:
                raise StoreDamaged(f"{self.path}: the store is damaged ({', '.join(missing)} missing); "
                                   f"{RECOVERY_HINT}")
        elif not migrating:
            raise StoreError(f"{self.path}: the store has schema version {version}, this dfs-sensor "
                             f"reads {SCHEMA_VERSION}: run a replay or the live sensor on it once "
                             f"(as its owner) to migrate it")
        return version

    def _schema_names(self) -> set[tuple[str, str]]:
        """(type, name) of the tables and indexes the store has."""
        return set(self.db.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))

    def _migration_statements(self, step: tuple[str, ...]) -> tuple[str, ...]:
        return step

    def _migrate(self) -> None:
        if self._check_schema(migrating=True) == SCHEMA_VERSION:
            return          # nothing to do: no write lock taken
        with self.transaction("the schema migration"):
            version = self._check_schema(migrating=True)     # another writer may have migrated
            if version == 0:
                for statement in self._migration_statements(
                        ("CREATE TABLE schema_version (version INTEGER NOT NULL)",)):
                    self.db.execute(statement)
                self.db.execute("INSERT INTO schema_version VALUES (0)")
            for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in self._migration_statements(step):
                    self.db.execute(statement)
                if version and number in CONVERSIONS:       # a new store has no rows to convert
                    CONVERSIONS[number](self)
            self.db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    @property
    def schema_version(self) -> int:
        return self.db.execute("SELECT version FROM schema_version").fetchone()[0]

    @contextmanager
    def transaction(self, doing: str = "a batch") -> Iterator[None]:
        """One short write transaction (for ``doing``, named if the lock is never free).
        IMMEDIATE takes the write lock up front; while another writer holds it, retry with
        jittered backoff (``_waiting_for_lock``), so the batch is never lost to a busy lock."""
        if self.db.in_transaction:
            yield
            return
        with reported(self.path, f"writing {doing}"):
            self._waiting_for_lock(f"taking the write lock for {doing}", self._begin)
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def run_batch(self, write: Callable[[], T]) -> T:
        """``write()`` in one transaction; its result. (The PostgreSQL store also runs it
        again after a lost connection.)"""
        with self.transaction():
            return write()

    def _begin(self) -> None:
        """Begin a transaction holding the store's write lock (SQLite's error when another
        writer has it)."""
        self.db.execute("BEGIN IMMEDIATE")

    def _waiting_for_lock(self, doing: str, step: Callable[[], T]) -> T:
        """``step()`` with the one wait of every statement that can meet another writer's lock
        (sensor/sqlite_locks.py), counted in ``stats``; after LOCK_WAIT_LIMIT_SECONDS one line
        naming what was ``doing``."""
        try:
            return waiting_for_lock(self.db, doing, step, self.stats, LOCK_WAIT_LIMIT_SECONDS,
                                    self.BUSY_WAIT, self.NO_BUSY_WAIT)
        except LockHeld as e:
            raise StoreError(f"{e.sentence(self.path, 'store')}; what was not stored yet is stored by running "
                             f"it again when the lock is free (replays are idempotent)") from None

    def insert_ignore_sql(self, table: str, columns: str, count: int) -> str:
        return self.INSERT_IGNORE.format(table=table, columns=columns, marks=",".join("?" * count))

    # -- events --------------------------------------------------------------------------
    def add_event(self, event: RpcCallEvent, row: tuple | None = None) -> bool:
        """Store the event; False when its event_id is already there (a replayed capture).
        ``row`` is ``event_row(event)`` made earlier, outside the write lock."""
        row = row or event_row(event)
        cursor = self.db.execute(self.insert_ignore_sql("events", "", len(row)), row)
        return cursor.rowcount == 1

    def add_events(self, events: list[RpcCallEvent], rows: list[tuple]) -> list[bool]:
        """``add_event`` for each (event, its ``event_row``): which were new, in order."""
        return [self.add_event(event, row) for event, row in zip(events, rows)]

    def newest_event_ms(self) -> int | None:
        return self.db.execute("SELECT max(ts_ms) FROM events").fetchone()[0]

    def events(self, where: ListFilter = ListFilter()) -> list[dict]:
        conditions = [] if where.opnum is None else [("opnum = ?", where.opnum)]
        rows = self._newest_first("events", "ts_ms", where, conditions)
        return _matching((json.loads(r) for r in rows), where, EVENT_SERVER, EVENT_CLIENT)

    # -- detector state ------------------------------------------------------------------
    def add_key_day(self, rule: str, key: str, day: str) -> None:
        self.db.execute(self.insert_ignore_sql("key_days", "", 3), (rule, key, day))

    def key_day_count(self, rule: str, key: str, first_day: str, last_day: str,
                      day_of_month: bool) -> int:
        """Distinct days the key was seen in [first_day, last_day]; with ``day_of_month``
        two dates count once when they share the day of the month (XQL's DAY)."""
        day = "substr(utc_date, 9, 2)" if day_of_month else "utc_date"
        return self.db.execute(
            f"SELECT count(DISTINCT {day}) FROM key_days WHERE rule = ? AND key = ? "
            "AND utc_date BETWEEN ? AND ?", (rule, key, first_day, last_day)).fetchone()[0]

    def key_dates(self, rule: str, key: str, first_day: str, last_day: str) -> list[str]:
        """The UTC dates in [first_day, last_day] the key was seen on."""
        return [row[0] for row in self.db.execute(
            "SELECT utc_date FROM key_days WHERE rule = ? AND key = ? AND utc_date BETWEEN ? AND ?",
            (rule, key, first_day, last_day))]

    # -- alerts --------------------------------------------------------------------------
    def alert_record(self, rule: str, key: str, day: str) -> dict | None:
        row = self.db.execute("SELECT record FROM alerts WHERE rule = ? AND key = ? AND day = ?",
                              (rule, key, day)).fetchone()
        return json.loads(row[0]) if row else None

    def put_alert(self, rule: str, key: str, day: str, record: dict, first_seen_ms: int,
                  last_seen_ms: int, listing: AlertListing) -> None:
        """The rarity detector's state of rule+key+day (hits, first/last seen): insert or replace."""
        self.db.execute(
            "INSERT INTO alerts (rule, key, day, first_seen_ms, last_seen_ms, agent_hostname, "
            "agent_ip, actor_remote_ip, opnum, record, sensor) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (rule, key, day) DO UPDATE SET "
            f"first_seen_ms = {self.LEAST}(alerts.first_seen_ms, excluded.first_seen_ms), "
            f"last_seen_ms = {self.GREATEST}(alerts.last_seen_ms, excluded.last_seen_ms), record = excluded.record",
            (rule, key, day, first_seen_ms, last_seen_ms, listing.agent_hostname, listing.agent_ip,
             listing.actor_remote_ip, listing.opnum, json.dumps(record, separators=(",", ":")), listing.sensor))

    def alerts(self) -> list[dict]:
        """The rarity detector's state rows, newest first."""
        return [json.loads(r[0]) for r in
                self.db.execute("SELECT record FROM alerts ORDER BY first_seen_ms DESC")]

    def add_alert_record(self, alert_id: str, rule: str, day: str, ts_ms: int, line: str,
                         suppressed_by: str | None = None) -> bool:
        """Store an alert envelope exactly as written out (or, with the allow-list entry's
        reason, as it would have been); False when its alert_id (rule + key + day) is there."""
        return self.db.execute(
            self.insert_ignore_sql("alert_records", "(alert_id, rule, day, ts_ms, suppressed_by, record, sensor) ", 7),
            (alert_id, rule, day, ts_ms, suppressed_by, line, envelope_sensor(line))).rowcount == 1

    def suppressed_by(self, alert_id: str) -> str | None:
        row = self.db.execute("SELECT suppressed_by FROM alert_records WHERE alert_id = ?", (alert_id,)).fetchone()
        return row[0] if row else None

    def alert_records(self, where: ListFilter = ListFilter(), suppressed: bool = False) -> list[str]:
        """Alert envelopes as stored (the JSON text), newest first: those written out, or with
        ``suppressed`` those the allow-list held back. ``where.opnum`` keeps the alerts about a
        call with that opnum."""
        conditions = [("suppressed_by IS NOT NULL" if suppressed else "suppressed_by IS NULL", None)]
        if where.rule is not None:
            conditions.append(("rule = ?", where.rule))
        texts = self._newest_first("alert_records", "ts_ms", where, conditions)
        pairs = ((text, json.loads(text)) for text in texts)
        if where.opnum is not None:
            pairs = ((t, r) for t, r in pairs if r.get("action_rpc_func_opnum") == where.opnum)
        return [text for text, _ in _matching(pairs, where, ALERT_SERVER, ALERT_CLIENT,
                                              keep=lambda pair: pair[1])]

    def alert_rules(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT rule FROM alert_records ORDER BY rule")]

    def _newest_first(self, table: str, time_column: str, where: ListFilter,
                      conditions: list[tuple[str, object]]) -> Iterator[str]:
        """The record column, newest first, with the time window and ``conditions`` applied in
        SQL; host filters are applied by the caller (canonical comparison is not SQL's)."""
        conditions = list(conditions)
        if where.sensor is not None:
            conditions.append(("sensor = ?", where.sensor))
        if where.since_ms is not None:
            conditions.append((f"{time_column} >= ?", where.since_ms))
        if where.until_ms is not None:
            conditions.append((f"{time_column} <= ?", where.until_ms))
        sql = f"SELECT record FROM {table}"
        if conditions:
            sql += " WHERE " + " AND ".join(c for c, _ in conditions)
        sql += f" ORDER BY {time_column} DESC"
        for (text,) in self.db.execute(sql, [v for c, v in conditions if "?" in c]):
            yield text

    # -- retention -----------------------------------------------------------------------
    def prune(self, before_ms: int) -> int:
        """Forget events and key days older than ``before_ms``; alerts are kept (one row
        per rare key and day, the sensor's findings). Returns the events removed."""
        def delete() -> int:
            removed = self.db.execute("DELETE FROM events WHERE ts_ms < ?", (before_ms,)).rowcount
            self.db.execute("DELETE FROM key_days WHERE utc_date < ?", (utc_date(before_ms),))
            return removed
        return self.run_batch(delete)


def window_end(newest_ms: int | None, max_clock_skew: float) -> int | None:
    """Where the detector's window ends, for retention and ``hunt``: the newest stored event
    (capture time, so an old capture replayed today keeps its own window), but never more
    than ``max_clock_skew`` seconds ahead of this machine's clock, so one future-dated frame
    cannot move the window and prune the history."""
    if newest_ms is None:
        return None
    return min(newest_ms, int((time.time() + max_clock_skew) * 1000))


def event_row(event: RpcCallEvent) -> tuple:
    """The events table's row for an event (its JSON the costly part: made before a batch
    takes the write lock)."""
    fields = event.action_rpc_func_str_call_fields
    return (event.event_id, event.event_timestamp, utc_date(event.event_timestamp),
            extract_day(event.event_timestamp),
            event.event_type, event.action_rpc_interface_uuid, event.action_rpc_func_name,
            event.action_rpc_func_opnum, event.actor_type, event.agent_hostname, event.agent_id,
            event.agent_ip, event.actor_remote_ip, json_extract_scalar(fields, "$.ServerName"),
            json_extract_scalar(fields, "$.RootShare"), event.to_json(), event.sensor)


def envelope_sensor(line: str) -> str | None:
    """The sensor an alert envelope (JSON text) names."""
    return json.loads(line).get("sensor")


def _matching(items: Iterable, where: ListFilter, server_fields: tuple, client_fields: tuple,
              keep=lambda record: record) -> list:
    """The first ``where.limit`` items whose record matches the host filters."""
    out = []
    for item in items:
        record = keep(item)
        if (_host_matches(where.server, record, server_fields)
                and _host_matches(where.client, record, client_fields)):
            out.append(item)
            if len(out) >= where.limit:
                break
    return out


def _host_matches(query: HostQuery | None, record: dict, fields: tuple) -> bool:
    if query is None:
        return True
    addresses, names = fields
    return query.matches([record.get(f) for f in addresses], [record.get(f) for f in names])
