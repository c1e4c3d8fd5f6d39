"""One alert record for every rule: the envelope that is streamed, stored and shipped.

Every rule (the DFSCoerce rarity rule, rules loaded from .xql files, the coercion rules)
hands over its metadata (``RuleMeta``), the key it deduplicates on, the UTC day, the flows
involved and its own fields; ``AlertEnvelope`` turns that into one JSON shape:

    timestamp     ISO 8601 UTC with microseconds
    event_type    "alert"
    alert_id      UUIDv5 of rule id + key + day: the same on every replay and every sensor
    rule          {id, name, version, severity, technique}
    src_ip, src_port, dest_ip, dest_port, proto    the flow the alert is about (Suricata eve names)
    community_id  list: every flow involved (coercion: the inbound call and the back-authentication)
    sensor        the configured sensor name (default: the host name)
    ...           the rule's own fields, at the top level

Absent values are ``null``, never ``""``. The schema is sensor/schema/alert.schema.json.
"""
from __future__ import annotations

import json
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from sensor.community_id import community_id
from sensor.text import json_line

EVENT_TYPE = "alert"
# Namespace of alert ids: uuid5(namespace, "rule|key|day"). Fixed forever, so two sensors
# (or a replay next year) give one attack's alert the same id and a SIEM dedupes on it.
ALERT_ID_NAMESPACE = uuid.UUID("0f6f2c54-3c1e-5f7d-9a8e-d0c7a1e35b27")
PROTO_TCP = "TCP"
# Envelope names a rule's own fields may not take (they would overwrite the envelope).
ENVELOPE_FIELDS = ("timestamp", "event_type", "alert_id", "rule", "src_ip", "src_port", "dest_ip",
                   "dest_port", "proto", "community_id", "sensor")
# MITRE ATT&CK T1187 Forced Authentication: what every coercion technique achieves.
FORCED_AUTHENTICATION = "T1187"


@dataclass(frozen=True)
class RuleMeta:
    """The rule an alert record names (its "rule" object)."""
    id: str
    name: str
    version: int | str
    severity: str            # "low", "medium", "high", "critical"
    technique: str | None    # MITRE ATT&CK technique id

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "version": self.version,
                "severity": self.severity, "technique": self.technique}


@dataclass(frozen=True)
class Flow:
    """A TCP connection, client -> server."""
    src_ip: str
    src_port: int | None
    dest_ip: str
    dest_port: int | None
    proto: str = PROTO_TCP

    @property
    def community_id(self) -> str | None:
        if self.src_port is None or self.dest_port is None:
            return None
        return community_id(self.src_ip, self.src_port, self.dest_ip, self.dest_port)


def default_sensor_name() -> str:
    return socket.gethostname()


def iso_utc(ts: float) -> str:
    """2026-11-28T03:25:08.069123Z: UTC, microseconds, Z."""
    moment = datetime.fromtimestamp(round(ts, 6), tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_alert_id(rule_id: str, key: Any, day: str) -> str:
    key_text = key if isinstance(key, str) else json.dumps(key, separators=(",", ":"), ensure_ascii=False)
    return str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{rule_id}|{key_text}|{day}"))


def nulled(value: Any) -> Any:
    """"" (and empty containers inside mappings) become null: one way to say absent."""
    if value == "":
        return None
    if isinstance(value, Mapping):
        return {k: nulled(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nulled(v) for v in value]
    return value


@dataclass(frozen=True)
class AlertEnvelope:
    """An alert of any rule as the sinks and the store take it: the rule, when, the key it is
    deduplicated on, the flows it is about and the rule's own fields."""
    rule: RuleMeta
    ts: float                       # epoch seconds of the activity that raised it
    key: Any                        # what the rule deduplicates on, with day
    day: str                        # UTC date YYYY-MM-DD
    flows: tuple[Flow, ...]         # the flow the alert is about first, then the others involved
    sensor: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = set(self.fields) & set(ENVELOPE_FIELDS)
        if clash:
            raise ValueError(f"rule {self.rule.id}: fields {sorted(clash)} would overwrite the envelope")

    @property
    def alert_id(self) -> str:
        return make_alert_id(self.rule.id, self.key, self.day)

    @property
    def flow(self) -> Flow | None:
        return self.flows[0] if self.flows else None

    def to_dict(self) -> dict:
        flow = self.flow
        ids = [c for c in (f.community_id for f in self.flows) if c]
        record = {
            "timestamp": iso_utc(self.ts),
            "event_type": EVENT_TYPE,
            "alert_id": self.alert_id,
            "rule": self.rule.to_dict(),
            "src_ip": flow.src_ip if flow else None,
            "src_port": flow.src_port if flow else None,
            "dest_ip": flow.dest_ip if flow else None,
            "dest_port": flow.dest_port if flow else None,
            "proto": flow.proto if flow else None,
            "community_id": list(dict.fromkeys(ids)),
            "sensor": self.sensor or None,
        }
        record.update(nulled(dict(self.fields)))
        return record

    def to_json(self) -> str:
        return json_line(self.to_dict())


# The DFSCoerce rarity rule's metadata as its file (sensor/rules/dfscoerce/) gives it; used
# where no rule file is at hand (alerts stored by versions before the envelope).
RARITY_RULE = RuleMeta("dfscoerce-rare-dfsnm-root-call",
                       "Rare MS-DFSNM root call (DFSCoerce): NetrDfsAddStdRoot or NetrDfsRemoveStdRoot", 1, "high",
                       FORCED_AUTHENTICATION)


def event_flow(event) -> Flow:
    """The flow of an RpcCallEvent: the caller (actor_remote) to the server (agent)."""
    return Flow(event.actor_remote_ip, event.actor_remote_port, event.agent_ip, event.agent_port)


def rarity_envelope(alert, event, sensor: str) -> AlertEnvelope:
    """An XQL rarity rule's Alert (sensor/detect/rarity.py), raised by ``event``: the rule's
    header as ``rule``; its fields (the query's ``by`` names, day, day_count, first/last seen,
    hits, event ids, context, rule file and version) at the top level; the key is the ``by``
    values in the query's order."""
    meta = alert.meta
    rule = RuleMeta(meta.id, meta.title, meta.version, meta.severity, meta.technique or None)
    fields = alert.to_dict()
    fields.pop("rule")
    return AlertEnvelope(rule, event.event_timestamp / 1000, list(alert.key.values()), alert.day,
                         (event_flow(event),), sensor, fields)
