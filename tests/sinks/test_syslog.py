"""Syslog sinks against a real rsyslog (Debian's rsyslogd, started here on localhost ports
with its own configuration in a temporary directory): UDP, TCP with octet counting, and TLS
with a test CA made by openssl. rsyslog parses each message as RFC 5424 and writes its
fields back as JSON; the test reads them and checks them against the alerts."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from sensor.sinks.targets import SinkSettings, open_sink
from tests.schema_check import check
from tests.sinks.test_http import alert_line, wait_for

ROOT = Path(__file__).resolve().parents[2]
DFS_SENSOR = str(ROOT / ".venv" / "bin" / "dfs-sensor")
CAPTURES = [ROOT / "pcaps" / "coerced-auth-clear.pcap", ROOT / "pcaps" / "dfscoerce-smb3-encrypted.pcap"]
RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
GTLS = next(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so"), None)     # rsyslog-gnutls

pytestmark = pytest.mark.skipif(not Path(RSYSLOGD).exists() or GTLS is None,
                                reason="rsyslog and rsyslog-gnutls are not installed (scripts/setup --test installs them)")

# What rsyslog makes of each message: its RFC 5424 parser's fields, as one JSON object a line.
FIELDS_TEMPLATE = """
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="pri" name="pri" format="jsonf")
  property(outname="protocol_version" name="protocol-version" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="structured_data" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
"""
CONFIG = """
global(workDirectory="{dir}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{dir}/ca.pem"
       defaultNetstreamDriverCertFile="{dir}/server.pem"
       defaultNetstreamDriverKeyFile="{dir}/server.key")
module(load="imudp")
module(load="imtcp" maxSessions="10")
""" + FIELDS_TEMPLATE + """
ruleset(name="udp") {{ action(type="omfile" file="{dir}/udp.log" template="fields") }}
ruleset(name="tcp") {{ action(type="omfile" file="{dir}/tcp.log" template="fields") }}
ruleset(name="tls") {{ action(type="omfile" file="{dir}/tls.log" template="fields") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="tls" streamDriver.name="gtls"
      streamDriver.mode="1" streamDriver.authMode="anon")
"""


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ca(directory: Path) -> None:
    """A test CA and a server certificate for 127.0.0.1 signed by it."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=dfs-sensor test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.pem")


def configure_rsyslog(directory: Path) -> dict[str, int]:
    """A CA, and a configuration listening on fresh ports in ``directory``; the ports."""
    make_ca(directory)
    ports = {"udp": free_port(socket.SOCK_DGRAM), "tcp": free_port(), "tls": free_port()}
    (directory / "rsyslog.conf").write_text(CONFIG.format(dir=directory, **ports))
    return ports


def start_rsyslogd(directory: Path, ports: dict[str, int]) -> subprocess.Popen:
    """rsyslogd on ``directory``'s configuration, once its stream ports (all but "udp") take
    connections."""
    proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(directory / "rsyslog.conf"),
                             "-i", str(directory / "rsyslogd.pid")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    for port in (port for kind, port in ports.items() if kind != "udp"):
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(f"rsyslogd did not start: {proc.stdout.read().decode()}")
                time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen) -> None:
    """rsyslogd asked to stop, and reaped."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rsyslog")
    ports = configure_rsyslog(directory)
    proc = start_rsyslogd(directory, ports)
    yield directory, ports
    stop(proc)


def received(path: Path, count: int) -> list[dict]:
    """rsyslog's records in ``path`` once there are ``count`` (omfile writes asynchronously)."""
    deadline = time.monotonic() + 20
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.1)


