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
from typing import Iterable, Iterator

from sensor.xql.functions import extract_day, json_extract_scalar, utc_date
from sensor.events import RpcCallEvent
from sensor.hosts import HostQuery
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
    server: HostQuery | None = None     # the server that took the call (the victim of a coercion)
    client: HostQuery | None = None     # who called it
    opnum: int | None = None
    limit: int = DEFAULT_LIST_LIMIT
    rule: str | None = None             # alerts only


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
                    if callable(statement):
                        statement(self.db)
                    else:
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
        conditions = [] if where.opnum is None else [("opnum = ?", where.opnum)]
        rows = self._newest_first("events", "ts_ms", where, conditions)
        return _matching((json.loads(r) for r in rows), where, EVENT_SERVER, EVENT_CLIENT)

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
        """The rarity detector's state of rule+key+day (hits, first/last seen): insert or replace."""
        self.db.execute(
            "INSERT INTO alerts (rule, key, day, first_seen_ms, last_seen_ms, agent_hostname, "
            "agent_ip, actor_remote_ip, opnum, record) VALUES (?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (rule, key, day) DO UPDATE SET "
            "first_seen_ms = min(first_seen_ms, excluded.first_seen_ms), "
            "last_seen_ms = max(last_seen_ms, excluded.last_seen_ms), record = excluded.record",
            (rule, key, day, first_seen_ms, last_seen_ms, listing.agent_hostname, listing.agent_ip,
             listing.actor_remote_ip, listing.opnum, json.dumps(record, separators=(",", ":"))))

    def alerts(self) -> list[dict]:
        """The rarity detector's state rows, newest first."""
        return [json.loads(r[0]) for r in
                self.db.execute("SELECT record FROM alerts ORDER BY first_seen_ms DESC")]

    def add_alert_record(self, alert_id: str, rule: str, day: str, ts_ms: int, line: str,
                         suppressed_by: str | None = None) -> bool:
        """Store an alert envelope exactly as written out (or, with the allow-list entry's
        reason, as it would have been); False when its alert_id (rule + key + day) is there."""
        return self.db.execute(
            "INSERT OR IGNORE INTO alert_records (alert_id, rule, day, ts_ms, suppressed_by, record) "
            "VALUES (?,?,?,?,?,?)", (alert_id, rule, day, ts_ms, suppressed_by, line)).rowcount == 1

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
        with self.transaction():
            removed = self.db.execute("DELETE FROM events WHERE ts_ms < ?", (before_ms,)).rowcount
            self.db.execute("DELETE FROM key_days WHERE utc_date < ?", (utc_date(before_ms),))
        return removed


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
