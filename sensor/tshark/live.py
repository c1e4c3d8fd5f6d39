"""``dfs-sensor live --engine tshark``: the tshark engine as a long-running service.

pyshark runs ``dumpcap -i IFACE [-i IFACE...] -f BPF -w - | tshark -i -``; the decoder and
the pyshark event loop run in a reader thread that hands records to the main thread
through a bounded queue (a full queue stalls tshark, and dumpcap's kernel buffer then
drops, as with any slow reader). The main thread owns the store, the outputs and the
signals (sensor.daemon), as in sensor.service:
- SIGTERM, SIGINT: stop dumpcap; tshark reads the pipe to its end, the decoder hands over
  the calls it held, everything is committed; exit 0.
- SIGHUP: reopen the output files.

tshark runs as the user that starts the sensor: its dissectors see attacker bytes, so root
needs --allow-root, and --user is refused (the sensor cannot drop the privileges of a child
it needs capturing; give the service user capture rights on dumpcap instead).
"""
from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pyshark
from pyshark.capture.capture import Capture, TSharkCrashException
from pyshark.tshark.tshark import get_process_path

from sensor.capture.live import DEFAULT_BPF, TICK_SECONDS, CaptureError, compile_bpf
from sensor.config import Config
from sensor.daemon import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, PrivilegeError, Signals, SyslogAlerts, log, notice, refuse_root
from sensor.outputs import Outputs
from sensor import metrics
from sensor.sensor import Sensor
from sensor.store.sqlite import StoreError
from sensor.text import json_line
from sensor.tshark.engine import DISPLAY_FILTER, PROTOCOLS, TsharkEngine
from sensor.tshark.version import TsharkUnavailable

# dumpcap says "Capturing on ..." once its sockets and filter are in place (well under a
# second on an idle host); one that has not after this long is stuck.
READY_TIMEOUT_SECONDS = 15.0
# Records waiting for the store; events are rare next to frames, so a full queue means the
# store is stuck, and tshark then waits rather than memory growing.
MAX_QUEUED_RECORDS = 4096
# The reader thread's end of input (tshark exited), after any exception it raised.
END = object()


