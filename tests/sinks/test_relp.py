"""The RELP sink against Debian's real rsyslogd with imrelp (rsyslog-relp), started here on
localhost ports with its own configuration, plain and over TLS (librelp's OpenSSL backend,
the server certificate from a test CA made by openssl). rsyslog parses each message as
RFC 5424 and writes its fields back as JSON; the tests read them and check them against the
alerts the file sink writes and the store lists.

The rulesets use a Direct queue: imrelp's thread runs the omfile action itself, so rsyslog
has written a record before it answers ``rsp 200`` (with its default in-memory main queue the
answer means "queued", and a SIGKILL can lose what was queued; that is rsyslog's side, see
README "Shipping alerts")."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sensor import metrics
from sensor.sinks.relp import WINDOW_FRAMES, RelpProtocolError, RelpTransport, frame, parse_frame, parse_offers
from sensor.sinks.sender import WAKE_SECONDS, SpooledSink
from sensor.sinks.spool import Spool
from sensor.sinks.targets import SinkSettings, _spool_path, open_sink
from tests.conftest import stored_alert_lines
from tests.schema_check import check
from tests.live.conftest import _missing_requirement as live_requirement, make_veth, remove_veth
from tests.live.test_live_outputs import metric_samples
from tests.live.test_service import ATTACKS, LiveSensor
from tests.sinks.test_http import LONG_FLUSH, alert_line, wait_for
from tests.sinks.test_syslog import (CAPTURES, FIELDS_TEMPLATE, RSYSLOGD, assert_rfc5424_alerts,
                                     assert_unverified_collector_gets_nothing, free_port, make_ca, received,
                                     start_rsyslogd, stop, stream_through_an_rsyslogd_that_dies)
from tests.sinks.test_spool import Claimant

ROOT = Path(__file__).resolve().parents[2]
DFS_SENSOR = str(ROOT / ".venv" / "bin" / "dfs-sensor")
IMRELP = next(Path("/usr/lib").glob("*/rsyslog/imrelp.so"), None)     # rsyslog-relp

needs_imrelp = pytest.mark.skipif(not Path(RSYSLOGD).exists() or IMRELP is None,
                                  reason="rsyslog and rsyslog-relp are not installed (scripts/setup --test installs them)")

CONFIG = """
global(workDirectory="{dir}" maxMessageSize="64k")
module(load="imrelp" tls.tlslib="openssl")
""" + FIELDS_TEMPLATE + """
ruleset(name="relp" queue.type="Direct") {{ action(type="omfile" file="{dir}/relp.log" template="fields") }}
ruleset(name="relp_tls" queue.type="Direct") {{ action(type="omfile" file="{dir}/relp_tls.log" template="fields") }}
input(type="imrelp" address="127.0.0.1" port="{relp}" ruleset="relp")
input(type="imrelp" address="127.0.0.1" port="{relp_tls}" ruleset="relp_tls" tls="on"
      tls.caCert="{dir}/ca.pem" tls.myCert="{dir}/server.pem" tls.myPrivKey="{dir}/server.key")
