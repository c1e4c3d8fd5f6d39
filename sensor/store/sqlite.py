"""The SQLite store: events, detector state and alerts, shared by the sensor and its readers.

WAL mode lets ``hunt``, ``alerts`` and ``events`` read while a replay or live run writes;
the writer groups rows into transactions (``Store.transaction``) so a crash never leaves
an alert without its event or the other way round.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sensor.xql.functions import extract_day, json_extract_scalar, utc_date
from sensor.events import RpcCallEvent
from sensor.store.migrations import MIGRATIONS, SCHEMA_VERSION

# A reader or a second writer waits this long for the lock before giving up; a writer's
# batch commits in milliseconds, so 10 s only runs out when something is stuck.
BUSY_TIMEOUT_MS = 10_000
# Rows a listing returns when the caller sets no limit: a screenful of context, not a dump.
DEFAULT_LIST_LIMIT = 100


class StoreError(Exception):
    """The store cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class ListFilter:
    since_ms: int | None = None
    until_ms: int | None = None
    server: str | None = None       # agent_hostname or agent_ip: the server that took the call
    client: str | None = None       # actor_remote_ip
    opnum: int | None = None
    limit: int = DEFAULT_LIST_LIMIT


@dataclass(frozen=True)
class AlertListing:
    """The alert row's columns that ``dfs-sensor alerts`` filters on: from the event that raised it."""
    agent_hostname: str
    agent_ip: str
    actor_remote_ip: str
    opnum: int


class Store:
    def __init__(self, path: str):
        self.path = path
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                      check_same_thread=False)
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: a commit survives a process crash (SIGKILL); only power loss can
            # take back the last transactions, never corrupt the file.
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path}: cannot use database: {e}") from None
        except OSError as e:
            raise StoreError(f"{path}: cannot create database directory: {e.strerror or e}") from None

    def close(self) -> None:
        self.db.close()

    # -- schema --------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self.transaction():
            self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self.db.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {version} is newer than this "
                                 f"dfs-sensor understands ({SCHEMA_VERSION})")
            for step in MIGRATIONS[version:]:
                for statement in step:
                    self.db.execute(statement)
            if row is None:
                self.db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            else:
                self.db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    @property
    def schema_version(self) -> int:
        return self.db.execute("SELECT version FROM schema_version").fetchone()[0]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction; IMMEDIATE takes the write lock up front, so a concurrent
        writer waits (busy_timeout) instead of failing at its first write."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def begin(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    # -- events --------------------------------------------------------------------------
    def add_event(self, event: RpcCallEvent) -> bool:
        """Store the event; False when its event_id is already there (a replayed capture)."""
        fields = event.action_rpc_func_str_call_fields
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (event.event_id, event.event_timestamp, utc_date(event.event_timestamp),
             extract_day(event.event_timestamp),
             event.event_type, event.action_rpc_interface_uuid, event.action_rpc_func_name,
             event.action_rpc_func_opnum, event.actor_type, event.agent_hostname, event.agent_id,
             event.agent_ip, event.actor_remote_ip, json_extract_scalar(fields, "$.ServerName"),
             json_extract_scalar(fields, "$.RootShare"), event.to_json()))
        return cursor.rowcount == 1

    def newest_event_ms(self) -> int | None:
        return self.db.execute("SELECT max(ts_ms) FROM events").fetchone()[0]

    def events(self, where: ListFilter = ListFilter()) -> list[dict]:
        sql, args = _filtered("SELECT record FROM events", "ts_ms", where)
        return [json.loads(r[0]) for r in self.db.execute(sql, args)]

    # -- detector state ------------------------------------------------------------------
    def add_key_day(self, rule: str, key: str, day: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO key_days VALUES (?,?,?)", (rule, key, day))

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
        """Insert the alert, or replace the record of the one already there for rule+key+day."""
        self.db.execute(
            "INSERT INTO alerts (rule, key, day, first_seen_ms, last_seen_ms, agent_hostname, "
            "agent_ip, actor_remote_ip, opnum, record) VALUES (?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (rule, key, day) DO UPDATE SET "
            "first_seen_ms = min(first_seen_ms, excluded.first_seen_ms), "
            "last_seen_ms = max(last_seen_ms, excluded.last_seen_ms), record = excluded.record",
            (rule, key, day, first_seen_ms, last_seen_ms, listing.agent_hostname, listing.agent_ip,
             listing.actor_remote_ip, listing.opnum, json.dumps(record, separators=(",", ":"))))

    def alerts(self, where: ListFilter = ListFilter()) -> list[dict]:
        sql, args = _filtered("SELECT record FROM alerts", "first_seen_ms", where)
        return [json.loads(r[0]) for r in self.db.execute(sql, args)]

    def add_coercion_alert(self, rule: str, key: str, day: str, ts_ms: int, record: str) -> bool:
        """Store a coercion alert; False when one for rule+key+day is already there."""
        return self.db.execute(
            "INSERT OR IGNORE INTO coercion_alerts (rule, key, day, ts_ms, record) VALUES (?,?,?,?,?)",
            (rule, key, day, ts_ms, record)).rowcount == 1

    def coercion_alerts(self, where: ListFilter = ListFilter(), rule: str | None = None) -> list[dict]:
        """Newest first; ``where.server`` matches the victim, ``where.client`` the client
        (opnum does not apply)."""
        sql, args = _filtered("SELECT record FROM coercion_alerts", "ts_ms", where, COERCION_PEERS,
                              [("rule = ?", rule)] if rule is not None else [])
        return [json.loads(r[0]) for r in self.db.execute(sql, args)]

    # -- retention -----------------------------------------------------------------------
    def prune(self, before_ms: int) -> int:
        """Forget events and key days older than ``before_ms``; alerts are kept (one row
        per rare key and day, the sensor's findings). Returns the events removed."""
        with self.transaction():
            removed = self.db.execute("DELETE FROM events WHERE ts_ms < ?", (before_ms,)).rowcount
            self.db.execute("DELETE FROM key_days WHERE utc_date < ?", (utc_date(before_ms),))
        return removed


# How a table names the server and the client a ListFilter matches (each "?" takes the value).
RPC_PEERS = ("(agent_hostname = ? COLLATE NOCASE OR agent_ip = ?)", "actor_remote_ip = ?")
COERCION_PEERS = ("json_extract(key, '$[0]') = ?", "json_extract(key, '$[2]') = ?")   # [victim, listener, client]


def _filtered(select: str, time_column: str, where: ListFilter, peers: tuple[str, str] = RPC_PEERS,
              extra: list[tuple[str, object]] | None = None) -> tuple[str, list]:
    server_sql, client_sql = peers
    conditions: list[tuple[str, object]] = list(extra or [])
    if where.since_ms is not None:
        conditions.append((f"{time_column} >= ?", where.since_ms))
    if where.until_ms is not None:
        conditions.append((f"{time_column} <= ?", where.until_ms))
    if where.server is not None:
        conditions.append((server_sql, where.server))
    if where.client is not None:
        conditions.append((client_sql, where.client))
    if where.opnum is not None and peers is RPC_PEERS:
        conditions.append(("opnum = ?", where.opnum))
    args: list = []
    for clause, value in conditions:
        args += [value] * clause.count("?")
    sql = select + (" WHERE " + " AND ".join(c for c, _ in conditions) if conditions else "")
    sql += f" ORDER BY {time_column} DESC LIMIT ?"
    args.append(where.limit)
    return sql, args
