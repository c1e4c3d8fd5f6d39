"""The allow-list: hosts, pairs and listeners (addresses, CIDR, names), reasons and expiry,
applied to every rule; suppressed alerts are stored and counted, never written."""
from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sensor.suppress import AllowList, AllowListError, load

ROOT = Path(__file__).resolve().parents[1]
DFS_SENSOR = str(ROOT / ".venv" / "bin" / "dfs-sensor")
CAPTURE = ROOT / "pcaps" / "coerced-auth-clear.pcap"
NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)
RARE = {"rule": {"id": "dfscoerce-rare-dfsnm-root-call"}, "src_ip": "10.0.0.66", "dest_ip": "10.0.0.10",
        "agent_hostname": "DC01", "actor_remote_ip": "10.0.0.66", "dfs_relay_server": "10.0.0.66"}
COERCED = {"rule": {"id": "coercion-confirmed"}, "src_ip": "10.0.0.5", "dest_ip": "10.0.0.10",
           "victim_ip": "10.0.0.10", "victim_name": "DC01", "listener_ip": "10.0.0.30",
           "listener_name": "backup01.corp.example", "client_ip": "10.0.0.5"}


def allow(tmp_path, text: str) -> AllowList:
    path = tmp_path / "allow.toml"
    path.write_text(text)
    return AllowList(str(path))


def test_hosts_pairs_and_listeners(tmp_path):
    host = allow(tmp_path, '[[allow]]\nhost = "dc01"\nreason = "lab DC"\n')
    assert host.match(RARE, NOW).reason == "lab DC" and host.match(COERCED, NOW) is not None
    pair = allow(tmp_path, '[[allow]]\nclient = "10.0.0.0/28"\nserver = "DC01"\nreason = "admins"\n')
    assert pair.match(COERCED, NOW) is not None and pair.match(RARE, NOW) is None     # 10.0.0.66 is outside
    listener = allow(tmp_path, '[[allow]]\nlistener = "backup01"\nreason = "backups"\n')
    assert listener.match(COERCED, NOW) is not None and listener.match(RARE, NOW) is None
    ipv6 = allow(tmp_path, '[[allow]]\nhost = "::ffff:10.0.0.66"\nreason = "mapped"\n')
    assert ipv6.match(RARE, NOW) is not None


def test_an_expired_entry_no_longer_suppresses(tmp_path):
    entries = allow(tmp_path, '[[allow]]\nhost = "DC01"\nreason = "until the migration"\nexpires = 2026-11-29\n')
    assert entries.match(RARE, datetime(2026, 11, 29, 23, 59, tzinfo=timezone.utc)) is not None
    assert entries.match(RARE, NOW) is None


@pytest.mark.parametrize("text, message", [
    ('[[allow]]\nhost = "DC01"\n', "needs a reason"),
    ('[[allow]]\nreason = "x"\n', "give host"),
    ('[[allow]]\nhost = "a b"\nreason = "x"\n', "not an address"),
    ('[[allow]]\nhost = "x"\nclient = "y"\nreason = "x"\n', "any role"),
    ('[[allow]]\nhots = "x"\nreason = "x"\n', "unknown key 'hots'"),
    ('[[allow]]\nhost = "x"\nreason = "x"\nexpires = "soon"\n', "expires must be"),
    ('[suppress]\n', "unknown section"),
])
def test_bad_files_are_one_line_naming_the_entry(tmp_path, text, message):
    path = tmp_path / "allow.toml"
    path.write_text(text)
    with pytest.raises(AllowListError, match=message):
        load(str(path))
    done = subprocess.run([DFS_SENSOR, "replay", "--db", str(tmp_path / "s.db"), "--allowlist", str(path),
                           str(CAPTURE)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith(f"dfs-sensor: error: {path}:")
    assert len(done.stderr.splitlines()) == 1


def test_reload_keeps_the_old_list_when_the_new_file_is_broken(tmp_path):
    entries = allow(tmp_path, '[[allow]]\nhost = "DC01"\nreason = "r"\n')
    (tmp_path / "allow.toml").write_text("[[allow]\n")
    assert "stays in force" in entries.reload() and len(entries.entries) == 1


def test_suppressed_alerts_are_stored_counted_and_not_written(tmp_path):
    path = tmp_path / "allow.toml"
    path.write_text('[[allow]]\nlistener = "10.0.0.66"\nreason = "the lab listener"\n')
    db = tmp_path / "s.db"
    done = subprocess.run([DFS_SENSOR, "replay", "--db", str(db), "--allowlist", str(path), str(CAPTURE)],
                          capture_output=True, text=True, check=True)
    assert done.stdout == "" and "suppressed by the allow-list: 2" in done.stderr
    listed = subprocess.run([DFS_SENSOR, "alerts", "--db", str(db), "--format", "json"],
                            capture_output=True, text=True, check=True).stdout
    assert listed == ""
    held = [json.loads(line) for line in subprocess.run(
        [DFS_SENSOR, "alerts", "--db", str(db), "--suppressed", "--format", "json"],
        capture_output=True, text=True, check=True).stdout.splitlines()]
    assert sorted(a["rule"]["id"] for a in held) == ["coercion-confirmed", "dfscoerce-rare-dfsnm-root-call"]
    assert {a["suppressed_by"] for a in held} == {"the lab listener"}