class DumpcapCapture(pyshark.LiveCapture):
    """pyshark's live capture, telling when dumpcap is capturing and what it last
    complained about, and stoppable from another thread without losing captured frames."""

    def __init__(self, interfaces: list[str], bpf: str, tshark_path: str):
        super().__init__(interface=interfaces, bpf_filter=bpf, use_json=True, include_raw=True,
                         display_filter=DISPLAY_FILTER, tshark_path=tshark_path,
                         custom_parameters=["-J", PROTOCOLS], eventloop=asyncio.new_event_loop())
        self.ready = threading.Event()
        self.message = ""
        self._dumpcap_pid: int | None = None

    async def _get_tshark_process(self, packet_count=None, stdin=None):
        """dumpcap | tshark as pyshark's LiveCapture starts them, except that this process
        closes its copies of the pipe: pyshark keeps both ends open, so tshark never saw the
        end of input when dumpcap stopped, and could not be stopped without losing frames."""
        read, write = os.pipe()
        dumpcap = await asyncio.create_subprocess_exec(
            get_process_path(process_name="dumpcap", tshark_path=self.tshark_path),
            *self._get_dumpcap_parameters(), stdout=write, stderr=subprocess.PIPE)
        os.close(write)
        self._dumpcap_pid = dumpcap.pid
        self._create_stderr_handling_task(dumpcap.stderr)
        self._created_new_process([], dumpcap, process_name="Dumpcap")
        try:
            return await Capture._get_tshark_process(self, packet_count=packet_count, stdin=read)
        finally:
            os.close(read)

    async def _handle_process_stderr_forever(self, stderr):
        while line := await stderr.readline():
            text = line.decode(errors="replace").strip()
            if text.startswith("Capturing on"):
                self.ready.set()
            elif text and not text.startswith("Running as user") and not self.message:
                self.message = text         # the first complaint is the cause, later ones follow from it

    def stop(self) -> None:
        """SIGTERM to dumpcap only: tshark reads what is left in the pipe, then exits."""
        if self._dumpcap_pid is not None:
            try:
                os.kill(self._dumpcap_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _read(records: Iterator, into: queue.Queue) -> None:
    try:
        for record in records:
            into.put(record)
    except Exception as e:          # tshark or dumpcap failed: the main thread reports it
        into.put(e)
    finally:
        into.put(END)


def _batches(records: queue.Queue) -> Iterator[list | None]:
    """What the reader handed over since the last call, or None after an idle tick; ends
    at END (re-raising the reader's exception)."""
    while True:
        try:
            batch = [records.get(timeout=TICK_SECONDS)]
        except queue.Empty:
            yield None
            continue
        while batch[-1] is not END and not isinstance(batch[-1], Exception) and not records.empty():
            batch.append(records.get_nowait())
        last = batch[-1]
        if last is END or isinstance(last, Exception):
            yield batch[:-1]
            if isinstance(last, Exception):
                raise last
            return
        yield batch


def run_live_tshark(config: Config, outputs: Outputs, interfaces: list[str], bpf: str | None = None,
                    stats_interval: float = 60.0, stats_json: bool = False, allow_root: bool = False,
                    user: str | None = None, syslog: bool = False, metrics_file: str | None = None) -> int:
    """Capture on ``interfaces`` with dumpcap + tshark until SIGTERM/SIGINT; the exit code."""
    if user is not None:
        log("dfs-sensor: --engine tshark cannot drop privileges (tshark is a child that must "
            "capture): run it as a user allowed to run dumpcap, or use --engine native with --user")
        return EXIT_USAGE
    try:
        refuse_root(allow_root, None)
        compile_bpf(bpf or DEFAULT_BPF)   # dumpcap checks the filter only after it says "Capturing on"
        engine = TsharkEngine()
    except (PrivilegeError, TsharkUnavailable, CaptureError) as e:
        log(f"dfs-sensor: {e}")
        return EXIT_USAGE
    signals = Signals()
    signals.install()
    if syslog:
        outputs.alerts = SyslogAlerts(outputs.alerts)
    try:
        sensor = Sensor(config, outputs, notify=notice)
    except StoreError as e:
        log(f"dfs-sensor: error: {e}")
        return EXIT_FAILURE
    name = "live:" + ",".join(interfaces)
    sensor.start_file(name)
    capture = DumpcapCapture(interfaces, bpf or DEFAULT_BPF, engine.tshark_path)
    decoder = engine.decoder(name)
    records: queue.Queue = queue.Queue(MAX_QUEUED_RECORDS)
    reader = threading.Thread(target=_read, args=(engine.run_live(capture, decoder), records),
                              name="tshark-reader", daemon=True)
    reader.start()
    started = time.monotonic()
    while not capture.ready.wait(TICK_SECONDS):
        if not reader.is_alive() or time.monotonic() - started > READY_TIMEOUT_SECONDS or signals.stop:
            capture.stop()
            reader.join(READY_TIMEOUT_SECONDS)
            sensor.finish()
            outputs.close()
            if signals.stop:
                return EXIT_OK
            log(f"dfs-sensor: tshark capture did not start: {capture.message or 'no message from dumpcap'}")
            return EXIT_USAGE
    log(f"dfs-sensor: capturing on {', '.join(interfaces)} (tshark engine)")

    def stats(final: bool = False) -> str:
        # tshark hands over only the frames its display filter passed: those are counted
        record = {"type": "stats", "time": round(time.time(), 3), "engine": "tshark",
                  "packets_decoded": decoder.stats["packets"], "events": sensor.stats["events"],
                  "alerts": sensor.stats["alerts"]}
        if stats_json:
            return json_line(record | ({"final": True} if final else {}))
        return "dfs-sensor stats (tshark): packets decoded {packets_decoded:,} events {events:,} alerts {alerts:,}".format(**record)

    def write_metrics() -> None:
        """--metrics-file: what this engine counts (sensor.metrics); a failure is logged."""
        record = {"packets": None, "flows": None, "interfaces": None, "events": sensor.stats["events"],
                  "decoded_frames": decoder.stats["packets"], "rss_bytes": metrics.rss_bytes()}
        counters = decoder.stats + engine.stats + sensor.detector.stats
        for stage in sensor.coercion_stages:
            counters += stage.stats
        try:
            metrics.write_textfile(metrics_file, metrics.render(metrics.snapshot(record, counters, sensor.stats,
                                                                                 outputs)))
        except OSError as e:
            log(f"dfs-sensor: {metrics_file}: cannot write metrics: {e.strerror or e}")

    code = EXIT_OK
    next_stats = time.monotonic() + stats_interval if stats_interval > 0 else float("inf")
    stopping = False
    try:
        for batch in _batches(records):
            sensor.process_records(batch or ())   # None when idle: commits, and retries a spooled store
            if signals.stop and not stopping:
                stopping = True
                capture.stop()
            signals.reopen_if_asked(outputs, sensor)
            if time.monotonic() >= next_stats:
                next_stats += stats_interval
                log(stats())
                if metrics_file:
                    write_metrics()
    except TSharkCrashException as e:
        log(f"dfs-sensor: tshark failed: {capture.message or str(e).splitlines()[0]}")
        code = EXIT_FAILURE
    finally:
        capture.stop()              # when the store failed; else dumpcap has already gone
        reader.join(READY_TIMEOUT_SECONDS)
        sensor.source_stats.update(engine.stats)
        summary = sensor.finish()
        if metrics_file:
            write_metrics()
        outputs.close()
    log(stats(final=True))
    log(summary.as_tshark(None).human())
    return code