@pytest.mark.parametrize("scheme", ["udp", "tcp", "tls"])
def test_rsyslog_receives_every_alert_as_rfc5424_with_structured_data(rsyslog, tmp_path, scheme):
    directory, ports = rsyslog
    config = tmp_path / "c.toml"
    config.write_text(f'[outputs]\nca_file = "{directory / "ca.pem"}"\nspool_dir = "{tmp_path / "spool"}"\n')
    target = f"syslog+{scheme}://127.0.0.1:{ports[scheme]}"
    stdout_run = subprocess.run([DFS_SENSOR, "replay", "--db", str(tmp_path / "a.db"), "--sensor-name", "sensor-a",
                                 *map(str, CAPTURES)], capture_output=True, text=True, check=True)
    expected = [check("alert", line) for line in stdout_run.stdout.splitlines()]
    done = subprocess.run([DFS_SENSOR, "replay", "--db", str(tmp_path / "b.db"), "--sensor-name", "sensor-a",
                           "--config", str(config), "--alerts", target, *map(str, CAPTURES)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "" and "spool" not in done.stderr, done.stderr
    got = received(directory / f"{scheme}.log", len(expected))
    assert_rfc5424_alerts(got, "sensor-a")
    alerts = [check("alert", record["msg"]) for record in got]
    assert sorted(a["alert_id"] for a in alerts) == sorted(a["alert_id"] for a in expected)
    assert sorted(json.dumps(a, sort_keys=True) for a in alerts) == \
        sorted(json.dumps(a, sort_keys=True) for a in expected)


def test_tls_refuses_a_collector_it_cannot_verify(rsyslog, tmp_path):
    _, ports = rsyslog
    assert_unverified_collector_gets_nothing(f"syslog+tls://127.0.0.1:{ports['tls']}", tmp_path)


def assert_rfc5424_alerts(got: list[dict], sensor_name: str) -> None:
    """Every received record is an alert as the syslog sinks frame it: daemon.warning from the
    sensor's name, its alert_id, rule and severity in the structured data."""
    for record in got:
        alert = json.loads(record["msg"])
        assert (record["pri"], record["protocol_version"], record["hostname"], record["app_name"],
                record["msgid"]) == ("28", "1", sensor_name, "dfs-sensor", "alert")   # daemon.warning
        assert record["structured_data"] == (f'[dfs-sensor@32473 alert_id="{alert["alert_id"]}" '
                                             f'rule="{alert["rule"]["id"]}" severity="{alert["rule"]["severity"]}"]')


def assert_unverified_collector_gets_nothing(target: str, tmp_path: Path) -> None:
    """Without the test CA (verification is on by default) nothing is sent; the alerts wait."""
    config = tmp_path / "c.toml"
    config.write_text(f'[outputs]\nspool_dir = "{tmp_path / "spool"}"\n')
    done = subprocess.run([DFS_SENSOR, "replay", "--db", str(tmp_path / "s.db"), "--config", str(config),
                           "--alerts", target, str(CAPTURES[0])], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr and "2 line(s) wait in the spool" in done.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
@pytest.mark.parametrize("scheme", ["tcp", "tls"])
def test_rsyslog_stopped_mid_stream_and_restarted_gets_every_alert(tmp_path, scheme, signum):
    """rsyslogd hangs while alerts stream to it, is stopped (SIGTERM) or killed (SIGKILL), and
    started again: every alert arrives at least once. A batch leaves the spool only once
    rsyslog's kernel acknowledged it, and what it acknowledged last is sent again when the
    connection ends (rsyslogd had not read it: its kernel discards it). Duplicates are the
    same records."""
    directory = tmp_path / "rsyslog"
    directory.mkdir()
    ports = configure_rsyslog(directory)
    proc = start_rsyslogd(directory, ports)
    messages: list[str] = []
    settings = SinkSettings(spool_dir=str(tmp_path / "spool"), ca_file=str(directory / "ca.pem"), sensor_name="s1")
    sink = open_sink(f"syslog+{scheme}://127.0.0.1:{ports[scheme]}", "alerts", settings, notify=messages.append)
    lines = [alert_line(n) for n in range(3000)]
    stream_through_an_rsyslogd_that_dies(sink, lines, directory, ports, scheme, proc, signum)
    assert sink.dropped == 0
    assert any("delivering again" in message for message in messages)


def stream_through_an_rsyslogd_that_dies(sink, lines: list[str], directory: Path, ports: dict[str, int],
                                         name: str, proc: subprocess.Popen, signum: int) -> int:
    """Write ``lines`` to ``sink`` as a stream while rsyslogd (``proc``, its log ``name``.log)
    hangs after 1000 (SIGSTOP: its kernel goes on taking bytes into the socket buffer), gets
    ``signum`` after 1100 (those 100 sit there unread) and is started again after 2000; once the
    spool drained, every line arrived and a duplicate is the same record. Returns how many
    records arrived twice."""
    log = directory / f"{name}.log"
    try:
        for n, line in enumerate(lines):
            sink.write(line)
            if n % 50 == 0:
                time.sleep(0.01)                      # a stream, not one burst
            if n == 1000:
                wait_for(lambda: len(received(log, 1)) > 0, "the first alerts at rsyslog")
                proc.send_signal(signal.SIGSTOP)
            if n == 1100:
                time.sleep(0.5)
                proc.send_signal(signum)              # stopped (it runs on to its end once woken) or killed
                proc.send_signal(signal.SIGCONT)
                proc.wait(timeout=10)
            if n == 2000:
                proc = start_rsyslogd(directory, ports)
        wait_for(lambda: sink.depth == 0 and sink.sent >= len(lines), "the spool to drain", seconds=60)
        sink.close()
        records = [json.loads(record["msg"]) for record in received(log, len(lines))]
    finally:
        stop(proc)
    by_id: dict[str, dict] = {}
    for record in records:                            # a duplicate is the same record, same id
        assert by_id.setdefault(record["alert_id"], record) == record
    assert set(by_id) == {json.loads(line)["alert_id"] for line in lines}
    return len(records) - len(by_id)


def test_a_forked_worker_sends_on_a_connection_of_its_own(rsyslog, tmp_path):
    """live --workers forks after the sinks are open (and connected, when a previous run
    left lines in the spool): two processes writing one TCP stream could interleave their
    frames, so a worker opens its own connection."""
    directory, ports = rsyslog
    log = directory / "tcp.log"
    before = len(received(log, 0))
    sink = open_sink(f"syslog+tcp://127.0.0.1:{ports['tcp']}", "alerts",
                     SinkSettings(spool_dir=str(tmp_path / "spool"), sensor_name="s1"))
    sink.write(alert_line(7000))
    wait_for(lambda: sink.sent == 1, "the parent's first record")
    parent_port = sink.transport._sock.getsockname()[1]
    child = os.fork()
    if child == 0:
        try:
            sink.write(alert_line(7001))
            wait_for(lambda: sink.depth == 0 and sink.sent == 2, "the worker's record")
            os._exit(0 if sink.transport._sock.getsockname()[1] != parent_port else 1)
        except BaseException:
            os._exit(1)
    assert os.waitpid(child, 0)[1] == 0
    sink.write(alert_line(7002))
    wait_for(lambda: sink.depth == 0 and sink.sent == 2, "the parent's second record")
    assert sink.transport._sock.getsockname()[1] == parent_port      # the parent's goes on
    sink.close()
    got = [json.loads(r["msg"])["n"] for r in received(log, before + 3)[before:]]
    assert sorted(got) == [7000, 7001, 7002]
