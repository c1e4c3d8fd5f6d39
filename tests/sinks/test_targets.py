"""--alerts/--events targets: URL schemes, credentials kept off the command line, tokens
from a file or the environment, usage errors with exit 2; syslog over TCP reconnects after
the collector went away and loses nothing."""
from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sensor.outputs import JsonLinesSink
from sensor.sinks.http import HttpTransport
from sensor.sinks.relp import RelpTransport
from sensor.sinks.sender import SpooledSink
from sensor.sinks.syslog import SyslogTransport
from sensor.sinks.targets import TOKEN_ENV, SinkConfigError, SinkSettings, open_sink
from tests.sinks.test_http import alert_line, wait_for

ROOT = Path(__file__).resolve().parents[2]
DFS_SENSOR = str(ROOT / ".venv" / "bin" / "dfs-sensor")


def settings(tmp_path, **kw) -> SinkSettings:
    return SinkSettings(spool_dir=str(tmp_path / "spool"), sensor_name="s1", **kw)


def test_schemes_pick_the_sink(tmp_path):
    assert isinstance(open_sink(str(tmp_path / "a.jsonl"), "alerts", settings(tmp_path)), JsonLinesSink)
    for target, kind in [("syslog+udp://127.0.0.1:514", SyslogTransport), ("syslog+tls://127.0.0.1:6514", SyslogTransport),
                         ("https://127.0.0.1/x", HttpTransport), ("splunk+https://127.0.0.1:8088", HttpTransport),
                         ("elastic+http://127.0.0.1:9200/idx", HttpTransport), ("relp://127.0.0.1:2514", RelpTransport),
                         ("relp+tls://127.0.0.1:6514", RelpTransport)]:
        sink = open_sink(target, "alerts", settings(tmp_path))
        assert isinstance(sink, SpooledSink) and isinstance(sink.transport, kind)
        sink.close()
    splunk = open_sink("splunk+https://127.0.0.1:8088", "alerts", settings(tmp_path)).transport
    assert splunk.url == "https://127.0.0.1:8088/services/collector/event"
    elastic = open_sink("elastic+http://127.0.0.1:9200/idx", "events", settings(tmp_path)).transport
    assert (elastic.url, elastic.index) == ("http://127.0.0.1:9200/_bulk", "idx")


@pytest.mark.parametrize("target, message", [
    ("https://user:secret@127.0.0.1/x", "no credentials in the URL"),
    ("syslog+udp://127.0.0.1", "give the port"),
    ("gopher://127.0.0.1/", "unknown output scheme"),
    ("syslog+tcp://127.0.0.1:99999", "bad port"),
    ("relp://", "no host"),
    ("relp://127.0.0.1", "give the port"),
    ("relp://127.0.0.1:99999", "bad port"),
    ("relp+tls://127.0.0.1:port", "bad port"),
])
def test_bad_targets_are_usage_errors(tmp_path, target, message):
    with pytest.raises(SinkConfigError, match=message):
        open_sink(target, "alerts", settings(tmp_path))
    done = subprocess.run([DFS_SENSOR, "replay", "--db", str(tmp_path / "s.db"), "--alerts", target,
                           str(ROOT / "pcaps" / "dfscoerce-smb21.pcap")], capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr and "secret" not in done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stdout == ""


def test_token_from_a_file_else_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert open_sink("https://127.0.0.1/x", "alerts", settings(tmp_path)).transport.token == "from-env"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    chosen = open_sink("https://127.0.0.1/x", "alerts", settings(tmp_path, token_file=str(token_file)))
    assert chosen.transport.token == "from-file"
    with pytest.raises(SinkConfigError, match="No such file"):
        open_sink("https://127.0.0.1/x", "alerts", settings(tmp_path, token_file=str(tmp_path / "none")))


class OctetCountingServer:
    """A syslog TCP collector reading RFC 6587 octet-counted frames; ``drop()`` closes the
    current connection as a restarting collector would."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.messages: list[bytes] = []
        self.conn = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conn = conn
            buffer = b""
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                buffer += data
                while b" " in buffer:
                    length, rest = buffer.split(b" ", 1)
                    if len(rest) < int(length):
                        break
                    self.messages.append(rest[:int(length)])
                    buffer = rest[int(length):]

    def drop(self) -> None:
        self.conn.shutdown(socket.SHUT_RDWR)
        self.conn.close()


def test_syslog_tcp_reconnects_after_the_collector_closed_the_connection(tmp_path):
    server = OctetCountingServer()
    target = f"syslog+tcp://127.0.0.1:{server.port}"
    sink = open_sink(target, "alerts", settings(tmp_path))
    lines = [alert_line(n) for n in range(10, 30)]
    for line in lines[:10]:
        sink.write(line)
    wait_for(lambda: len(server.messages) == 10, "the first ten messages")
    server.drop()
    time.sleep(0.2)
    for line in lines[10:]:
        sink.write(line)
    wait_for(lambda: len(server.messages) >= 20, "the rest after a reconnect")
    sink.close()
    got = [json.loads(m.split(b"] ", 1)[1]) for m in server.messages]
    assert [g["alert_id"] for g in got] == [json.loads(line)["alert_id"] for line in lines]
    assert all(m.startswith(b"<28>1 ") for m in server.messages)