"""
SCHEMES = {"relp": "relp", "relp+tls": "relp_tls"}     # URL scheme: its port's and log's name
# Alerts the parent and a forked worker each write at once: more than a batch between them,
# so that both senders are sending from the spool at the same time.
FORKED_RECORDS = 300
# After rsyslog wrote what was expected, how long a test waits for a duplicate to show.
SETTLE_SECONDS = 1.0


def configure_imrelp(directory: Path, ports: dict[str, int] | None = None) -> dict[str, int]:
    """A CA, and a configuration listening on ``ports`` (default: fresh ones); the ports."""
    make_ca(directory)
    ports = ports or {"relp": free_port(), "relp_tls": free_port()}
    (directory / "rsyslog.conf").write_text(CONFIG.format(dir=directory, **ports))
    return ports


@pytest.fixture(scope="module")
def imrelp(tmp_path_factory):
    directory = tmp_path_factory.mktemp("imrelp")
    ports = configure_imrelp(directory)
    proc = start_rsyslogd(directory, ports)
    yield directory, ports
    stop(proc)


@needs_imrelp
@pytest.mark.parametrize("scheme", SCHEMES)
def test_rsyslog_receives_every_alert_as_the_file_sink_writes_it(imrelp, tmp_path, scheme):
    directory, ports = imrelp
    name = SCHEMES[scheme]
    config = tmp_path / "c.toml"
    config.write_text(f'[outputs]\nca_file = "{directory / "ca.pem"}"\nspool_dir = "{tmp_path / "spool"}"\n')
    alert_file = tmp_path / "alerts.jsonl"
    subprocess.run([DFS_SENSOR, "replay", "--db", str(tmp_path / "a.db"), "--sensor-name", "sensor-a",
                    "--alerts", str(alert_file), *map(str, CAPTURES)], capture_output=True, text=True, check=True)
    expected = alert_file.read_text().splitlines()
    assert len(expected) >= 3 and all(line.isascii() for line in expected)   # so a message is the line itself
    db = tmp_path / "b.db"
    log = directory / f"{name}.log"
    before = len(received(log, 0))                 # rsyslog is shared by this module's tests
    done = subprocess.run([DFS_SENSOR, "replay", "--db", str(db), "--sensor-name", "sensor-a", "--config",
                           str(config), "--alerts", f"{scheme}://127.0.0.1:{ports[name]}", *map(str, CAPTURES)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "" and "spool" not in done.stderr, done.stderr
    got = received(log, before + len(expected))[before:]
    assert sorted(record["msg"] for record in got) == sorted(expected)      # byte for byte, once each
    listed = stored_alert_lines(db)
    assert sorted(json.dumps(check("alert", r["msg"]), sort_keys=True) for r in got) == \
        sorted(json.dumps(json.loads(line), sort_keys=True) for line in listed)
    assert_rfc5424_alerts(got, "sensor-a")


@needs_imrelp
def test_relp_tls_refuses_a_collector_it_cannot_verify(imrelp, tmp_path):
    _, ports = imrelp
    assert_unverified_collector_gets_nothing(f"relp+tls://127.0.0.1:{ports['relp_tls']}", tmp_path)


@needs_imrelp
@pytest.mark.parametrize("scheme", SCHEMES)
def test_rsyslog_killed_mid_stream_and_restarted_gets_every_alert(tmp_path, scheme):
    """rsyslogd hangs (SIGSTOP) while alerts stream to it, is killed (SIGKILL) and started
    again: every alert arrives. What it had in its socket, unread and unanswered, died with
    it; the sender had not let those records go (no rsp 200) and sends them on the next
    session. Duplicates are the same records, and only the few rsyslog wrote but could not
    answer: what was answered before the break is not sent again."""
    directory = tmp_path / "rsyslog"
    directory.mkdir()
    ports = configure_imrelp(directory)
    proc = start_rsyslogd(directory, ports)
    messages: list[str] = []
    settings = SinkSettings(spool_dir=str(tmp_path / "spool"), ca_file=str(directory / "ca.pem"), sensor_name="s1")
    name = SCHEMES[scheme]
    sink = open_sink(f"{scheme}://127.0.0.1:{ports[name]}", "alerts", settings, notify=messages.append)
    lines = [alert_line(n) for n in range(3000)]
    assert stream_through_an_rsyslogd_that_dies(sink, lines, directory, ports, name, proc,
                                                signal.SIGKILL) <= WINDOW_FRAMES
    assert (sink.sent, sink.rejected, sink.dropped) == (len(lines), 0, 0)
    assert any("wait in the spool" in message for message in messages)
    assert any("delivering again" in message for message in messages)


@needs_imrelp
def test_an_absent_collector_costs_no_wait_and_the_next_run_delivers(tmp_path):
    """Nobody listens on the port: the replay ends at once (not at the flush bound), the
    alerts stay in the spool, and the next run, with rsyslog up, delivers exactly the stored
    alerts."""
    directory = tmp_path / "rsyslog"
    directory.mkdir()
    ports = configure_imrelp(directory)
    db = tmp_path / "s.db"
    config = tmp_path / "c.toml"
    config.write_text(f'[outputs]\nspool_dir = "{tmp_path / "spool"}"\nspool_flush_seconds = {LONG_FLUSH}\n')
    target = f"relp://127.0.0.1:{ports['relp']}"
    started = time.monotonic()
    down = subprocess.run([DFS_SENSOR, "replay", "--db", str(db), "--config", str(config), "--alerts", target,
                           str(CAPTURES[0])], capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < LONG_FLUSH
    assert down.returncode == 0
    assert "Connection refused" in down.stderr and "2 line(s) wait in the spool" in down.stderr
    proc = start_rsyslogd(directory, ports)
    try:
        again = subprocess.run([DFS_SENSOR, "replay", "--db", str(db), "--config", str(config), "--alerts", target,
                                str(CAPTURES[0])], capture_output=True, text=True, timeout=120, check=True)
        got = received(directory / "relp.log", 2)
    finally:
        stop(proc)
    assert "wait in the spool" not in again.stderr
    listed = stored_alert_lines(db)
    assert len(listed) == 2
    assert sorted(r["msg"] for r in got) == sorted(listed)


@needs_imrelp
def test_a_frozen_collector_costs_the_flush_bound_and_the_next_run_delivers(tmp_path):
    """rsyslogd frozen with SIGSTOP takes the connection (its kernel does) and never answers
    the open: the run gives up at spool_flush_seconds, keeps the alerts, and the next run,
    with rsyslogd running again, delivers them."""
    directory = tmp_path / "rsyslog"
    directory.mkdir()
    ports = configure_imrelp(directory)
    proc = start_rsyslogd(directory, ports)
    db = tmp_path / "s.db"
    config = tmp_path / "c.toml"
    config.write_text(f'[outputs]\nspool_dir = "{tmp_path / "spool"}"\nspool_flush_seconds = 1\n')
    command = [DFS_SENSOR, "replay", "--db", str(db), "--config", str(config),
               "--alerts", f"relp://127.0.0.1:{ports['relp']}", str(CAPTURES[0])]
    try:
        proc.send_signal(signal.SIGSTOP)
        hung = subprocess.run(command, capture_output=True, text=True, timeout=120)
        proc.send_signal(signal.SIGCONT)
        assert hung.returncode == 0
        assert "did not answer within 1 s" in hung.stderr and "waits in the spool" in hung.stderr
        assert not (directory / "relp.log").exists()
        again = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
        got = received(directory / "relp.log", 2)
    finally:
        stop(proc)
    assert "spool" not in again.stderr
    listed = stored_alert_lines(db)
    assert sorted(r["msg"] for r in got) == sorted(listed) and len(listed) == 2


@needs_imrelp
def test_a_new_session_starts_before_the_transaction_number_would_pass_nine_digits(imrelp, tmp_path, monkeypatch):
    """With the limit lowered to 600, every batch of 500 after the first needs a new session:
    rsyslog takes each record once, and nothing fails on the way."""
    from sensor.sinks import relp
    directory, ports = imrelp
    monkeypatch.setattr(relp, "MAX_TXNR", 600)
    opened = []
    open_session = RelpTransport._open
    monkeypatch.setattr(RelpTransport, "_open", lambda self: (opened.append(1), open_session(self)))
    messages: list[str] = []
    sink = open_sink(f"relp://127.0.0.1:{ports['relp']}", "alerts", SinkSettings(spool_dir=str(tmp_path / "spool")),
                     notify=messages.append)
    log = directory / "relp.log"
    before = len(received(log, 0))
    lines = [alert_line(n) for n in range(5000, 6500)]
    for line in lines:
        sink.write(line)
    wait_for(lambda: sink.depth == 0 and sink.sent == len(lines), "the spool to drain")
    sink.close()
    got = [json.loads(r["msg"]) for r in received(log, before + len(lines))[before:]]
    assert sorted(g["alert_id"] for g in got) == sorted(json.loads(line)["alert_id"] for line in lines)
    assert len(opened) >= 3 and messages == []


@needs_imrelp
def alert_numbers(log: Path, before: int, count: int) -> Counter:
    """How many times rsyslog wrote each alert ``n``, once it wrote ``count`` after the first
    ``before`` records (and a moment more, for a late duplicate)."""
    received(log, before + count)
    time.sleep(SETTLE_SECONDS)
    return Counter(json.loads(record["msg"])["n"] for record in received(log, 0)[before:])


def test_a_forked_worker_opens_a_session_of_its_own_and_sends_no_line_the_parent_sends(imrelp, tmp_path):
    """live --workers forks after the sinks are open (and sending, when a previous run left
    lines in the spool): a worker that went on with the parent's session would reuse its
    transaction numbers, and rsyslog would end the session under the parent. Then both write
    at once and both senders send from the one spool: each line by one of them, once (on main
    they sent the oldest lines whoever wrote them: an alert received twice)."""
    directory, ports = imrelp
    log = directory / "relp.log"
    before = len(received(log, 0))
    messages: list[str] = []
    sink = open_sink(f"relp://127.0.0.1:{ports['relp']}", "alerts", SinkSettings(spool_dir=str(tmp_path / "spool")),
                     notify=messages.append)
    sink.write(alert_line(7000))
    wait_for(lambda: sink.sent == 1, "the parent's first record")     # the parent's session is open
    worker_numbers = range(8000, 8000 + FORKED_RECORDS)
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:                                   # a worker: sends, and is killed (no close)
        code = 1
        try:
            os.close(reading)
            for n in worker_numbers:
                sink.write(alert_line(n))
            wait_for(lambda: set(worker_numbers) <= set(alert_numbers(log, before, 0)), "the worker's records")
            wait_for(lambda: sink.depth == 0, "the spool emptied (every line acknowledged)")
            os.write(writing, f"{sink.sent - 1}\n".encode())
            code = 0 if not messages else 2
        finally:
            os._exit(code)
    os.close(writing)
    for n in range(9000, 9000 + FORKED_RECORDS):
        sink.write(alert_line(n))
    with os.fdopen(reading) as pipe:
        worker_sent = pipe.read()
    assert os.waitpid(child, 0)[1] == 0
    wait_for(lambda: sink.depth == 0, "the parent's records")
    sink.close()
    assert messages == []                            # the parent's session never broke
    assert sink.sent + int(worker_sent) == 1 + 2 * FORKED_RECORDS          # no line sent twice
    got = alert_numbers(log, before, 1 + 2 * FORKED_RECORDS)
    assert set(got) == {7000, *worker_numbers, *range(9000, 9000 + FORKED_RECORDS)}
    assert {n: times for n, times in got.items() if times > 1} == {}


def test_the_lines_a_killed_worker_claimed_are_sent_by_the_parent_once_it_is_gone(imrelp, tmp_path):
    """A worker killed between claiming lines and their acknowledgement: the parent leaves them
    while the worker lives, and sends them once it is gone (no line lost, none twice)."""
    directory, ports = imrelp
    log = directory / "relp.log"
    before = len(received(log, 0))
    target = f"relp://127.0.0.1:{ports['relp']}"
    settings = SinkSettings(spool_dir=str(tmp_path / "spool"))
    left = Spool(_spool_path(target, "alerts", settings))       # a previous run's lines
    left.push([alert_line(n) for n in range(6000, 6010)])
    left.close()
    worker = Claimant(_spool_path(target, "alerts", settings), 4)
    messages: list[str] = []
    sink = open_sink(target, "alerts", settings, notify=messages.append)
    wait_for(lambda: sink.sent == 6, "the lines no live worker claimed")
    time.sleep(3 * WAKE_SECONDS)
    assert (sink.sent, sink.depth) == (6, 4)                    # the worker's, while it lives
    worker.kill()
    wait_for(lambda: sink.sent == 10 and sink.depth == 0, "the killed worker's lines")
    worker.reap()
    sink.close()
    assert messages == []
    assert alert_numbers(log, before, 10) == Counter(range(6000, 6010))


# What Debian's rsyslogd 8.2302 (librelp 1.11.0) answered an open, two syslog commands and a
# close, byte for byte, read off the socket.
LIBRELP_ANSWERS = (b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n"
                   b"commands=syslog\n2 rsp 6 200 OK\n3 rsp 6 200 OK\n4 rsp 0\n0 serverclose 0\n")


def test_librelp_answers_parse_whole_or_in_any_two_pieces():
    expected = [(1, b"rsp", b"200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n"
                             b"commands=syslog"),
                (2, b"rsp", b"200 OK"), (3, b"rsp", b"200 OK"), (4, b"rsp", b""), (0, b"serverclose", b"")]
    for cut in range(len(LIBRELP_ANSWERS) + 1):
        buffer, frames = bytearray(), []
        for piece in (LIBRELP_ANSWERS[:cut], LIBRELP_ANSWERS[cut:]):
            buffer += piece
            while (parsed := parse_frame(buffer)) is not None:
                frames.append(parsed)
        assert frames == expected and not buffer, cut
    assert parse_offers(expected[0][2].partition(b"\n")[2]) == {
        "relp_version": ["0"], "relp_software": ["librelp", "1.11.0", "http://librelp.adiscon.com"],
        "commands": ["syslog"]}
    assert frame(4, b"close") == b"4 close 0\n" and frame(2, b"syslog", b"<28>1 x") == b"2 syslog 7 <28>1 x\n"


@pytest.mark.parametrize("answer", [
    b"x rsp 0\n",                        # no transaction number
    b"1 rsp 5\n",                        # a length and no data
    b"1 rsp 3 abcX",                     # no LF trailer
    b"1 rsp 999999999 ",                 # beyond any answer's size: not buffered
    b"1234567890 rsp 0\n",               # ten digits
    b"1 r_p 0\n",                        # not a command name
])
def test_answers_that_cannot_be_relp_are_protocol_errors(answer):
    with pytest.raises(RelpProtocolError):
        parse_frame(bytearray(answer))


class RefusingRelpServer:
    """A RELP server that opens sessions as librelp does and answers ``500`` to every syslog
    command whose record ``refuse`` picks, ``200`` to the rest. Only for the protocol's error
    answer: rsyslog's imrelp answers 500 just to a command the session did not enable, which
    a client that offers commands=syslog never meets, so it cannot be made to refuse a
    record on demand; every other RELP test here talks to the real rsyslogd."""

    def __init__(self, refuse) -> None:
        self.refuse = refuse
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.records: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            buffer = bytearray()
            with conn:
                while data := conn.recv(65536):
                    buffer += data
                    while (parsed := parse_frame(buffer)) is not None:
                        conn.sendall(self._answer(*parsed))

    def _answer(self, txnr: int, command: bytes, data: bytes) -> bytes:
        if command == b"open":
            return frame(txnr, b"rsp", b"200 OK\nrelp_version=0\nrelp_software=test\ncommands=syslog")
        if command == b"close":
            return frame(txnr, b"rsp") + frame(0, b"serverclose")
        self.records.append(data)
        refused = self.refuse(json.loads(data.split(b"] ", 1)[1]))
        return frame(txnr, b"rsp", b"500 record refused by test" if refused else b"200 OK")

    def close(self) -> None:
        self.sock.close()


def test_a_500_answer_is_one_warning_and_counted_and_not_sent_again(tmp_path):
    """The RELP server here is the test's own (RefusingRelpServer): rsyslog cannot be made to
    answer 500 to a record on demand. Half the records are refused: they leave the spool, are
    not sent again, are said once and counted in the metrics."""
    server = RefusingRelpServer(refuse=lambda record: record["n"] % 2)
    target = f"relp://127.0.0.1:{server.port}"
    messages: list[str] = []
    sink = SpooledSink(target, RelpTransport("127.0.0.1", server.port, "alerts", "s1"),
                       str(tmp_path / "spool.db"), 1 << 20, messages.append)
    lines = [alert_line(n) for n in range(40)]
    for line in lines[:20]:
        sink.write(line)
    wait_for(lambda: sink.depth == 0 and sink.sent + sink.rejected == 20, "the first twenty answered")
    for line in lines[20:]:
        sink.write(line)
    wait_for(lambda: sink.depth == 0 and sink.sent + sink.rejected == 40, "all forty answered")
    text = metrics.render(metrics.snapshot({"packets": 0, "flows": 0, "events": 0, "rss_bytes": 0, "interfaces": {}},
                                           {}, {}, SimpleNamespace(events=None, alerts=sink)))
    sink.close()
    server.close()
    assert (sink.sent, sink.rejected, sink.dropped) == (20, 20, 0)
    assert len(server.records) == 40                         # a refused record is not sent again
    [warning] = [m for m in messages if "refused" in m]      # said once, not once per record
    assert "RELP 500 record refused by test" in warning and "not sent again" in warning
    series = {(s.name, tuple(s.labels.items())): s.value
              for family in text_string_to_metric_families(text) for s in family.samples}
    assert series[("dfs_sensor_output_rejected_lines_total", (("output", "alerts"),))] == 20


@pytest.fixture(scope="module")
def veth():
    pair = make_veth(f"{os.getpid() % 10000}r")
    yield pair
    remove_veth(pair)


@pytest.mark.root
@pytest.mark.skipif(live_requirement() is not None, reason=str(live_requirement()))
def test_live_says_a_refusal_once_and_counts_it_in_the_metrics_file(veth, tmp_path):
    """A real `dfs-sensor live` on a veth fed the attack capture, its alerts to a RELP server
    that refuses every record: one warning on stderr, and --metrics-file counts every stored
    alert as rejected while the spool is empty (nothing is retried)."""
    server = RefusingRelpServer(refuse=lambda record: True)
    prom = tmp_path / "dfs.prom"
    sensor = LiveSensor(tmp_path, veth.host, "--alerts", f"relp://127.0.0.1:{server.port}",
                        "--metrics-file", str(prom))
    rejected = ("dfs_sensor_output_rejected_lines_total", (("output", "alerts"),))
    try:
        veth.replay(ATTACKS[0])
        sensor.wait_for(lambda: prom.exists() and metric_samples(prom.read_text()).get(rejected, 0) >= 1,
                        "the refusal in the metrics")
        assert sensor.stop() == 0
    finally:
        server.close()
    last = metric_samples(prom.read_text())
    stored = stored_alert_lines(sensor.db)
    assert last[rejected] == len(stored) == len(server.records) >= 1
    assert last[("dfs_sensor_spool_lines", (("output", "alerts"),))] == 0
    assert len([line for line in sensor.stderr if "refused" in line]) == 1
