"""Named anomalies ("weird"s, in Zeek's words) and the counter set every stage keeps.

A stage never lets bad traffic escape as an exception. It records an Anomaly with the
flow it happened on, counts it in its ``stats`` and goes on (resynchronising or
abandoning the flow).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Something in the traffic that broke a protocol rule, or a bound the sensor enforces."""

    ts: float
    layer: str   # "capture", "ip", "tcp", "netbios", "smb1", "smb2", "ntlmssp", "dcerpc", "ndr"
    name: str    # stable snake_case name, e.g. "tcp_overlap_conflict"; counted as "anomaly.<name>"
    flow: Any = None  # the FlowKey it happened on, when there is one
    detail: str = ""


class Stats(Counter):
    """Plain counters of one stage. The pipeline sums them for the end-of-run summary."""

    def anomaly(self, ts: float, layer: str, name: str, flow: Any = None, detail: str = "") -> Anomaly:
        self["anomaly." + name] += 1
        return Anomaly(ts, layer, name, flow, detail)
