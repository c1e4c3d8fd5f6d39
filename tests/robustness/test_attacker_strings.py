"""Attacker-controlled strings (ServerName, RootShare) with terminal escapes, CR/LF, bidi
overrides, invalid UTF-16 and megabyte lengths: bounded, escaped in JSON and in the table
view of the real CLI, never interpreted."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

from sensor.dcerpc.events import RpcCall
from sensor.event_builder import decode_arguments
from sensor.interfaces.catalog import default_catalog
from sensor.interfaces.decode import MAX_STRING_CHARS
from tests.conftest import PCAPS

SENSOR = [sys.executable.replace("python", "dfs-sensor")]
NETDFS = "4fc742e0-4a10-11cf-8273-00aa004ae673"
# Same UTF-16 length as what they replace in the capture, so every length field stays right.
EVIL_SERVER = "\x1b[2J\x07\n\u202eB\r"            # for "10.0.0.66": clear screen, bell, LF, RTL override, CR
EVIL_SHARE = b"s\x00\x00\xd8a\x00r\x00e\x00"      # "share" with a lone high surrogate


# Characters JSON allows raw that viewers and SIEM consoles render: RTL override, C1 CSI, DEL,
# line and paragraph separators, zero-width joiner, a language tag (outside the BMP); and a
# printable accent, which stays readable.
RENDERED_SERVER = "\u202e\x9b\x7f\u2028\u2029\u200d\U000e0041\xe9"


def evil_capture(tmp_path, server_name: str = EVIL_SERVER):
    raw = (PCAPS / "dfscoerce-smb21.pcap").read_bytes()
    server, share = "10.0.0.66".encode("utf-16-le"), "share".encode("utf-16-le")
    assert raw.count(server) == 2 and raw.count(share) >= 2
    evil = server_name.encode("utf-16-le")
    assert len(evil) == len(server)
    path = tmp_path / "evil.pcap"
    path.write_bytes(raw.replace(server, evil).replace(share, EVIL_SHARE))
    return path


def run(*args, cwd):
    proc = subprocess.run([*SENSOR, *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def test_json_and_table_outputs_escape_what_the_attacker_sent(tmp_path):
    capture = evil_capture(tmp_path)
    alerts = run("replay", "--db", "s.db", "--events", "ev.jsonl", str(capture), cwd=tmp_path)
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert len(events) == 2
    for ev in events:
        fields = json.loads(ev["action_rpc_func_str_call_fields"])
        assert fields["ServerName"] == EVIL_SERVER                     # kept as sent, for the analyst
        assert fields["RootShare"] == "s\ufffdare"                      # invalid UTF-16 replaced
    for line in alerts.splitlines():
        assert not any(ord(c) < 0x20 for c in line)                    # JSON escapes every control
        assert json.loads(line)["dfs_relay_server"] == EVIL_SERVER
    table = run("alerts", "--db", "s.db", cwd=tmp_path)
    rows = table.splitlines()
    assert len(rows) == 3                                              # header + 2 alerts: no injected line breaks
    assert all(c.isprintable() for row in rows for c in row)
    assert "\\x1b[2J\\x07\\n\\u202eB\\r" in rows[1]


def test_every_json_output_escapes_rendered_characters(tmp_path):
    """Issue 18 item 11: replay stdout (alerts), --events, and `events`/`alerts --format json`
    carried U+202E, U+009B, DEL and U+2028 raw. Now each is a \\u escape and json.loads gives
    the exact string back."""
    capture = evil_capture(tmp_path, RENDERED_SERVER)
    outputs = {"replay stdout": run("replay", "--db", "s.db", "--events", "ev.jsonl", str(capture), cwd=tmp_path)}
    outputs["--events"] = (tmp_path / "ev.jsonl").read_text(encoding="utf-8")
    outputs["events --format json"] = run("events", "--db", "s.db", "--format", "json", cwd=tmp_path)
    outputs["alerts --format json"] = run("alerts", "--db", "s.db", "--format", "json", cwd=tmp_path)
    for name, text in outputs.items():
        lines = text.splitlines()
        assert len(lines) == 2, name                                   # two calls, two alerts
        for line in lines:
            assert line.isprintable(), (name, line)
            assert "\\u202e\\u009b\\u007f\\u2028\\u2029\\u200d\\udb40\\udc41\xe9" in line, (name, line)
            record = json.loads(line)
            server = record.get("dfs_relay_server") or json.loads(record["action_rpc_func_str_call_fields"])["ServerName"]
            assert server == RENDERED_SERVER, name


def _wstr(text: str) -> bytes:
    """A [string] wchar_t* conformant varying array (MS-RPCE 2.2.5.2.x / C706 14.3.4), padded to 4."""
    data = (text + "\x00").encode("utf-16-le", "surrogatepass")
    n = len(data) // 2
    body = struct.pack("<III", n, 0, n) + data
    return body + b"\x00" * (-len(body) % 4)


def test_megabyte_strings_are_cut_to_the_bound():
    op = default_catalog().interface(NETDFS).operation(12)   # NetrDfsAddStdRoot
    stub = _wstr("A" * (1 << 20)) + _wstr("B" * (1 << 20)) + _wstr("") + struct.pack("<I", 0)
    strings, ints, error = decode_arguments(op, RpcCall(0.0, 0, 1, 0, 12, NETDFS, (3, 0), stub, True, None, None, False))
    assert error == "" and ints == {"ApiFlags": "0"}
    assert strings["ServerName"] == "A" * MAX_STRING_CHARS and strings["RootShare"] == "B" * MAX_STRING_CHARS
