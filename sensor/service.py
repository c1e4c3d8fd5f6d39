"""``dfs-sensor live``: the sensor as a long-running service on capture interfaces.

Order of start-up: refuse root without --allow-root or --user; open the capture sockets
(the only privileged step); drop to --user keeping only CAP_NET_RAW; open the store as the
unprivileged user. Then frames flow into the Sensor until SIGTERM/SIGINT.

Signals only set flags; the work happens between frames, at the latest at the next idle
tick (sensor.capture.live.TICK_SECONDS):
- SIGTERM, SIGINT: stop capturing, drain the pipeline, commit and close the store, exit 0.
- SIGHUP: reopen the output files (after logrotate moved them).

``--workers N`` (N > 1): the parent opens N capture sockets per interface in one AF_PACKET
fanout group (flow-symmetric hash, fragments reassembled first), drops privileges, creates
the store, and forks N workers. Each worker decodes the flows the kernel hashes to it, with
its own pipeline and its own connection to the shared SQLite store (WAL). The detector's
one-alert-per-key-per-day stays exact across workers: every event is stored and judged
inside one BEGIN IMMEDIATE transaction, so two workers never check and insert the same
alert key at once. The coercion correlator pairs two flows the hash may split, so it runs
once, in the parent: workers send it its inputs (sensor.coercion.forward) and the parent
stores and writes its alerts through a Sensor of its own. The parent forwards
SIGTERM/SIGINT/SIGHUP and exits when all workers have and their channels are drained.
"""
from __future__ import annotations

import itertools
import os
import signal
import sys
import time
import traceback
import select
import socket
from collections.abc import Iterator

from sensor import evidence, metrics
from sensor.metrics import rss_bytes
from sensor.capture.live import TICK_SECONDS, CaptureError, LiveCapture
from sensor.capture.ring import RING_MB
from sensor.coercion import forward
from sensor.coercion.correlate import Correlator
from sensor.config import Config
from sensor.daemon import (EXIT_FAILURE, EXIT_OK, EXIT_USAGE, PrivilegeError, Signals, SyslogAlerts, drop_privileges,
                           give_outputs_to, log, notice, refuse_root)
from sensor.outputs import Outputs
from sensor.pipeline import PipelineSettings
from sensor.sensor import Sensor
from sensor.store import open_store
from sensor.store.sqlite import StoreError
from sensor.text import json_line

# Fanout group ids are 16 bits (linux/if_packet.h PACKET_FANOUT: id in the low half).
FANOUT_ID_MASK = 0xFFFF
# More decoder processes than this is a configuration mistake: each holds a ring per
# interface (--ring-mb) and the kernel caps a fanout group at 65536 sockets; beyond the
# core count it only adds contention.
MAX_WORKERS = 64
# An idle tick as a block of one item: Sensor.process takes None as "expire and commit".
IDLE_TICK = (None,)


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
        "store_lock_waits": sensor.store.stats["lock_waits"],
        # PostgreSQL: batches waiting in the spool while the database is unreachable, and
        # events and coercion alerts the full spool dropped
        "store_spooled": sensor.spool.waiting if sensor.spool else 0,
        "store_spool_dropped": sensor.spool.dropped if sensor.spool else 0,
        "rss_bytes": rss_bytes(),
    }


def format_stats(record: dict, as_json: bool) -> str:
    if as_json:
        return json_line(record)
    spool = ""
    if record.get("store_spooled") or record.get("store_spool_dropped"):
        spool = " store_spooled {store_spooled:,} store_spool_dropped {store_spool_dropped:,}".format(**record)
    return ("dfs-sensor stats: packets {packets:,} kernel_drops {kernel_drops:,} flows {flows:,} "
            "events {events:,} alerts {alerts:,} anomalies {anomalies:,} rss {rss_mb:.1f} MB"
            .format(rss_mb=record["rss_bytes"] / 1e6, **record)) + spool


def supervised(capture: LiveCapture, signals: Signals, outputs: Outputs, on_interval,
               stats_interval: float, sensor: Sensor) -> Iterator:
    """What ``Sensor.process`` reads: the capture's frames and idle ticks (None), with signals
    and periodic stats handled at every tick. The blocks' lists are chained in C, so a frame
    costs no generator step between the ring and the pipeline."""
    return itertools.chain.from_iterable(
        _ticks_handled(capture, signals, outputs, on_interval, stats_interval, sensor))


def _ticks_handled(capture: LiveCapture, signals: Signals, outputs: Outputs, on_interval,
                   stats_interval: float, sensor: Sensor) -> Iterator:
    next_stats = time.monotonic() + stats_interval if stats_interval > 0 else float("inf")
    for block in capture.blocks(signals.stopping):
        if block is not None:
            yield block
            continue
        yield IDLE_TICK
        # the sensor has taken the tick (expired flows, committed) when this resumes
        signals.reopen_if_asked(outputs, sensor)
        if time.monotonic() >= next_stats:
            next_stats += stats_interval
            on_interval()


