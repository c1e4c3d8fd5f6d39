"""The store's schema as a list of steps. Step i takes a database from version i to i+1;
a step is a tuple of SQL statements, written for SQLite (the PostgreSQL store translates
them), run in the one transaction that opens the store. Rows SQL cannot convert (an
envelope's alert_id is a uuid5) are converted by a function of the store, CONVERSIONS, run
in the same transaction right after its step when a store that held data migrates.

Append new steps; never edit a released one (databases in the field already ran it).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from sensor.store.sqlite import Store


def envelopes_of_older_alerts(store: Store) -> None:
    """After step 4: the alerts older versions stored (the rarity rules' rows, step 2's
    coercion rows) as envelopes, so `dfs-sensor alerts` keeps listing them, with the alert_id
    a new run gives. What those versions did not record is null: the sensor name, and the
    server port of a rarity alert."""
    from sensor.alerts import AlertEnvelope, Flow, RuleMeta
    from sensor.coercion.events import CoercionAlert
    from sensor.xql.rules import SHIPPED_RULES, load_rules

    shipped = {r.meta.id: r.meta for r in load_rules([SHIPPED_RULES])}

    def rule_meta(rule_id: str, version) -> RuleMeta:
        meta = shipped.get(rule_id)
        if meta is None:            # a user's rule file that is not at hand
            return RuleMeta(rule_id, rule_id, version or 1, "medium", None)
        return RuleMeta(meta.id, meta.title, meta.version, meta.severity, meta.technique or None)

    def add(envelope: AlertEnvelope) -> None:        # into step 4's columns (step 5 adds one)
        store.db.execute(store.insert_ignore_sql("alert_records", "(alert_id, rule, day, ts_ms, record) ", 5),
                         (envelope.alert_id, envelope.rule.id, envelope.day, int(round(envelope.ts * 1000)),
                          envelope.to_json()))

    db = store.db
    rows = db.execute("SELECT rule, key, day, first_seen_ms, record FROM alerts").fetchall()
    for rule, key, day, first_ms, text in rows:
        fields = json.loads(text)
        fields.pop("rule", None)
        context = fields.get("context") or {}
        flow = Flow(fields.get("actor_remote_ip") or context.get("actor_remote_ip"), context.get("actor_remote_port"),
                    context.get("agent_ip"), None)
        add(AlertEnvelope(rule_meta(rule, fields.get("rule_version")), first_ms / 1000, json.loads(key), day,
                          (flow,), "", fields))
    for (text,) in db.execute("SELECT record FROM coercion_alerts").fetchall():
        fields = json.loads(text)
        fields["call_event_ids"] = tuple(fields.get("call_event_ids", ()))
        known = {k: v for k, v in fields.items() if k in CoercionAlert.__dataclass_fields__}
        add(CoercionAlert(**known).envelope(""))


MIGRATIONS: list[tuple[str, ...]] = [
    # 1: events, the distinct days each detector key was seen, one alert per rule+key+day.
    (
        """
        CREATE TABLE events (
            event_id         TEXT PRIMARY KEY,
            ts_ms            INTEGER NOT NULL,      -- event_timestamp
            utc_date         TEXT NOT NULL,         -- YYYY-MM-DD of _time
            day_of_month     INTEGER NOT NULL,      -- XQL extract_time(_time, "DAY")
            event_type       INTEGER NOT NULL,
            interface_uuid   TEXT NOT NULL,
            func_name        TEXT NOT NULL,
            opnum            INTEGER NOT NULL,
            actor_type       INTEGER NOT NULL,
            agent_hostname   TEXT NOT NULL,
            agent_id         TEXT NOT NULL,
            agent_ip         TEXT NOT NULL,
            actor_remote_ip  TEXT NOT NULL,
            dfs_relay_server TEXT,                  -- ServerName argument; NULL when not decoded
            dfs_root_share   TEXT,                  -- RootShare argument; NULL when not decoded
            record           TEXT NOT NULL          -- the event as JSON, every field
        ) WITHOUT ROWID
        """,
        """
        CREATE INDEX events_by_time ON events (ts_ms)
        """,
        """
        CREATE TABLE key_days (
            rule     TEXT NOT NULL,
            key      TEXT NOT NULL,                 -- JSON array of the rule's key fields
            utc_date TEXT NOT NULL,
            PRIMARY KEY (rule, key, utc_date)
        ) WITHOUT ROWID
        """,
        """
        CREATE INDEX key_days_by_date ON key_days (utc_date)
        """,
        """
        CREATE TABLE alerts (
            alert_id         INTEGER PRIMARY KEY,
            rule             TEXT NOT NULL,
            key              TEXT NOT NULL,
            day              TEXT NOT NULL,         -- UTC date the alert is for
            first_seen_ms    INTEGER NOT NULL,
            last_seen_ms     INTEGER NOT NULL,
            agent_hostname   TEXT NOT NULL,
            agent_ip         TEXT NOT NULL,
            actor_remote_ip  TEXT NOT NULL,
            opnum            INTEGER NOT NULL,
            record           TEXT NOT NULL,         -- the alert as JSON, kept current
            UNIQUE (rule, key, day)
        )
        """,
        """
        CREATE INDEX alerts_by_time ON alerts (first_seen_ms)
        """,
    ),
    # 2: alerts of the coercion stages (sensor/coercion): one per rule, [victim, listener,
    # client] and UTC day, so a replayed capture raises nothing twice.
    (
        """
        CREATE TABLE coercion_alerts (
            alert_id  INTEGER PRIMARY KEY,
            rule      TEXT NOT NULL,
            key       TEXT NOT NULL,                -- JSON [victim_ip, listener_ip, client_ip]
            day       TEXT NOT NULL,                -- UTC date of the alert's ts
            ts_ms     INTEGER NOT NULL,
            record    TEXT NOT NULL,                -- the CoercionAlert as JSON
            UNIQUE (rule, key, day)
        )
        """,
        """
        CREATE INDEX coercion_alerts_by_time ON coercion_alerts (ts_ms)
        """,
    ),
    # 3: XQL hunts (sensor/xql/sql.py) filter on the interface and opnum; XQL compares text
    # without case by default, so the index's text column is NOCASE to be usable for it.
    (
        """
        CREATE INDEX events_by_call ON events (interface_uuid COLLATE NOCASE, opnum, ts_ms)
        """,
    ),
    # 4: every rule's alert as the one envelope it was written out as (sensor/alerts.py), keyed
    # by its stable alert_id (rule + key + day); suppressed ones (the allow-list) are kept too.
    (
        """
        CREATE TABLE alert_records (
            alert_id   TEXT PRIMARY KEY,            -- uuid5 of rule + key + day
            rule       TEXT NOT NULL,
            day        TEXT NOT NULL,               -- UTC date the alert is for
            ts_ms      INTEGER NOT NULL,            -- the envelope's timestamp
            suppressed_by TEXT,                     -- NULL: written out; else the allow-list entry's reason
            record     TEXT NOT NULL                -- the envelope, byte for byte as written
        ) WITHOUT ROWID
        """,
        """
        CREATE INDEX alert_records_by_time ON alert_records (ts_ms)
        """,
    ),

    # 5: every row names the sensor that saw it (issue 16: a fleet writes one store): the
    # --sensor-name of the run that stored it; rows stored before have it from their JSON
    # (events and alerts carry "sensor" since the alert record's release), else NULL.
    (
        """
        ALTER TABLE events ADD COLUMN sensor TEXT
        """,
        """
        ALTER TABLE alerts ADD COLUMN sensor TEXT
        """,
        """
        ALTER TABLE alert_records ADD COLUMN sensor TEXT
        """,
        """
        CREATE INDEX events_by_sensor ON events (sensor, ts_ms)
        """,
    ),
]


def sensor_of_older_rows(store: Store) -> None:
    """After step 5: the sensor column of the rows already there, from their JSON (the
    event's and the envelope's "sensor"; a rarity alert's state row: its first event's);
    NULL where they do not say (rows stored before the alert record's release)."""
    sensor = store.XQL_DIALECT.json_field("sensor", "text")
    for table in ("events", "alert_records"):
        store.db.execute(f"UPDATE {table} SET sensor = {sensor}")
    for alert_id, text in store.db.execute("SELECT alert_id, record FROM alerts").fetchall():
        first = (json.loads(text).get("event_ids") or [None])[0]
        store.db.execute("UPDATE alerts SET sensor = (SELECT sensor FROM events WHERE event_id = ?) "
                         "WHERE alert_id = ?", (first, alert_id))


# Step number -> the conversion of a migrating store's rows that runs right after it.
CONVERSIONS: dict[int, Callable[[Store], None]] = {4: envelopes_of_older_alerts, 5: sensor_of_older_rows}

SCHEMA_VERSION = len(MIGRATIONS)
