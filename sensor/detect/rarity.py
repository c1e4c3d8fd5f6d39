"""The DFSCoerce rule: a distinct-day rarity detector, the Cortex XDR hunting query run live.

The query (../shared/reference/events.md) groups MS-DFSNM root calls by
(actor_type, func name, opnum, server host, server id, client ip, ServerName, RootShare)
and reports the groups seen on fewer than 7 distinct days. Run live, that is: an event
whose key has been seen on fewer than ``threshold`` distinct days in the lookback window
(this day included) raises an alert, one per key per day; later hits that day update it.
``hunt`` is the batch form over the stored events and returns exactly the query's rows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Mapping

from sensor.anomaly import Stats
from sensor.events import EVENT_TYPE_RPC_CALL, RpcCallEvent
from sensor.detect.xql import json_extract_scalar, utc_date
from sensor.store.sqlite import Store
from sensor.text import json_line

RULE = "dfscoerce-rare-dfsnm-root-call"
DFSNM_XDR_UUID = "{4FC742E0-4A10-11CF-8273-00AA004AE673}"
ROOT_OPNUMS = (12, 13)                    # NetrDfsAddStdRoot, NetrDfsRemoveStdRoot
SEED_FUNC_NAME = "NetrDfsRemoveStdRoot"   # the query's literal name filter

DAY_UTC_DATE = "utc-date"            # the calendar date in UTC: what the query means
DAY_OF_MONTH = "day-of-month"        # XQL extract_time(_time, "DAY") exactly: 1..31 in GMT
DAY_MODES = (DAY_UTC_DATE, DAY_OF_MONTH)
MATCH_ROOT_OPNUMS = "opnum-12-13"    # both root calls, whatever the name says
MATCH_SEED_EXACT = "seed-exact"      # name = NetrDfsRemoveStdRoot and opnum in (12, 13)
MATCH_MODES = (MATCH_ROOT_OPNUMS, MATCH_SEED_EXACT)

# Event ids an alert lists; a noisy key's hits go on counting past this.
MAX_ALERT_EVENT_IDS = 50
MS_PER_DAY = 86_400_000

KEY_FIELDS = ("actor_type", "action_rpc_func_name", "action_rpc_func_opnum", "agent_hostname",
              "agent_id", "actor_remote_ip", "dfs_relay_server", "dfs_root_share")
# The same key as columns of the store's events table, in KEY_FIELDS order.
_KEY_COLUMNS = ("actor_type", "func_name", "opnum", "agent_hostname", "agent_id",
                "actor_remote_ip", "dfs_relay_server", "dfs_root_share")


@dataclass(frozen=True)
class RaritySettings:
    threshold: int = 7          # the query's "day_count < 7"
    lookback_days: int = 30     # the query's usual time range
    day_mode: str = DAY_UTC_DATE
    match: str = MATCH_ROOT_OPNUMS


@dataclass(frozen=True)
class Alert:
    rule: str
    actor_type: int
    action_rpc_func_name: str
    action_rpc_func_opnum: int
    agent_hostname: str
    agent_id: str
    actor_remote_ip: str
    dfs_relay_server: str | None
    dfs_root_share: str | None
    day: str                    # UTC date (YYYY-MM-DD) the alert is for
    day_count: int              # distinct days the key was seen in the window, this one included
    first_seen: str             # _time of the day's first and last hit
    last_seen: str
    hits: int
    event_ids: tuple[str, ...]
    context: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        record = {name: getattr(self, name) for name in self.__dataclass_fields__}
        record["event_ids"] = list(self.event_ids)
        record["context"] = dict(self.context)
        return record

    def to_json(self) -> str:
        return json_line(self.to_dict())


@dataclass(frozen=True)
class HuntRow:
    actor_type: int
    action_rpc_func_name: str
    action_rpc_func_opnum: int
    agent_hostname: str
    agent_id: str
    actor_remote_ip: str
    dfs_relay_server: str | None
    dfs_root_share: str | None
    day_count: int


def matches(event: RpcCallEvent, mode: str) -> bool:
    """The query's filter line; ``opnum-12-13`` drops its name condition."""
    return (event.event_type == EVENT_TYPE_RPC_CALL
            and event.action_rpc_interface_uuid == DFSNM_XDR_UUID
            and event.action_rpc_func_opnum in ROOT_OPNUMS
            and (mode != MATCH_SEED_EXACT or event.action_rpc_func_name == SEED_FUNC_NAME))


def event_key(event: RpcCallEvent) -> tuple:
    fields = event.action_rpc_func_str_call_fields
    return (event.actor_type, event.action_rpc_func_name, event.action_rpc_func_opnum,
            event.agent_hostname, event.agent_id, event.actor_remote_ip,
            json_extract_scalar(fields, "ServerName"), json_extract_scalar(fields, "RootShare"))


