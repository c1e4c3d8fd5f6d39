"""dfs-sensor replay end to end on the lab's coercion captures: alert lines, the store's
dedupe on rerun, nothing on benign traffic, `dfs-sensor alerts` listing both kinds."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sensor.coercion.events import CONFIRMED, ENCRYPTED_NETDFS, PROBABLE

ROOT = Path(__file__).resolve().parents[2]
PCAPS = ROOT / "pcaps"
DFS_SENSOR = str(ROOT / ".venv" / "bin" / "dfs-sensor")
COERCION_RULES = (CONFIRMED, PROBABLE, ENCRYPTED_NETDFS)


def replay(db: Path, *names: str, config: Path | None = None) -> tuple[list[dict], str]:
    cmd = [DFS_SENSOR, "replay", "--db", str(db)] + (["--config", str(config)] if config else [])
    done = subprocess.run(cmd + [str(PCAPS / n) for n in names], capture_output=True, text=True,
                          check=True)
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def coercion(alerts: list[dict]) -> list[tuple]:
    return sorted((a["rule"]["id"], a["victim_ip"], a["listener_ip"], a["client_ip"])
                  for a in alerts if a["rule"]["id"] in COERCION_RULES)


def test_clear_back_authentication_is_confirmed_once_and_listed(tmp_path):
    db = tmp_path / "s.db"
    alerts, summary = replay(db, "coerced-auth-clear.pcap")
    assert coercion(alerts) == [(CONFIRMED, "10.0.0.10", "10.0.0.66", "10.0.0.66")]
    [confirmed] = [a for a in alerts if a["rule"]["id"] == CONFIRMED]
    [rpc] = [a for a in alerts if a["rule"]["id"] not in COERCION_RULES]
    assert confirmed["call_event_ids"] == rpc["event_ids"]       # linked to the DFSCoerce call
    assert f"{CONFIRMED} 1" in summary
    again, summary = replay(db, "coerced-auth-clear.pcap")
    assert again == [] and "0 alert(s)" in summary
    listed = subprocess.run([DFS_SENSOR, "alerts", "--db", str(db), "--format", "json"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert sorted(json.loads(line)["rule"]["id"] for line in listed) == sorted([CONFIRMED, rpc["rule"]["id"]])
    only = subprocess.run([DFS_SENSOR, "alerts", "--db", str(db), "--rule", CONFIRMED],
                          capture_output=True, text=True, check=True).stdout
    assert CONFIRMED in only and rpc["rule"]["id"] not in only and "10.0.0.66" in only


@pytest.mark.parametrize("name", ["coerced-auth-encrypted.pcap", "dfscoerce-smb3-encrypted.pcap"])
def test_encrypted_captures_raise_probable_alerts(tmp_path, name):
    alerts, _ = replay(tmp_path / "s.db", name)
    rules = {a[0] for a in coercion(alerts)}
    assert ENCRYPTED_NETDFS in rules
    assert all(a[1] == "10.0.0.10" and a[3] == "10.0.0.66" for a in coercion(alerts))
    if name == "coerced-auth-encrypted.pcap":       # the one with the DC's back-authentication
        assert (PROBABLE, "10.0.0.10", "10.0.0.66", "10.0.0.66") in coercion(alerts)


@pytest.mark.parametrize("name", ["benign-rpcclient-dfs.pcap", "benign-smb-filecopy.pcap",
                                  "dfscoerce-smb311-clear.pcap"])
def test_benign_captures_and_calls_without_back_authentication_raise_no_coercion(tmp_path, name):
    alerts, _ = replay(tmp_path / "s.db", name)
    assert [a for a in alerts if a["rule"]["id"] in (CONFIRMED, PROBABLE)] == []


def test_http_back_authentication_is_confirmed_and_linked(tmp_path):
    """A clear opnum 13 naming a WebDAV listener (10.0.0.66@8080/x), then curl in the DC
    authenticating as DC01$ with HTTP NTLM (PROPFIND) to that port."""
    alerts, _ = replay(tmp_path / "s.db", "coerced-auth-http.pcap")
    assert coercion(alerts) == [(CONFIRMED, "10.0.0.10", "10.0.0.66", "10.0.0.66")]
    [confirmed] = [a for a in alerts if a["rule"]["id"] == CONFIRMED]
    [rpc] = [a for a in alerts if a["rule"]["id"] not in COERCION_RULES]
    assert confirmed["call_event_ids"] == rpc["event_ids"]
    assert (confirmed["protocol"], confirmed["user"], confirmed["domain"]) == ("http", "DC01$", "LAB")


@pytest.mark.parametrize("name", ["benign-encrypted-smbclient.pcap", "benign-encrypted-rpc.pcap",
                                  "benign-machine-auth.pcap"])
def test_benign_encrypted_and_machine_account_captures_raise_nothing(tmp_path, name):
    """Encrypted file transfer and RPC on six-letter pipes (lsarpc, srvsvc) by Samba and impacket;
    SRV01$ logging on to its file server with no inbound session to it before."""
    alerts, summary = replay(tmp_path / "s.db", name)
    assert alerts == [] and "0 alert(s)" in summary


def test_disabled_in_config_raises_no_coercion_alert(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[coercion]\nenabled = false\n")
    alerts, _ = replay(tmp_path / "s.db", "coerced-auth-clear.pcap", config=config)
    assert coercion(alerts) == [] and alerts          # the DFSCoerce rule still alerts
