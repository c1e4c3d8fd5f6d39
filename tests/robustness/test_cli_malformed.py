"""Malformed files and user input through the real ``dfs-sensor replay`` subprocess: a one-line
error naming the problem, a non-zero exit, no traceback; partly readable files are processed
and the damage reported."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PCAPS

SENSOR = Path(sys.executable).parent / "dfs-sensor"
ATTACK = PCAPS / "dfscoerce-smb21.pcap"
_PCAP_RECORD = struct.Struct("<IIII")   # ts_sec, ts_usec, incl_len, orig_len (pcap file format)


def replay(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    db = ["--db", str(tmp_path / "s.db")] if "--db" not in args else []
    return subprocess.run([str(SENSOR), "replay", *db, *args], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)


def alerts(proc) -> list[tuple]:
    """What each alert says about the attack (not which file it came from)."""
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return [(a["rule"]["id"], a["action_rpc_func_opnum"], a["actor_remote_ip"], a["dfs_relay_server"], a["event_ids"])
            for a in rows]


def assert_clean_error(proc, *words: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def records(path: Path):
    raw = path.read_bytes()
    pos, out = 24, []
    while pos < len(raw):
        ts, us, incl, orig = _PCAP_RECORD.unpack_from(raw, pos)
        out.append((ts, us, orig, raw[pos + 16:pos + 16 + incl]))
        pos += 16 + incl
    return raw[:24], out


@pytest.fixture(scope="module")
def clean_alerts(tmp_path_factory):
    proc = replay(tmp_path_factory.mktemp("clean"), str(ATTACK))
    assert proc.returncode == 0 and alerts(proc)
    return alerts(proc)


@pytest.mark.parametrize("name,content,words", [
    ("zero.pcap", b"", ["zero.pcap", "empty"]),
    ("magic.pcap", b"GARBAGE!" * 8, ["magic.pcap", "not a pcap"]),
])
def test_unreadable_files(tmp_path, name, content, words):
    (tmp_path / name).write_bytes(content)
    assert_clean_error(replay(tmp_path, name), *words)


def test_directory_and_missing_file(tmp_path):
    (tmp_path / "adir").mkdir()
    assert_clean_error(replay(tmp_path, "adir"), "adir", "directory")
    assert_clean_error(replay(tmp_path, "missing.pcap"), "missing.pcap", "no such file")


def test_unwritable_and_corrupt_database(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert_clean_error(replay(tmp_path, "--db", str(tmp_path / "afile" / "s.db"), str(ATTACK)), "afile")
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not SQLite, just text " * 40)
    assert_clean_error(replay(tmp_path, "--db", str(corrupt), str(ATTACK)), "corrupt.db", "database")


def test_truncated_pcap_processes_the_good_part_and_reports_damage(tmp_path, clean_alerts):
    header, recs = records(ATTACK)
    whole = header + b"".join(_PCAP_RECORD.pack(ts, us, len(d), orig) + d for ts, us, orig, d in recs)
    (tmp_path / "cut.pcap").write_bytes(whole[:-7])   # the last record loses its tail
    proc = replay(tmp_path, "cut.pcap")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "capture_truncated" in proc.stderr
    assert alerts(proc) == clean_alerts


def test_snaplen_truncated_packets(tmp_path):
    header, recs = records(ATTACK)
    snap = 96
    body = b"".join(_PCAP_RECORD.pack(ts, us, min(len(d), snap), orig) + d[:snap] for ts, us, orig, d in recs)
    (tmp_path / "snap.pcap").write_bytes(header[:16] + struct.pack("<I", snap) + header[20:] + body)
    proc = replay(tmp_path, "snap.pcap")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert alerts(proc) == []    # the calls were cut away, and no garbage event takes their place


def test_pcapng_with_an_unknown_block_is_read_around_it(tmp_path, clean_alerts):
    ng = tmp_path / "x.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(ATTACK), str(ng)], check=True)
    raw = ng.read_bytes()
    shb_len = struct.unpack_from("<I", raw, 4)[0]
    # pcapng 3.1: type, total length, body (padded to 32 bits), total length again
    unknown = struct.pack("<II", 0x0BADB10C, 16) + b"\x01\x02\x03\x04" + struct.pack("<I", 16)
    (tmp_path / "u.pcapng").write_bytes(raw[:shb_len] + unknown + raw[shb_len:])
    proc = replay(tmp_path, "u.pcapng")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert alerts(proc) == clean_alerts