def triage_context(event: RpcCallEvent) -> dict:
    """What an analyst wants next to the alert, from the day's first hit."""
    return {
        "agent_ip": event.agent_ip,
        "actor_remote_port": event.actor_remote_port,
        "pipe": event.actor_remote_pipe_name,
        "smb_user": event.net_smb_user,
        "smb_domain": event.net_smb_domain,
        "smb_workstation": event.net_smb_workstation,
        "smb_dialect": event.net_smb_dialect,
        "rpc_auth_level": event.net_rpc_auth_level,
        "stub_sealed": event.net_stub_sealed,
        "encrypted": event.net_encrypted,
        "interface_inferred": event.net_interface_inferred,
        "decode_error": event.net_decode_error,
        "exception_code": event.action_rpc_func_exception_code,
        "community_id": event.net_community_id,
        "capture_file": event.net_capture_file,
        "capture_frame": event.net_capture_frame,
    }


class RarityDetector:
    """Feed it each newly stored event (in a store transaction); it returns new alerts.

    Its state is the store's key_days and alerts tables, so it survives restarts."""

    def __init__(self, settings: RaritySettings, store: Store):
        self.settings = settings
        self.store = store
        self.stats = Stats()

    def feed(self, event: RpcCallEvent) -> list[Alert]:
        if not matches(event, self.settings.match):
            return []
        self.stats["matched"] += 1
        key = json.dumps(event_key(event), separators=(",", ":"), ensure_ascii=False)
        day = utc_date(event.event_timestamp)
        store = self.store
        store.add_key_day(RULE, key, day)
        existing = store.alert_record(RULE, key, day)
        if existing is not None:
            self._update(existing, key, day, event)
            return []
        first_day = (date.fromisoformat(day) - timedelta(days=self.settings.lookback_days - 1)).isoformat()
        day_count = store.key_day_count(RULE, key, first_day, day, self.settings.day_mode == DAY_OF_MONTH)
        if day_count >= self.settings.threshold:
            self.stats["common"] += 1
            return []
        alert = Alert(RULE, *event_key(event), day=day, day_count=day_count,
                      first_seen=event._time, last_seen=event._time, hits=1,
                      event_ids=(event.event_id,), context=triage_context(event))
        store.put_alert(RULE, key, day, alert.to_dict(), event.event_timestamp, event.event_timestamp)
        self.stats["alerts"] += 1
        return [alert]

    def _update(self, record: dict, key: str, day: str, event: RpcCallEvent) -> None:
        """A later hit the same day: count it, widen first/last seen (replays may come out
        of order), list its id while there is room."""
        record["hits"] += 1
        record["first_seen"] = min(record["first_seen"], event._time)
        record["last_seen"] = max(record["last_seen"], event._time)
        if len(record["event_ids"]) < MAX_ALERT_EVENT_IDS:
            record["event_ids"].append(event.event_id)
        self.store.put_alert(RULE, key, day, record, event.event_timestamp, event.event_timestamp)
        self.stats["alert_updates"] += 1

    def close(self) -> list[Alert]:
        return []


def hunt(store: Store, until_ms: int | None, settings: RaritySettings) -> list[HuntRow]:
    """The query over the stored events whose time is in (until - lookback, until]; until
    defaults to the newest stored event. Rows are the query's groups with day_count."""
    if until_ms is None:
        until_ms = store.newest_event_ms()
        if until_ms is None:
            return []
    day = "day_of_month" if settings.day_mode == DAY_OF_MONTH else "utc_date"
    name_filter = "AND func_name = ?" if settings.match == MATCH_SEED_EXACT else ""
    columns = ", ".join(_KEY_COLUMNS)
    sql = (f"SELECT {columns}, count(DISTINCT {day}) AS day_count FROM events "
           f"WHERE ts_ms > ? AND ts_ms <= ? AND event_type = ? AND interface_uuid = ? "
           f"AND opnum IN ({', '.join('?' * len(ROOT_OPNUMS))}) {name_filter} "
           f"GROUP BY {columns} HAVING day_count < ? ORDER BY {columns}")
    args: list = [until_ms - settings.lookback_days * MS_PER_DAY, until_ms,
                  EVENT_TYPE_RPC_CALL, DFSNM_XDR_UUID, *ROOT_OPNUMS]
    if settings.match == MATCH_SEED_EXACT:
        args.append(SEED_FUNC_NAME)
    args.append(settings.threshold)
    return [HuntRow(*row) for row in store.db.execute(sql, args)]
