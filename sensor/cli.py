"""dfs-sensor: the command line. Exit codes: 0 done (alerts or not), 1 unusable input or
state (a one-line message on stderr), 2 usage or configuration errors."""
from __future__ import annotations

import json
import sqlite3
import sys
from contextlib import contextmanager, nullcontext
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import click

from sensor import compiled
from sensor.config import MAX_LOOKBACK_DAYS, MAX_THRESHOLD, Config, ConfigError, load_config
from sensor.alerts import RARITY_RULE
from sensor.capture.ring import MAX_RING_MB, RING_MB
from sensor.coercion.events import RULES as COERCION_RULES
from sensor.detect.rarity import (DAY_MODES, MATCH_MODES, detector_plans, detector_rules, hunt as run_hunt,
                                  later_hits, run_rule)
from sensor.hosts import HostQuery
from sensor.interfaces.catalog import default_catalog
from sensor.outputs import OutputError, open_outputs
from sensor.store import open_store
from sensor.store.sqlite import DEFAULT_LIST_LIMIT, ListFilter, Store, StoreError, explain, reported
from sensor.text import json_line, printable
from sensor.xql.dialects import Unsupported
from sensor.xql.rules import RuleError, parse_rule, with_day_mode, with_threshold

EXIT_INPUT = 1
EXIT_USAGE = 2
# Frames between progress-bar updates: often enough to look live, rare enough to cost nothing.
PROGRESS_EVERY_FRAMES = 4096
# ... or bytes read: the batch entry hands back a whole window of the file at a time.
PROGRESS_EVERY_BYTES = 1 << 20
# Times a --since/--until may name: what a datetime (and so an event's _time) can hold,
# years 1 to 9999 in epoch ms; beyond that a value is a typo, and SQLite's integers overflow.
EARLIEST_TIME_MS = int(datetime(1, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
LATEST_TIME_MS = int(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc).timestamp() * 1000)
# Rows a listing may return: SQLite's largest integer (LIMIT is one).
MAX_LIST_LIMIT = 2**63 - 1
# An opnum is an unsigned 16-bit field of the DCE/RPC request header (C706 12.6.4.9).
MAX_OPNUM = 0xFFFF
# Counter logging: at least once a day, or never (0).
MAX_STATS_INTERVAL = 86_400.0


class _TerminalLines:
    """The replay progress bar shares the terminal with alert lines (stdout) and messages
    (stderr): the bar is cleared before any line is written, and drawn again after."""

    bar = None          # the ProgressBar on screen, if any
    CLEAR = "\r\x1b[K"  # carriage return + ANSI "erase to end of line"

    @classmethod
    def clear(cls) -> None:
        if cls.bar is not None:
            sys.stderr.write(cls.CLEAR)
            sys.stderr.flush()

    @classmethod
    def redraw(cls) -> None:
        if cls.bar is not None:
            cls.bar.render_progress()


class _ClearingSink:
    """A sink writing to the bar's terminal (stdout): clear, write, redraw."""

    def __init__(self, sink) -> None:
        self.sink = sink

    def write(self, line: str) -> None:
        _TerminalLines.clear()
        self.sink.write(line)
        _TerminalLines.redraw()

    def __getattr__(self, name):
        return getattr(self.sink, name)


def _fail(message: str, code: int = EXIT_INPUT) -> None:
    _TerminalLines.clear()
    click.echo(f"dfs-sensor: error: {printable(message)}", err=True)
    sys.exit(code)


def _warn(message: str) -> None:
    _TerminalLines.clear()
    sys.stderr.write(f"dfs-sensor: {message}\n")
    sys.stderr.flush()


def _open_outputs(config: Config, live: bool = False):
    """Replay stops at a local write error, live goes on; remote sinks' news goes to stderr."""
    from sensor.sinks.targets import SinkConfigError

    try:
        return open_outputs(config.events, config.alerts, on_error=_warn if live else None,
                            settings=config.sinks, notify=_warn)
    except SinkConfigError as e:
        _fail(str(e), EXIT_USAGE)
    except OutputError as e:
        _fail(str(e))


def _load(config_file: str | None, flags: dict) -> Config:
    try:
        return load_config(config_file, flags)
    except ConfigError as e:
        _fail(str(e), EXIT_USAGE)


@contextmanager
def _reading(config: Config) -> Iterator[Store]:
    """The store opened read-only for a read command (never created, never locked against
    a writer); a missing, unreadable or damaged store, or a hung server, is one line and exit 1."""
    path = config.db
    try:
        store = open_store(path, readonly=True, deadline=config.store_deadline)
    except StoreError as e:
        _fail(str(e))
    try:
        with reported(path):
            yield store
    except StoreError as e:
        _fail(str(e))
    finally:
        store.close()


def parse_time(text: str, end_of_day: bool = False) -> int:
    """ISO 8601 date or date-time (UTC unless it says otherwise), or epoch seconds, to epoch
    ms. A bare date is the start of that day, or its last millisecond with ``end_of_day``."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not EARLIEST_TIME_MS <= seconds * 1000 <= LATEST_TIME_MS:     # inf and NaN too
            raise click.BadParameter(f"{text!r} is outside years 1 to 9999")
        return int(seconds * 1000)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        if end_of_day:
            start += timedelta(days=1, milliseconds=-1)
        return int(start.timestamp() * 1000)      # a date is within years 1 to 9999
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date, an ISO 8601 time or epoch seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        ms = int(moment.timestamp() * 1000)
    except (OverflowError, ValueError):      # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise click.BadParameter(f"{text!r} is outside years 1 to 9999") from None
    if not EARLIEST_TIME_MS <= ms <= LATEST_TIME_MS:
        raise click.BadParameter(f"{text!r} is outside years 1 to 9999")
    return ms


class _Host(click.ParamType):
    name = "HOST"

    def convert(self, value, param, ctx):
        if isinstance(value, HostQuery):
            return value
        try:
            return HostQuery.parse(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class _Time(click.ParamType):
    name = "TIME"

    def __init__(self, end_of_day: bool = False):
        self.end_of_day = end_of_day

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_time(value, self.end_of_day)
        except click.BadParameter as e:
            self.fail(e.message, param, ctx)


class _Seconds(click.FloatRange):
    """A FloatRange that also refuses NaN (which compares false with both bounds)."""

    def convert(self, value, param, ctx):
        seconds = super().convert(value, param, ctx)
        if seconds != seconds:
            self.fail(f"{value!r} is not a number", param, ctx)
        return seconds


def db_option(f: Callable) -> Callable:
    return click.option("--db", metavar="PATH|URL",
                        help="SQLite database of events and alerts, or a fleet's PostgreSQL database "
                             "(postgresql://USER@HOST/DB; password from PGPASSWORD, PGPASSFILE or ~/.pgpass) "
                             "(default: $DFS_SENSOR_DB, else $STATE_DIRECTORY/sensor.db, "
                             "else $XDG_STATE_HOME/dfs-sensor/sensor.db).")(f)


rules_option = click.option(
    "--rules", multiple=True, metavar="PATH",
    help="XQL rule file or directory of *.xql rules, on top of the shipped ones (repeat for several).")


def sensor_options(f: Callable) -> Callable:
    """The options replay and live share: where state and output go, the detector settings."""
    options = [
        db_option,
        click.option("--events", metavar="TARGET",
                     help="Write every new event as a JSON line to a path, - (stdout), syslog+udp|tcp|tls://HOST:PORT, "
                          "relp[+tls]://HOST:PORT, http(s)://..., splunk+https://HOST:PORT or "
                          "elastic+https://HOST:PORT/INDEX."),
        click.option("--alerts", metavar="TARGET",
                     help="Write every alert as a JSON line (default: stdout); the same targets as --events. "
                          "Remote targets spool on disk and retry (see [outputs] in the README)."),
        click.option("--config", "config_file", metavar="FILE", help="TOML configuration file."),
        click.option("--sensor-name", metavar="NAME", help="Name in every alert and event (default: the host name)."),
        click.option("--evidence", metavar="DIR", help="Write a pcap of each alert's flows to DIR/<alert_id>.pcap."),
        click.option("--allowlist", metavar="FILE",
                     help="Suppress alerts matching this TOML allow-list (hosts, pairs, listeners, each with a "
                          "reason and an optional expiry; stored, counted, not written; reloaded on SIGHUP)."),
        click.option("--threshold", type=click.IntRange(1, MAX_THRESHOLD),
                     help="Alert while a key was seen on fewer distinct days than this (default 7)."),
        click.option("--lookback-days", type=click.IntRange(1, MAX_LOOKBACK_DAYS), help="Window in days (default 30)."),
        click.option("--day-mode", type=click.Choice(DAY_MODES),
                     help="What a day is: the UTC date (default) or XQL's day of the month."),
        click.option("--match", type=click.Choice(MATCH_MODES),
                     help="Which shipped DFSCoerce rule runs: opnums 12 and 13 (default) or the published query verbatim."),
        rules_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _sensor_config(options: dict) -> Config:
    from sensor.suppress import AllowListError, load as load_allowlist

    config_file = options.pop("config_file")
    options["rules"] = options.get("rules") or None
    config = _load(config_file, options)
    _check_rules(config)
    if config.allowlist:
        try:
            load_allowlist(config.allowlist)
        except AllowListError as e:
            _fail(str(e), EXIT_USAGE)
    return config


def _check_rules(config: Config) -> None:
    """Refuse to start on a bad rule file or one that cannot stream, naming it (exit 2)."""
    try:
        detector_plans(config.detector)
    except RuleError as e:
        _fail(str(e), EXIT_USAGE)


def _version() -> str:
    from importlib import metadata      # ~20 ms of imports (email, zipfile...): only for --version

    try:
        return metadata.version("dfs-sensor")
    except metadata.PackageNotFoundError:   # run from a checkout that is not installed
        return "unknown (not installed)"


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """click's version_option, with the version looked up only when it is asked for."""
    if value and not ctx.resilient_parsing:
        click.echo(f"dfs-sensor, version {_version()} (per-packet core: {compiled.CORE})")
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and exit.")
def main() -> None:
    """Passive DFSCoerce detector: decodes MS-DFSNM calls (NetrDfsAddStdRoot opnum 12,
    NetrDfsRemoveStdRoot opnum 13) on SMB named pipes and DCE/RPC, stores them as
    xdr_data-style events in SQLite, and alerts on keys seen on few distinct days.

    \b
    dfs-sensor replay attack.pcap                  replay captures, alerts on stdout
    dfs-sensor live -i eth0 --alerts alerts.jsonl  watch an interface
    dfs-sensor hunt                                the Cortex XDR query over what is stored
    dfs-sensor hunt --xql query.xql                any XQL query over what is stored
    dfs-sensor alerts --since 2026-11-01           list stored alerts
    """


@main.command()
@sensor_options
@click.option("--engine", type=click.Choice(["native", "tshark"]), default="native", show_default=True,
              help="Decode with the built-in pipeline, or with tshark's dissectors (slower; a cross-check).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Decode this many files at once in worker processes (native engine). Stored events "
                   "and alerts equal a serial replay's for separate captures; replay files cut from one "
                   "capture (tcpdump -C/-G) serially, since a connection may go on into the next file. "
                   "Files only: a pipe or - among several captures is refused with --jobs.")
@click.argument("captures", nargs=-1, required=True, metavar="CAPTURE...")
def replay(captures: tuple[str, ...], engine: str, jobs: int, **options) -> None:
    """Replay pcap/pcapng files (gzip'ed too), in the order given, through the sensor.
    A pipe, a FIFO or - (standard input) is read as it streams.

    Alerts go to stdout as JSON lines (or --alerts); a summary goes to stderr, and a warning
    line per kind of damage a file has. Replaying a capture twice stores nothing twice and
    raises no alert twice.

    With a postgresql:// --db, batches wait in a local spool while the database is
    unreachable (at start too: the schema is checked when it answers; wrong credentials
    are one line, exit 1, and the spool kept) or hangs (store.batch_deadline_seconds, 5 s a
    batch) and the replay reads on; at the end it tries store.flush_seconds (5 s) to
    deliver them. What is still spooled then is named in the summary ("store: N batch(es)
    wait in the spool ..."), the exit status is 0, and the next run against the same
    database delivers it first (its alerts are raised then).

    \b
    Examples:
      dfs-sensor replay --db /tmp/s.db --events events.jsonl day1.pcap day2.pcapng
      dfs-sensor replay --jobs 2 archive/*.pcap       two files decoded at once
      tcpdump -r big.pcap -w - 'port 445' | dfs-sensor replay -
    """
    from sensor.capture.pcapfile import CaptureError, open_capture
    from sensor.sensor import Sensor

    if engine == "tshark" and jobs > 1:
        _fail("--jobs is for the native engine; tshark decodes each file in its own process already", EXIT_USAGE)
    config = _sensor_config(options)
    sizes = []
    streams = {}   # position in captures -> its reader: a pipe or stdin can be read once only, so it is kept
    for n, path in enumerate(captures):          # refuse up front rather than half-way through the list
        try:
            reader = open_capture(path)
        except CaptureError as e:
            _fail(str(e))
        sizes.append(reader.size)
        # standard input even when it is a regular file: a second open would share its file
        # offset, which the check has moved past the header
        if reader.stream or path == "-":
            streams[n] = reader
        else:
            reader.close()
    if streams and engine == "tshark":
        _fail("the tshark engine reads files: give it a file, not a pipe or -", EXIT_USAGE)
    parallel = jobs > 1 and len(captures) > 1
    if streams and parallel:
        _fail("--jobs decodes files in worker processes: a pipe or - is read once, in order; "
              "replay it without --jobs", EXIT_USAGE)
    # the workers fork now and decode while the outputs and the store open (they use neither)
    if parallel:
        from sensor.parallel import DecodedInParallel

        decoding = DecodedInParallel(list(captures), min(jobs, len(captures)))
    outputs = _open_outputs(config)
    try:
        sensor = Sensor(config, outputs, notify=_warn)
    except StoreError as e:
        _fail(str(e))
    try:
        if engine == "tshark":
            _replay_with_tshark(sensor, captures)
        elif parallel:
            _replay_parallel(sensor, decoding)
        else:
            _replay_native(sensor, captures, sizes, streams)
        summary = sensor.finish()
    except StoreError as e:         # damaged, locked beyond the retries, ...
        outputs.close()
        _fail(str(e))
    except OutputError as e:     # a full disk or a closed pipe: nothing of the batch is committed
        outputs.close()
        _fail(str(e))
    except sqlite3.Error as e:      # disk full, ...
        outputs.close()
        _fail(str(explain(config.db, e)))
    outputs.close()
    if engine == "tshark":
        summary = summary.as_tshark(sum(sizes))
    click.echo(summary.human(), err=True)


def _replay_native(sensor, captures: tuple[str, ...], sizes: list[int], streams: dict) -> None:
    from sensor.capture.pcapfile import CaptureError, open_capture

    show_progress = sys.stderr.isatty()
    # no bar at all off a terminal: click's progress bar module alone is ~6 ms of imports
    with (click.progressbar(length=sum(sizes), file=sys.stderr, label="replay") if show_progress
          else nullcontext()) as bar:
        if show_progress:
            _TerminalLines.bar = bar
            outputs = sensor.outputs
            for name in ("events", "alerts"):
                sink = getattr(outputs, name)
                if sink is not None and sink.path == "-" and sys.stdout.isatty():
                    setattr(outputs, name, _ClearingSink(sink))
        for n, path in enumerate(captures):
            reader = streams.pop(n, None)
            if reader is None:
                try:
                    reader = open_capture(path)
                except CaptureError as e:    # removed or changed since the check above
                    _fail(str(e))
            with reader:
                # --evidence reads a file again for its alerts' frames; a stream cannot be
                sensor.start_file("stdin" if path == "-" else Path(path).name, None if reader.stream else path)
                sensor.process(_with_progress(reader, bar) if show_progress else reader)
                # the reader counts packets too; only its anomalies (truncation) are news
                sensor.source_stats.update({k: n for k, n in reader.stats.items() if k.startswith("anomaly.")})
            for problem in reader.problems.values():
                _TerminalLines.clear()
                click.echo(f"dfs-sensor: warning: {problem}", err=True)
        _TerminalLines.bar = None       # leaving the block draws it at 100 % and ends its line


def _replay_parallel(sensor, decoding) -> None:
    from sensor.capture.pcapfile import CaptureError
    from sensor.parallel import WorkerDied

    try:
        with decoding:
            for capture in decoding:
                sensor.start_file(capture.name, capture.path)     # --evidence reads it again
                sensor.process_records(capture.records())     # as the worker sends them
                sensor.source_stats.update(capture.stats)
                for problem in capture.problems:
                    _TerminalLines.clear()
                    click.echo(f"dfs-sensor: warning: {problem}", err=True)
    except (CaptureError, WorkerDied) as e:    # removed or changed since the check above; a worker killed
        _fail(str(e))


def _replay_with_tshark(sensor, captures: tuple[str, ...]) -> None:
    from sensor.tshark.engine import TsharkEngine
    from sensor.tshark.version import TsharkUnavailable

    try:
        tshark = TsharkEngine()
    except TsharkUnavailable as e:
        _fail(str(e))
    for path in captures:
        sensor.start_file(Path(path).name, path)
        sensor.process_records(tshark.run_file(path))
    sensor.source_stats.update(tshark.stats)


def _with_progress(reader, bar) -> "_WithProgress":
    return _WithProgress(reader, bar)


class _WithProgress:
    """A reader that moves the progress bar as it is read: frame by frame (iterated), or as it
    feeds the pipeline itself (``replay_into``, the batch entry Sensor.process prefers)."""

    def __init__(self, reader, bar) -> None:
        self.reader = reader
        self.bar = bar

    def __iter__(self) -> Iterator:
        return self._moving(iter(self.reader))

    def replay_into(self, pipeline) -> Iterator[list]:
        return self._moving(self.reader.replay_into(pipeline))

    def _moving(self, items: Iterator) -> Iterator:
        reader, done = self.reader, 0
        for n, item in enumerate(items, 1):
            yield item
            if n % PROGRESS_EVERY_FRAMES == 0 or reader.position - done >= PROGRESS_EVERY_BYTES:
                self.bar.update(reader.position - done)
                done = reader.position
        self.bar.update(max(reader.size - done, 0))


@main.command()
@click.option("-i", "--interface", "interfaces", multiple=True, required=True, metavar="IFACE",
              help="Interface to capture on; repeat for several.")
@sensor_options
@click.option("--bpf", metavar="FILTER", help="Capture filter (default: TCP 135, 139 and 445, DCE/RPC on any TCP port, "
                                                   "IP fragments).")
@click.option("--stats-interval", type=_Seconds(0, MAX_STATS_INTERVAL), default=60.0, show_default=True,
              metavar="SECONDS", help="Log counters this often (0: never).")
@click.option("--stats-json", is_flag=True, help="Log counters as JSON lines instead of text.")
@click.option("--allow-root", is_flag=True, help="Keep running as root after opening the sockets.")
@click.option("--user", metavar="NAME", help="Drop privileges to this user after opening the sockets.")
@click.option("--syslog", is_flag=True, help="Also send every alert to the local syslog (daemon facility); messages and "
                                                       "counters stay on stderr.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Decoder processes (flows are split between them; native engine only).")
@click.option("--metrics-file", metavar="PATH",
              help="Write counters in Prometheus text format to PATH at every stats interval and at exit "
                   "(node_exporter textfile collector: a temporary file renamed over PATH; the tshark engine "
                   "writes the counters it has, see the README).")
@click.option("--ring-mb", type=click.IntRange(1, MAX_RING_MB), default=RING_MB, show_default=True, metavar="MIB",
              help="Kernel receive ring per interface and worker: frames wait there while the decoder is busy, "
                   "so a larger ring rides out longer bursts without drops (32 MiB: about half a second of "
                   "150k small packets/s). Native engine.")
@click.option("--engine", type=click.Choice(["native", "tshark"]), default="native", show_default=True,
              help="Decode with the built-in pipeline, or with dumpcap + tshark (slower; a cross-check; "
                   "tshark runs as the invoking user, so no --user).")
def live(interfaces: tuple[str, ...], bpf: str | None, stats_interval: float, stats_json: bool,
         allow_root: bool, user: str | None, syslog: bool, workers: int, engine: str,
         metrics_file: str | None, ring_mb: int, **options) -> None:
    """Watch network interfaces and alert as calls happen (Ctrl-C or SIGTERM stops,
    SIGHUP reopens the output files). Alerts go to stdout as JSON lines (or --alerts);
    messages and counters go to stderr. As root, give --user to drop privileges once the
    sockets are open, or --allow-root to keep them. With a postgresql:// --db, capture goes
    on while the database is unreachable, at start too, or hangs (store.batch_deadline_seconds,
    5 s a batch): batches wait in a local spool (store.spool_max_bytes; beyond it the oldest
    are dropped, counted) and are delivered in order when it is back (the schema is checked
    then: wrong credentials are one line, exit 1, and the spool kept for the next start).

    \b
    Examples:
      dfs-sensor live -i eth0 --user dfs-sensor --alerts /var/log/dfs-sensor/alerts.jsonl
      dfs-sensor live -i eth0 -i eth1 --engine tshark --allow-root --db /tmp/s.db
    """
    config = _sensor_config(options)
    if engine == "tshark" and workers > 1:
        _fail("--workers is for the native engine; tshark decodes in one process", EXIT_USAGE)
    if engine == "tshark" and config.evidence:
        _fail("--evidence is for the native engine: tshark hands over decoded fields, not the frames "
              "a pcap is made of", EXIT_USAGE)
    if engine == "tshark" and ring_mb != RING_MB:
        _fail("--ring-mb is for the native engine (dumpcap keeps its own buffer)", EXIT_USAGE)
    # Live, a full log partition must not stop capture: the sink keeps storing, counts
    # what it cannot write, retries, and says so once.
    outputs = _open_outputs(config, live=True)
    # The catalog's NDR types now, not at the first call decoded: by then the sensor has
    # dropped its privileges and may no longer read the interpreter's library.
    default_catalog().request_types()
    if engine == "tshark":
        from sensor.tshark.live import run_live_tshark

        try:
            code = run_live_tshark(config, outputs, list(interfaces), bpf=bpf, stats_interval=stats_interval,
                                   stats_json=stats_json, allow_root=allow_root, user=user, syslog=syslog,
                                   metrics_file=metrics_file)
        except sqlite3.Error as e:
            _fail(str(explain(config.db, e)))
        sys.exit(code)
    from sensor.service import run_live

    try:
        code = run_live(config, outputs, list(interfaces), bpf=bpf, stats_interval=stats_interval,
                        stats_json=stats_json, allow_root=allow_root, user=user, syslog=syslog,
                        workers=workers, metrics_file=metrics_file, ring_mb=ring_mb)
    except sqlite3.Error as e:     # disk full, ...
        _fail(str(explain(config.db, e)))
    except StoreError as e:        # damaged, locked beyond the retries, ...
        _fail(str(e))
    sys.exit(code)


def _reader_config(db: str | None, config_file: str | None, **flags) -> Config:
    return _load(config_file, {"db": db, **flags})


@main.command("hunt")
@db_option
@click.option("--config", "config_file", metavar="FILE", help="TOML configuration file.")
@click.option("--xql", "xql_file", metavar="FILE|-",
              help="Run this XQL query (a file, or - for stdin) instead of the DFSCoerce rule.")
@click.option("--until", type=_Time(end_of_day=True), metavar="TIME",
              help="End of the window (default: the newest stored event). A date means its end.")
@click.option("--lookback-days", type=click.IntRange(1, MAX_LOOKBACK_DAYS), help="Window in days (default 30).")
@click.option("--threshold", type=click.IntRange(1, MAX_THRESHOLD),
              help="Report groups seen on fewer days (default: the rule's K in its final `filter N < K`, 7).")
@click.option("--day-mode", type=click.Choice(DAY_MODES),
              help="utc-date (default) or day-of-month; with --xql the query runs as written unless given.")
@click.option("--match", type=click.Choice(MATCH_MODES), help="opnum-12-13 (default) or seed-exact.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def hunt_command(db, config_file, xql_file, until, lookback_days, threshold, day_mode, match, fmt) -> None:
    """Run the Cortex XDR DFSCoerce query over the stored events: the groups seen on fewer
    than THRESHOLD distinct days in the LOOKBACK-DAYS before --until, with their day count.
    With --xql, run any XQL query (dataset xdr_data) over the same window and print its rows.
    On a postgresql:// store the query runs as PostgreSQL's SQL, with the same rows
    (README, Many sensors: reads on PostgreSQL); a slow query goes on, a server that stops
    answering ends it (store.batch_deadline_seconds, then a connection attempt: one line, exit 1).

    \b
    Examples:
      dfs-sensor hunt --until 2026-11-30 --day-mode day-of-month --match seed-exact --format json
      dfs-sensor hunt --xql sensor/rules/dfscoerce/seed-exact.xql --format json
      echo 'filter action_rpc_func_opnum = 13 | comp count() by agent_hostname' | dfs-sensor hunt --xql -
    """
    config = _reader_config(db, config_file, lookback_days=lookback_days, threshold=threshold,
                            day_mode=day_mode, match=match)
    if xql_file is not None:
        rule = with_threshold(_query_rule(xql_file, day_mode, config.detector.groups), threshold)
        with _reading(config) as store:
            try:
                records = run_rule(store, rule, until, config.detector.lookback_days)
            except Unsupported as e:        # a query only SQLite's Python functions can run
                _fail(f"{xql_file}: {e}", EXIT_USAGE)
        columns = [c for c in rule.checked.final if c not in rule.checked.hidden]
        _print_records(records, fmt, columns)
        return
    with _reading(config) as store:
        records = run_hunt(store, until, config.detector)
    _print_records(records, fmt, ["day_count", "actor_remote_ip", "agent_hostname",
                                  "action_rpc_func_opnum", "action_rpc_func_name",
                                  "dfs_relay_server", "dfs_root_share", "actor_type", "agent_id"])


def _query_rule(path: str, day_mode: str | None, groups):
    """The --xql query as a rule (its header, if any, is optional); exit 2 on a bad query."""
    name = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"{path}: {getattr(e, 'strerror', None) or e}")
    try:
        rule = parse_rule(text, name, require_id=False, groups=groups)
    except RuleError as e:
        _fail(str(e), EXIT_USAGE)
    return with_day_mode(rule, day_mode) if day_mode is not None else rule


def list_options(f: Callable) -> Callable:
    options = [
        db_option,
        click.option("--config", "config_file", metavar="FILE", help="TOML configuration file."),
        click.option("--since", type=_Time(), metavar="TIME", help="From this time (a date: its start)."),
        click.option("--until", type=_Time(end_of_day=True), metavar="TIME", help="Up to this time (a date: its end)."),
        click.option("--server", type=_Host(), metavar="HOST|IP|CIDR",
                     help="Only calls to this server (agent_hostname or agent_ip; the victim of a coercion alert): "
                          "an address, a CIDR range or a name (DC01 also matches dc01.corp.example)."),
        click.option("--client", type=_Host(), metavar="HOST|IP|CIDR",
                     help="Only calls from this client (actor_remote_ip; the client of a coercion alert)."),
        click.option("--opnum", type=click.IntRange(0, MAX_OPNUM), help="Only this opnum."),
        click.option("--sensor", metavar="NAME",
                     help="Only what the sensor of this name stored (its --sensor-name; a fleet's PostgreSQL store)."),
        click.option("--limit", type=click.IntRange(1, MAX_LIST_LIMIT), default=DEFAULT_LIST_LIMIT, show_default=True,
                     help="Newest first, at most this many."),
        click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _listing(kind: str, columns: list[str]) -> Callable:
    def command(db, config_file, since, until, server, client, opnum, sensor, limit, fmt) -> None:
        where = ListFilter(since_ms=since, until_ms=until, server=server, client=client,
                           opnum=opnum, limit=limit, sensor=sensor)
        with _reading(_reader_config(db, config_file)) as store:
            records = getattr(store, kind)(where)
        _print_records(records, fmt, columns)
    return command


ALERT_COLUMNS = ["timestamp", "rule", "severity", "src_ip", "dest_ip", "listener", "alert_id"]


@main.command("alerts")
@list_options
@click.option("--rule", metavar="RULE", help="Only this rule (e.g. dfscoerce-rare-dfsnm-root-call, "
                                             "coercion-confirmed, probable-coercion).")
@click.option("--suppressed", is_flag=True,
              help="List the alerts the allow-list held back instead (with the entry's reason).")
def alerts_command(db, config_file, since, until, server, client, opnum, sensor, limit, fmt, rule,
                   suppressed) -> None:
    """List stored alerts of every rule, newest first, as they were written out (one JSON
    envelope per alert with --format json). --server is the server that took the call (the
    victim of a coercion alert), --client the caller; --opnum keeps alerts about calls with
    that opnum.

    \b
    Example:
      dfs-sensor alerts --since 2026-11-01 --client 10.0.0.0/24 --format json
    """
    config = _reader_config(db, config_file)
    where = ListFilter(since_ms=since, until_ms=until, server=server, client=client,
                       opnum=opnum, limit=limit, rule=rule, sensor=sensor)
    with _reading(config) as store:
        if rule is not None:
            known = sorted({RARITY_RULE.id, *COERCION_RULES, *store.alert_rules(), *_rule_ids(config)})
            if rule not in known:
                _fail(f"--rule {rule}: unknown rule; known rules: {', '.join(known)}", EXIT_USAGE)
        lines = store.alert_records(where, suppressed=suppressed)
        counts = later_hits(store) if fmt == "table" else {}
        reasons = {}
        if suppressed:
            reasons = {json.loads(line)["alert_id"]: None for line in lines}
            reasons = {alert_id: store.suppressed_by(alert_id) for alert_id in reasons}
    if fmt == "json":
        for line in lines:       # byte for byte what was streamed (suppressed: what would have been)
            if suppressed:
                record = json.loads(line)
                line = json_line(record | {"suppressed_by": reasons[record["alert_id"]]})
            click.echo(line)
        return
    rows = [_alert_row(json.loads(line)) for line in lines]
    for row in rows:
        row["suppressed_by"] = reasons.get(row["alert_id"])
        # the rarity rules' count of the key's hits that day, which goes on after the alert
        row["hits"], row["last_seen"] = counts.get(row["alert_id"], (None, None))
    _print_records(rows, fmt, ALERT_COLUMNS + ["hits", "last_seen"] + (["suppressed_by"] if suppressed else []))


def _rule_ids(config: Config) -> list[str]:
    """The ids of the rules this configuration runs (shipped and the user's)."""
    try:
        return [rule.meta.id for rule in detector_rules(config.detector)]
    except RuleError:
        return []


def _alert_row(alert: dict) -> dict:
    return alert | {"rule": alert["rule"]["id"], "severity": alert["rule"]["severity"],
                    "listener": alert.get("listener_ip") or alert.get("dfs_relay_server")}


main.command("events", help="""List stored events, newest first.

\b
Example:
  dfs-sensor events --server DC01 --opnum 13 --limit 20
""")(list_options(_listing("events", [
    "_time", "actor_remote_ip", "agent_hostname", "action_rpc_interface_name",
    "action_rpc_func_opnum", "action_rpc_func_name", "action_rpc_func_str_call_fields", "event_id"])))


@main.group("store")
def store_group() -> None:
    """Manage stores: SQLite files and PostgreSQL databases (postgresql://USER@HOST/DB)."""


@store_group.command("copy")
@click.option("--from", "source", required=True, metavar="PATH|URL", help="The store to read (not changed).")
@click.option("--to", "destination", required=True, metavar="PATH|URL", help="The store to add to (created if new).")
def store_copy(source: str, destination: str) -> None:
    """Copy every event, key day and alert of one store into another: a sensor's SQLite
    file into the fleet's PostgreSQL database, or back. Rows the destination already has
    are kept, so a copy can be run again (or after an interruption) and adds nothing twice.

    \b
    Example:
      dfs-sensor store copy --from /var/lib/dfs-sensor/sensor.db --to postgresql://dfs@db/dfs
    """
    from sensor.store.copy import copy_store

    try:
        report = copy_store(source, destination)
    except StoreError as e:
        _fail(str(e))
    except sqlite3.Error as e:
        _fail(str(explain(source, e)))
    click.echo(f"copied: {report.human()}", err=True)


@store_group.command("migrate")
@db_option
def store_migrate(db: str | None) -> None:
    """Create the store's schema, or bring it to this version's (a writer does it too when it
    opens the store). On PostgreSQL run it as the database's owner after upgrading
    dfs-sensor: the sensors' and analysts' roles may not alter tables (README, Many sensors).

    \b
    Example:
      dfs-sensor store migrate --db postgresql://dfs_owner@db/dfs
    """
    config = _load(None, {"db": db})
    try:
        store = open_store(config.db)
    except StoreError as e:
        _fail(str(e))
    version = store.schema_version
    store.close()
    click.echo(f"{store.path}: schema version {version}", err=True)


def _print_records(records: list[dict], fmt: str, columns: list[str]) -> None:
    if fmt == "json":
        for record in records:
            click.echo(json_line(record))
        return
    cells = [[_cell(record.get(c)) for c in columns] for record in records]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    if not records:
        click.echo("(none)")


def _cell(value) -> str:
    """Table text comes from the wire: non-printable characters (terminal escapes, CR, LF,
    bidi overrides) are shown as Python escapes, never sent to the terminal."""
    return "-" if value is None else printable(str(value))



if __name__ == "__main__":
    main()
