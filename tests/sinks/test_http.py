"""HTTP sinks against a local collector in a subprocess: killed in the middle of a run and
restarted, every alert arrives and duplicates carry the same alert_id; the Splunk HEC and
Elasticsearch _bulk request shapes; a full spool drops the oldest and counts them."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import stored_alert_lines
from tests.schema_check import check
from sensor.alerts import AlertEnvelope, Flow, RuleMeta
from sensor.sinks.http import HttpTransport
from sensor.sinks.sender import SEND_SLACK_SECONDS, SpooledSink
from sensor.sinks.spool import Spool

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DFS_SENSOR = str(ROOT / ".venv" / "bin" / "dfs-sensor")
CAPTURE = ROOT / "pcaps" / "coerced-auth-clear.pcap"
RULE = RuleMeta("test-rule", "Test", 1, "low", None)


# A flush bound far above what a run takes: a run that ends sooner did not wait it out.
LONG_FLUSH = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CollectorProcess:
    def __init__(self, tmp: Path, kind: str = "plain", tls: tuple[Path, Path] | None = None):
        self.port = free_port()
        self.out = tmp / "received.jsonl"
        self.kind = kind
        self.tls = tls
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "collector.py"), str(self.port),
                                      str(self.out), self.kind, *map(str, self.tls or ())])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("collector did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def requests(self) -> list[dict]:
        return [json.loads(line) for line in self.out.read_text().splitlines()] if self.out.exists() else []

    def lines(self) -> list[str]:
        return [line for r in self.requests() for line in r["body"].splitlines()]


@pytest.fixture
def collector(tmp_path):
    c = CollectorProcess(tmp_path)
    yield c
    if c.proc and c.proc.poll() is None:
        c.kill()


def alert_line(n: int) -> str:
    return AlertEnvelope(RULE, 1764300000 + n, ["key", n], "2025-11-28",
                         (Flow("10.0.0.5", 40000 + n, "10.0.0.10", 445),), "s1", {"n": n}).to_json()


def wait_for(predicate, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_collector_killed_mid_run_and_restarted_loses_nothing(tmp_path, collector):
    collector.start()
    url = f"http://127.0.0.1:{collector.port}/ingest"
    sink = SpooledSink(url, HttpTransport(url, "lines", "alerts", "s1", None, None),
                       str(tmp_path / "spool.db"), 1 << 20)
    sent = [alert_line(n) for n in range(300)]
    for line in sent[:100]:
        sink.write(line)
    wait_for(lambda: len(collector.lines()) >= 100, "the first 100 alerts")
    collector.kill()                                   # down in the middle of the run
    for line in sent[100:250]:
        sink.write(line)                               # never blocks, never raises
    wait_for(lambda: sink.depth >= 100, "alerts waiting in the spool")
    collector.start()                                  # back: the spool drains
    for line in sent[250:]:
        sink.write(line)
    wait_for(lambda: sink.depth == 0 and sink.sent >= 300, "the spool to drain")
    sink.close()
    received = collector.lines()
    ids = [json.loads(line)["alert_id"] for line in received]
    assert set(ids) == {json.loads(line)["alert_id"] for line in sent}      # every alert arrived
    by_id = {}
    for line in received:                              # a duplicate is the same record, same id
        assert by_id.setdefault(json.loads(line)["alert_id"], line) == line
    assert sink.dropped == 0


def test_replay_delivers_to_a_collector_and_a_later_run_flushes_what_waited(tmp_path, collector):
    url = f"http://127.0.0.1:{collector.port}/x"
    db = tmp_path / "s.db"
    config = tmp_path / "c.toml"
    config.write_text(f'[outputs]\nspool_dir = "{tmp_path / "spool"}"\nspool_flush_seconds = {LONG_FLUSH}\n')
    started = time.monotonic()
    down = subprocess.run([DFS_SENSOR, "replay", "--db", str(db), "--config", str(config), "--alerts", url,
                           str(CAPTURE)], capture_output=True, text=True, timeout=120)
    # A refused connection at exit ends the wait at once: not the flush bound (the replay
    # itself takes about a second).
    assert time.monotonic() - started < LONG_FLUSH
    assert down.returncode == 0
    assert "Connection refused" in down.stderr and "2 line(s) wait in the spool" in down.stderr
    collector.start()
    again = subprocess.run([DFS_SENSOR, "replay", "--db", str(db), "--config", str(config), "--alerts", url,
                            str(CAPTURE)], capture_output=True, text=True, timeout=120, check=True)
    assert "wait in the spool" not in again.stderr
    received = [check("alert", line) for line in collector.lines()]
    listed = stored_alert_lines(db)
    assert sorted(json.dumps(r, sort_keys=True) for r in received) == \
        sorted(json.dumps(json.loads(line), sort_keys=True) for line in listed)


def test_splunk_hec_shape_and_token_from_the_environment(tmp_path, collector, monkeypatch):
    collector.start()
    transport = HttpTransport(f"http://127.0.0.1:{collector.port}", "splunk", "alerts", "s1", "t0ken", None)
    transport.send([alert_line(1), alert_line(2)])
    [request] = collector.requests()
    assert request["path"] == "/services/collector/event" and request["authorization"] == "Splunk t0ken"
    decoder, body, objects = json.JSONDecoder(), request["body"], []
    while body:
        obj, end = decoder.raw_decode(body)
        objects.append(obj)
        body = body[end:].lstrip()
    assert [(o["host"], o["sourcetype"], o["event"]["n"]) for o in objects] == \
        [("s1", "dfs-sensor:alert", 1), ("s1", "dfs-sensor:alert", 2)]
    assert objects[0]["time"] == 1764300001.0


def test_elasticsearch_bulk_shape_uses_alert_id_as_document_id(tmp_path):
    collector = CollectorProcess(tmp_path, "elastic")
    collector.start()
    try:
        transport = HttpTransport(f"http://127.0.0.1:{collector.port}/dfs-alerts", "elastic", "alerts", "s1",
                                  "k3y", None)
        lines = [alert_line(1), alert_line(2)]
        transport.send(lines)
    finally:
        collector.kill()
    [request] = collector.requests()
    assert request["path"] == "/_bulk" and request["authorization"] == "ApiKey k3y"
    assert request["content_type"] == "application/x-ndjson"
    body = request["body"].splitlines()
    assert [json.loads(a)["create"] for a in body[::2]] == \
        [{"_id": json.loads(line)["alert_id"], "_index": "dfs-alerts"} for line in lines]
    assert body[1::2] == lines


def test_a_full_spool_drops_the_oldest_and_counts_them(tmp_path):
    lines = [alert_line(n) for n in range(10, 60)]     # all of one length
    size = len(lines[0].encode())
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=size * 10)
    assert spool.push(lines[:30]) == 20
    assert spool.push(lines[30:]) == 20
    assert [line for _, line in spool.peek(100)] == lines[40:]          # the newest ten stay
    assert (spool.dropped, spool.depth()) == (40, 10)
    spool.close()


def test_a_sink_whose_collector_is_down_drops_the_oldest_beyond_its_spool(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/"           # nobody listens
    messages = []
    lines = [alert_line(n) for n in range(10, 50)]     # all of one length
    sink = SpooledSink(url, HttpTransport(url, "lines", "alerts", "s1", None, None),
                       str(tmp_path / "spool.db"), len(lines[0].encode()) * 10, messages.append,
                       flush_seconds=0.5)
    for line in lines:
        sink.write(line)
    wait_for(lambda: sink.depth == 10 and sink.dropped == 30, "the spool to fill")
    sink.close()
    assert sink.lost == 30
    assert "Connection refused" in messages[0] and "10 line(s) wait in the spool" in messages[-1]
    spool = Spool(str(tmp_path / "spool.db"))
    assert [line for _, line in spool.peek(100)] == lines[30:]          # kept for the next run
    spool.close()


def test_a_collector_that_hangs_never_holds_lines_back_from_the_spool(tmp_path, monkeypatch):
    """A collector that accepts and never answers: the sender waits on it, while every write
    returns at once and every line still reaches the on-disk spool."""
    from sensor.sinks import http
    monkeypatch.setattr(http, "TIMEOUT_SECONDS", 2.0)
    silent = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
    sink = SpooledSink(url, HttpTransport(url, "lines", "alerts", "s1", None, None),
                       str(tmp_path / "spool.db"), 1 << 20, flush_seconds=0.5)
    sink.write(alert_line(0))
    wait_for(lambda: sink.depth == 1, "the first line in the spool")     # the sender is now stuck
    lines = [alert_line(n) for n in range(1, 200)]
    for line in lines:
        sink.write(line)
    assert sink.lines == 200
    def on_disk() -> int:
        spool = Spool(str(tmp_path / "spool.db"))
        try:
            return spool.depth()
        finally:
            spool.close()
    wait_for(lambda: on_disk() == 200, "every line on disk", seconds=5)
    assert sink.sent == 0
    sink.close()
    silent.close()


def test_closing_on_a_collector_that_hangs_is_bounded_and_keeps_the_lines(tmp_path, collector):
    """A collector that accepts and never answers (HTTP timeout 10 s): close() returns at the
    flush bound, and the lines wait in the spool for the next run, which delivers them."""
    silent = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
    messages = []
    sink = SpooledSink(url, HttpTransport(url, "lines", "alerts", "s1", None, None),
                       str(tmp_path / "spool.db"), 1 << 20, messages.append, flush_seconds=1.0)
    lines = [alert_line(n) for n in range(20)]
    for line in lines:
        sink.write(line)
    wait_for(lambda: sink.depth == 20, "the lines in the spool")
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 1.0 + SEND_SLACK_SECONDS + 1.0
    assert "did not answer within 1 s" in messages[-1]
    silent.close()
    collector.start()
    url = f"http://127.0.0.1:{collector.port}/"
    sink = SpooledSink(url, HttpTransport(url, "lines", "alerts", "s1", None, None),
                       str(tmp_path / "spool.db"), 1 << 20)
    wait_for(lambda: sink.depth == 0 and sink.sent == 20, "the next run to deliver them")
    sink.close()
    assert sorted(collector.lines()) == sorted(lines)


def test_https_verifies_the_collector_certificate(tmp_path):
    from sensor.sinks.sender import SinkUnavailable
    from sensor.sinks.targets import SinkSettings, open_sink
    from tests.sinks.test_syslog import make_ca

    make_ca(tmp_path)
    collector = CollectorProcess(tmp_path, tls=(tmp_path / "server.pem", tmp_path / "server.key"))
    collector.start()
    url = f"https://127.0.0.1:{collector.port}/in"
    try:
        def transport(**settings):
            return open_sink(url, "alerts", SinkSettings(spool_dir=str(tmp_path / "spool"), **settings)).transport
        with pytest.raises(SinkUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            transport().send([alert_line(1)])                       # verification is on by default
        transport(ca_file=str(tmp_path / "ca.pem")).send([alert_line(2)])
        transport(tls_verify=False).send([alert_line(3)])           # the operator's explicit choice
    finally:
        collector.kill()
    assert [json.loads(line)["n"] for line in collector.lines()] == [2, 3]