def _write_metrics(path: str, record: dict, capture: LiveCapture, sensor: Sensor, outputs: Outputs,
                   worker: int | None) -> None:
    """--metrics-file; a failure (full disk) is logged, never fatal."""
    counters = capture.stats + sensor.pipeline.stats + sensor.detector.stats
    for stage in sensor.coercion_stages:
        counters += stage.stats
    try:
        metrics.write_textfile(metrics.worker_path(path, worker),
                               metrics.render(metrics.snapshot(record, counters, sensor.stats, outputs, worker)))
    except OSError as e:
        log(f"dfs-sensor: {path}: cannot write metrics: {e.strerror or e}")


def run_live(config: Config, outputs: Outputs, interfaces: list[str], bpf: str | None = None,
             stats_interval: float = 60.0, stats_json: bool = False, allow_root: bool = False,
             user: str | None = None, syslog: bool = False, workers: int = 1,
             metrics_file: str | None = None, ring_mb: int = RING_MB) -> int:
    """Capture on ``interfaces`` until SIGTERM/SIGINT; the process exit code."""
    def fail(message: str) -> int:
        print(f"dfs-sensor: {message}", file=sys.stderr)
        return EXIT_USAGE

    if workers > MAX_WORKERS:
        return fail(f"--workers {workers}: at most {MAX_WORKERS}")
    captures: list[LiveCapture] = []
    try:
        refuse_root(allow_root, user)
        # One group per run; LiveCapture numbers it up per interface (a group spans one device).
        fanout = os.getpid() & FANOUT_ID_MASK if workers > 1 else None
        for _ in range(workers):
            captures.append(LiveCapture(interfaces, bpf, fanout_group=fanout, ring_mb=ring_mb))
    except (PrivilegeError, CaptureError) as e:
        for capture in captures:
            capture.close()
        return fail(str(e))
    try:
        give_outputs_to(user, outputs)
        drop_privileges(user)
    except PrivilegeError as e:
        for capture in captures:
            capture.close()
        return fail(str(e))
    if syslog:
        outputs.alerts = SyslogAlerts(outputs.alerts)
    if workers == 1:
        return _serve(config, outputs, captures[0], None, stats_interval, stats_json, metrics_file=metrics_file)
    try:
        open_store(config.db, later=True).close()     # create or migrate once, before the workers race to
    except StoreError as e:
        for capture in captures:
            capture.close()
        print(f"dfs-sensor: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    return _fork_workers(config, outputs, captures, stats_interval, stats_json, metrics_file)


def _fork_workers(config: Config, outputs: Outputs, captures: list[LiveCapture],
                  stats_interval: float, stats_json: bool, metrics_file: str | None = None) -> int:
    """Run ``_serve`` in one child per capture, each with a channel to the parent's coercion
    correlator; forward stop and reopen signals; the worst exit code. A worker that fails
    stops the others (a supervisor restarts the service)."""
    channels = [forward.channel() for _ in captures] if config.coercion.enabled else []
    # The parent's coercion alerts ask the workers for their flows' frames (sensor.evidence).
    evidence_channels = [evidence.request_channel() for _ in captures] if channels and config.evidence else []
    children: dict[int, int] = {}
    for number, capture in enumerate(captures, 1):
        pid = os.fork()
        if pid == 0:
            code = EXIT_FAILURE
            try:
                for other in captures:
                    if other is not capture:
                        other.close()
                mine = [None, None]
                for kind, pairs in enumerate((channels, evidence_channels)):
                    for index, (worker_end, parent_end) in enumerate(pairs):
                        parent_end.close()
                        if index == number - 1:
                            mine[kind] = worker_end
                        else:
                            worker_end.close()
                code = _serve(config, outputs, capture, number, stats_interval, stats_json, mine[0], metrics_file,
                              workers=len(captures), evidence_requests=mine[1])
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        children[pid] = number
    for capture in captures:
        capture.close()          # the rings live in the children
    for worker_end, _ in channels + evidence_channels:
        worker_end.close()       # so a worker's exit is end of file on its channel
    signals = Signals()

    def on_signal(signum, frame) -> None:
        if signum == signal.SIGHUP:
            signals.reopen = True
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    worst = EXIT_OK
    try:
        correlator = _CorrelatorHost(config, outputs, [end for _, end in channels],
                                     [end for _, end in evidence_channels]) if channels else None
    except StoreError as e:
        log(f"dfs-sensor: error: {e}")
        on_signal(signal.SIGTERM, None)
        correlator, worst = None, EXIT_FAILURE
    while children or (correlator and correlator.open):
        if correlator is not None:
            correlator.poll(TICK_SECONDS)
        else:
            time.sleep(TICK_SECONDS)
        signals.reopen_if_asked(outputs, *([correlator.sensor] if correlator is not None else []))
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.pop(pid, None)
            if os.waitstatus_to_exitcode(status) != EXIT_OK:
                if worst == EXIT_OK:
                    on_signal(signal.SIGTERM, None)
                worst = EXIT_FAILURE
    if correlator is not None:
        log(correlator.finish())
    outputs.close()
    return worst


class _CorrelatorHost:
    """The parent's one coercion correlator, fed what the workers forward; its alerts are
    stored and written by a Sensor of its own (same store, same outputs)."""

    def __init__(self, config: Config, outputs: Outputs, ends: list[socket.socket],
                 evidence_ends: list[socket.socket]) -> None:
        self.sensor = Sensor(config, outputs, notify=notice)
        if self.sensor.evidence is not None:
            self.sensor.evidence.ask_workers(evidence_ends)
        # Only the correlator: the size fingerprint reads one flow and stays in the workers.
        self.sensor.coercion_stages = tuple(stage for stage in self.sensor.coercion_stages
                                            if isinstance(stage, Correlator))
        self.sensor.start_file("live:correlator")
        self._reorder = forward.Reorder()
        self._ends = {end.fileno(): end for end in ends}
        self._poller = select.poll()
        for fd in self._ends:
            self._poller.register(fd, select.POLLIN)

    @property
    def open(self) -> bool:
        """Some worker has not closed its channel yet."""
        return bool(self._ends)

    def poll(self, timeout: float) -> None:
        """Take what the workers sent within ``timeout`` seconds; correlate, in timestamp
        order, what is older than the reorder delay (all of it once every worker is done)."""
        if self._reorder.pending:
            timeout = min(timeout, forward.REORDER_SECONDS / 3)
        received = []
        for fd, _ in self._poller.poll(int(timeout * 1000)):
            records, closed = forward.receive(self._ends[fd])
            received += records
            if closed:
                self._poller.unregister(fd)
                self._ends.pop(fd).close()
        self.sensor.correlate(self._reorder.feed(received, time.time()))
        if not self._ends:
            self.sensor.correlate(self._reorder.close())
        if self.sensor.evidence is not None:
            self.sensor.evidence.tick()

    def finish(self) -> str:
        """Commit and close the store; the line the parent logs."""
        summary = self.sensor.finish()
        rules = ", ".join(f"{rule} {n:,}" for rule, n in sorted(summary.alerts_by_rule.items()))
        return f"dfs-sensor: correlator: {summary.alerts:,} coercion alert(s)" + (f" ({rules})" if rules else "")


def _serve(config: Config, outputs: Outputs, capture: LiveCapture, worker: int | None,
           stats_interval: float, stats_json: bool, correlator_channel: socket.socket | None = None,
           metrics_file: str | None = None, workers: int = 1, evidence_requests: socket.socket | None = None) -> int:
    """One decoding process: capture -> sensor until a stop signal; the exit code. With a
    ``correlator_channel`` (a --workers child) the correlator's inputs go to the parent; one of
    ``workers`` decoders, it takes that share of the byte budgets."""
    interfaces = capture.interfaces
    signals = Signals()
    signals.install()
    try:
        sensor = Sensor(config, outputs, PipelineSettings(memory_share=workers), notice)
    except StoreError as e:
        capture.close()
        log(f"dfs-sensor: error: {e}")
        return EXIT_FAILURE
    sensor.start_file("live:" + ",".join(interfaces))
    if correlator_channel is not None:
        sensor.coercion_stages = tuple(
            forward.CorrelatorForwarder(correlator_channel) if isinstance(stage, Correlator) else stage
            for stage in sensor.coercion_stages)
    if evidence_requests is not None and sensor.evidence is not None:
        sensor.evidence.take_requests(evidence_requests)
    tag = {} if worker is None else {"worker": worker}

    def report() -> None:
        record = stats_record(capture, sensor)
        log(format_stats(record | tag, stats_json))
        if metrics_file:
            _write_metrics(metrics_file, record, capture, sensor, outputs, worker)

    log(f"dfs-sensor: capturing on {', '.join(interfaces)}" + (f" (worker {worker})" if worker else ""))
    try:
        sensor.process(supervised(capture, signals, outputs, report, stats_interval, sensor))
    finally:
        summary = sensor.finish()
        record = stats_record(capture, sensor) | tag | {"final": True}
        if metrics_file:
            _write_metrics(metrics_file, record, capture, sensor, outputs, worker)
        capture.close()
        outputs.close()
    log(format_stats(record, stats_json))
    log(summary.human())
    return EXIT_OK
