"""The DFSCoerce detector as it was before rules became XQL files (issue 12), written out in
plain Python from README "Detector semantics": the oracle the rule-driven detector is held to.

Match: event_type 22, the DFSNM uuid (as the sensor writes it), opnum 12 or 13, and for
seed-exact the literal name NetrDfsRemoveStdRoot. Key: the query's eight by fields. An event
whose key was seen on fewer than 7 distinct days (UTC dates, or their day of the month) in
the 30 calendar days ending with its UTC date, this one included, raises an alert; one per
key and UTC date; an event id seen before is not judged again.
"""
from __future__ import annotations

import json
from datetime import date, timedelta

DFSNM = "{4FC742E0-4A10-11CF-8273-00AA004AE673}"
KEY = ("actor_type", "action_rpc_func_name", "action_rpc_func_opnum", "agent_hostname", "agent_id",
       "actor_remote_ip", "dfs_relay_server", "dfs_root_share")
LOOKBACK, THRESHOLD = 30, 7


def expected_alerts(events: list[dict], match: str, day_mode: str) -> list[dict]:
    days: dict[tuple, set[str]] = {}
    raised: set[tuple] = set()
    seen: set[str] = set()
    out = []
    for e in events:
        if e["event_id"] in seen:
            continue
        seen.add(e["event_id"])
        if not (e["event_type"] == 22 and e["action_rpc_interface_uuid"] == DFSNM
                and e["action_rpc_func_opnum"] in (12, 13)
                and (match != "seed-exact" or e["action_rpc_func_name"] == "NetrDfsRemoveStdRoot")):
            continue
        args = json.loads(e["action_rpc_func_str_call_fields"])
        key = (e["actor_type"], e["action_rpc_func_name"], e["action_rpc_func_opnum"], e["agent_hostname"],
               e["agent_id"], e["actor_remote_ip"], args.get("ServerName"), args.get("RootShare"))
        day = e["_time"][:10]
        days.setdefault(key, set()).add(day)
        if (key, day) in raised:
            continue
        first = (date.fromisoformat(day) - timedelta(days=LOOKBACK - 1)).isoformat()
        in_window = [d for d in days[key] if first <= d <= day]
        count = len({d if day_mode == "utc-date" else int(d[8:]) for d in in_window})
        if count < THRESHOLD:
            raised.add((key, day))
            out.append({**dict(zip(KEY, key)), "day": day, "day_count": count, "first_seen": e["_time"],
                        "hits": 1, "event_ids": [e["event_id"]]})
    return out


def comparable(alert: dict) -> dict:
    return {k: alert[k] for k in (*KEY, "day", "day_count", "first_seen", "hits", "event_ids")}
