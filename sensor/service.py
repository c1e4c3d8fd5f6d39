"""``dfs-sensor live``: the sensor as a long-running service on capture interfaces.

Order of start-up: refuse root without --allow-root or --user; open the capture sockets
(the only privileged step); drop to --user keeping only CAP_NET_RAW; open the store as the
unprivileged user. Then frames flow into the Sensor until SIGTERM/SIGINT.

Signals only set flags; the work happens between frames, at the latest at the next idle
tick (sensor.capture.live.TICK_SECONDS):
- SIGTERM, SIGINT: stop capturing, drain the pipeline, commit and close the store, exit 0.
- SIGHUP: reopen the output files (after logrotate moved them).
"""
from __future__ import annotations

import codecs
import json
import os
import pwd
import signal
import sys
import syslog as syslog_module
import time
from collections.abc import Iterator

from sensor.capture.live import CaptureError, LiveCapture
from sensor.config import Config
from sensor.outputs import STDOUT, OutputError, Outputs
from sensor.privileges import PrivilegeError, drop_privileges, refuse_root
from sensor.runner import Sensor
from sensor.store.sqlite import StoreError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2          # click's code for a usage error: bad flag, filter, interface, user
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# Codecs load their module on first use. After the drop to --user the Python installation
# may be unreadable (or replaced by an upgrade), so the ones the decoders use load first.
PRELOADED_CODECS = ("utf-8", "utf-16-le", "latin-1", "ascii")


class SyslogAlerts:
    """The alerts sink, teed to the local syslog (journald reads /dev/log under systemd)."""

    def __init__(self, sink) -> None:
        self.sink = sink
        syslog_module.openlog("dfs-sensor", syslog_module.LOG_PID, syslog_module.LOG_DAEMON)

    def write(self, line: str) -> None:
        if self.sink is not None:
            self.sink.write(line)
        syslog_module.syslog(syslog_module.LOG_WARNING, line)

    def reopen(self) -> None:
        if self.sink is not None:
            self.sink.reopen()

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        syslog_module.closelog()


class _Signals:
    """Flags set by signal handlers, acted on by the capture loop."""

    def __init__(self) -> None:
        self.stop = False
        self.reopen = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum, frame) -> None:
        self.stop = True

    def _on_hup(self, signum, frame) -> None:
        self.reopen = True

    def stopping(self) -> bool:
        return self.stop


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


def stats_record(capture: LiveCapture, sensor: Sensor) -> dict:
    """What the periodic stats line reports: counters since start, and memory now."""
    kernel = capture.kernel_counters()
    pipeline = sensor.pipeline.stats
    anomalies = sum(n for stats in (capture.stats, pipeline, sensor.detector.stats)
                    for name, n in stats.items() if name.startswith("anomaly."))
    return {
        "type": "stats",
        "time": round(time.time(), 3),
        "packets": capture.stats["capture.frames"],
        "kernel_packets": sum(c.packets for c in kernel.values()),
        "kernel_drops": sum(c.drops for c in kernel.values()),
        "interfaces": {name: {"kernel_packets": c.packets, "kernel_drops": c.drops}
                       for name, c in kernel.items()},
        "flows": pipeline["flows"],
        "events": sensor.stats["events"],
        "alerts": sensor.stats["alerts"],
        "anomalies": anomalies,
        "rss_bytes": rss_bytes(),
    }


def format_stats(record: dict, as_json: bool) -> str:
    if as_json:
        return json.dumps(record, separators=(",", ":"))
    return ("dfs-sensor stats: packets {packets:,} kernel_drops {kernel_drops:,} flows {flows:,} "
            "events {events:,} alerts {alerts:,} anomalies {anomalies:,} rss {rss_mb:.1f} MB"
            .format(rss_mb=record["rss_bytes"] / 1e6, **record))


def _supervised(capture: LiveCapture, signals: _Signals, outputs: Outputs, on_interval,
                stats_interval: float) -> Iterator:
    """The capture's frames, with signals and periodic stats handled at every idle tick."""
    next_stats = time.monotonic() + stats_interval if stats_interval > 0 else float("inf")
    for item in capture.packets(signals.stopping):
        yield item
        if item is None:
            if signals.reopen:
                signals.reopen = False
                try:
                    outputs.reopen()
                except OutputError as e:
                    print(f"dfs-sensor: SIGHUP: {e}", file=sys.stderr, flush=True)
            if time.monotonic() >= next_stats:
                next_stats += stats_interval
                on_interval()


def _give_outputs_to(user: str | None, outputs: Outputs) -> None:
    """Root opened the output files; after the drop, ``user`` must be able to reopen them
    (SIGHUP without a rotation reopens the same file)."""
    if user is None or os.geteuid() != 0:
        return
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"no such user: {user}") from None
    for sink in (outputs.events, outputs.alerts):
        if sink is not None and sink.path != STDOUT:
            os.chown(sink.path, account.pw_uid, account.pw_gid)


def run_live(config: Config, outputs: Outputs, interfaces: list[str], bpf: str | None = None,
             stats_interval: float = 60.0, stats_json: bool = False, allow_root: bool = False,
             user: str | None = None, syslog: bool = False, workers: int = 1) -> int:
    """Capture on ``interfaces`` until SIGTERM/SIGINT; the process exit code."""
    def fail(message: str) -> int:
        print(f"dfs-sensor: {message}", file=sys.stderr)
        return EXIT_USAGE

    if workers != 1:
        return fail("--workers > 1 (AF_PACKET fanout into several processes) is not implemented yet; use --workers 1")
    try:
        refuse_root(allow_root, user)
        capture = LiveCapture(interfaces, bpf)
    except (PrivilegeError, CaptureError) as e:
        return fail(str(e))
    for codec in PRELOADED_CODECS:
        codecs.lookup(codec)
    try:
        _give_outputs_to(user, outputs)
        drop_privileges(user)
    except PrivilegeError as e:
        capture.close()
        return fail(str(e))
    if syslog:
        outputs.alerts = SyslogAlerts(outputs.alerts)
    signals = _Signals()
    signals.install()
    try:
        sensor = Sensor(config, outputs)
    except StoreError as e:
        capture.close()
        print(f"dfs-sensor: {e}", file=sys.stderr)
        return EXIT_FAILURE
    sensor.start_file("live:" + ",".join(interfaces))

    def report() -> None:
        print(format_stats(stats_record(capture, sensor), stats_json), file=sys.stderr, flush=True)

    print(f"dfs-sensor: capturing on {', '.join(capture.interfaces)}", file=sys.stderr, flush=True)
    try:
        sensor.process(_supervised(capture, signals, outputs, report, stats_interval))
    finally:
        summary = sensor.finish()
        record = stats_record(capture, sensor) | {"final": True}
        capture.close()
        outputs.close()
    print(format_stats(record, stats_json), file=sys.stderr)
    print(summary.human(), file=sys.stderr, flush=True)
    return EXIT_OK
