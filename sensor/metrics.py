"""``--metrics-file PATH``: the sensor's counters in Prometheus text format (exposition format
0.0.4), for node_exporter's textfile collector: written to a temporary file in the same
directory and renamed over PATH, so the collector never reads half a file.

With ``--workers N`` each worker writes PATH with ".worker<N>" before the suffix and a
``worker`` label (node_exporter reads every *.prom file in its directory; one series per
worker keeps them from colliding).

``--engine tshark`` writes what that engine can count: tshark hands over only the frames its
display filter passed and dumpcap owns the capture socket, so the frames read, the kernel's
per-interface counters and the TCP flows (native-only, None here) are left out, and
``decoded_frames_total`` (tshark-only) says how many frames tshark decoded.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "dfs_sensor_"
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Snapshot:
    packets: int | None          # None: the engine cannot count them (tshark), left out
    flows: int | None
    events: int
    rss_bytes: int
    interfaces: dict[str, tuple[int, int]] | None = field(default_factory=dict)   # name: (kernel packets, drops)
    decoded_frames: int | None = None     # tshark engine: frames its display filter passed
    alerts_by_rule: dict[str, int] = field(default_factory=dict)
    suppressed_by_rule: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)
    spool_lines: dict[str, int] = field(default_factory=dict)              # output: lines waiting
    spool_dropped: dict[str, int] = field(default_factory=dict)            # output: dropped when full
    spool_lock_waits: dict[str, int] = field(default_factory=dict)         # output: another process's lock met
    lost_lines: dict[str, int] = field(default_factory=dict)               # output: never written
    rejected_lines: dict[str, int] = field(default_factory=dict)           # output: refused, or not a record
    store_spooled: int = 0           # PostgreSQL unreachable: batches waiting in the store's spool
    store_spool_dropped: int = 0     # events and coercion alerts the full store spool dropped
    labels: dict[str, str] = field(default_factory=dict)                   # on every series (worker)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Text:
    def __init__(self, labels: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.labels = labels

    def metric(self, name: str, kind: str, help_text: str, samples: dict[tuple, float] | float | None,
               label: str | None = None) -> None:
        if samples is None:          # not counted by this engine
            return
        self.lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}"]
        if not isinstance(samples, dict):
            samples = {(): samples}
        for key, value in sorted(samples.items()):
            labels = dict(self.labels)
            if label is not None:
                labels[label] = key
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(f"{PREFIX}{name}{{{text}}} {value}" if text else f"{PREFIX}{name} {value}")


def render(s: Snapshot, now: float | None = None) -> str:
    out = _Text(s.labels)
    out.metric("packets_total", "counter", "Frames the sensor read from its capture sockets.", s.packets)
    interfaces = s.interfaces
    out.metric("kernel_packets_total", "counter", "Frames the kernel passed to the capture socket, per interface.",
               None if interfaces is None else {name: c[0] for name, c in interfaces.items()}, "interface")
    out.metric("kernel_drops_total", "counter", "Frames the kernel dropped (ring full), per interface.",
               None if interfaces is None else {name: c[1] for name, c in interfaces.items()}, "interface")
    out.metric("decoded_frames_total", "counter", "Frames tshark's display filter passed to the sensor (tshark engine).",
               s.decoded_frames)
    out.metric("flows_total", "counter", "TCP flows tracked.", s.flows)
    out.metric("events_total", "counter", "RPC call events decoded.", s.events)
    out.metric("alerts_total", "counter", "New alerts raised, per rule.", s.alerts_by_rule, "rule")
    out.metric("suppressed_total", "counter", "New alerts the allow-list held back, per rule.",
               s.suppressed_by_rule, "rule")
    out.metric("anomalies_total", "counter", "Named traffic anomalies, per name.", s.anomalies, "name")
    out.metric("spool_lines", "gauge", "Lines waiting in a remote output's spool.", s.spool_lines, "output")
    out.metric("spool_dropped_total", "counter", "Oldest lines dropped from a full spool.", s.spool_dropped, "output")
    out.metric("spool_lock_waits_total", "counter", "Times a spool statement waited for another process's lock "
               "(--workers share a spool).", s.spool_lock_waits, "output")
    out.metric("output_lost_lines_total", "counter", "Lines an output could not write (full disk).",
               s.lost_lines, "output")
    out.metric("output_rejected_lines_total", "counter", "Lines a collector refused for good (RELP 500, an "
               "Elasticsearch item error), or spooled lines that are not records: counted, not sent again.",
               s.rejected_lines, "output")
    out.metric("store_spooled_batches", "gauge", "Batches waiting in the spool while the PostgreSQL store is "
               "unreachable.", s.store_spooled)
    out.metric("store_spool_dropped_total", "counter", "Events and coercion alerts dropped from the full store spool.",
               s.store_spool_dropped)
    out.metric("resident_memory_bytes", "gauge", "Resident set size.", s.rss_bytes)
    out.metric("last_update_timestamp_seconds", "gauge", "When this file was written.",
               round(time.time() if now is None else now, 3))
    return "\n".join(out.lines) + "\n"


def rss_bytes() -> int:
    """This process's resident set size (/proc/self/statm counts pages)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


def worker_path(path: str, worker: int | None) -> str:
    if worker is None:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.worker{worker}{p.suffix}"))


def write_textfile(path: str, text: str) -> None:
    """Write beside ``path`` and rename over it (atomic on one file system)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def output_counters(outputs) -> tuple[dict[str, int], ...]:
    """(spool lines, spool dropped, lost lines, rejected lines, spool lock waits) per output
    name of an Outputs."""
    spool, dropped, lost, rejected, lock_waits = {}, {}, {}, {}, {}
    for name in ("events", "alerts"):
        sink = getattr(outputs, name)
        sink = getattr(sink, "sink", sink)      # the local syslog tee wraps the alerts sink
        if sink is None:
            continue
        if hasattr(sink, "depth"):
            spool[name], dropped[name], rejected[name] = sink.depth, sink.dropped, sink.rejected
            lock_waits[name] = sink.lock_waits
        else:
            lost[name] = sink.lost
    return spool, dropped, lost, rejected, lock_waits


def snapshot(stats: dict, counters, alerts: dict, outputs, worker: int | None = None) -> Snapshot:
    """From a live stats record (sensor.service.stats_record), the summed stage counters,
    the sensor's alert counters and its outputs."""
    spool, dropped, lost, rejected, lock_waits = output_counters(outputs)
    return Snapshot(
        packets=stats["packets"], flows=stats["flows"], events=stats["events"], rss_bytes=stats["rss_bytes"],
        interfaces=None if stats["interfaces"] is None else
        {name: (c["kernel_packets"], c["kernel_drops"]) for name, c in stats["interfaces"].items()},
        decoded_frames=stats.get("decoded_frames"),
        alerts_by_rule={k.removeprefix("alerts."): n for k, n in alerts.items() if k.startswith("alerts.")},
        suppressed_by_rule={k.removeprefix("suppressed."): n for k, n in alerts.items()
                            if k.startswith("suppressed.")},
        anomalies={k.removeprefix("anomaly."): n for k, n in counters.items() if k.startswith("anomaly.")},
        spool_lines=spool, spool_dropped=dropped, spool_lock_waits=lock_waits, lost_lines=lost,
        rejected_lines=rejected,
        store_spooled=stats.get("store_spooled", 0), store_spool_dropped=stats.get("store_spool_dropped", 0),
        labels={} if worker is None else {"worker": str(worker)})
