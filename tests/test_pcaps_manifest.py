"""pcaps/manifest.json against what tshark reads in the committed captures, so a wrong manifest fails."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PCAPS, load_manifest

MANIFEST = load_manifest()
COMMITTED_LIMIT = 10 * 1024 * 1024      # issue 2: committed captures stay under 10 MB
PFC_LAST_FRAG = 0x02
COERCION_OPNUMS = {12, 13, 14, 15, 20, 23, 24}
# tshark (4.0) netdfs fields per opnum -> manifest argument names it decodes
TSHARK_ARGS = {
    12: {"ServerName": "netdfs.dfs_AddStdRoot.servername", "RootShare": "netdfs.dfs_AddStdRoot.rootshare",
         "ApiFlags": "netdfs.dfs_AddStdRoot.flags"},
    13: {"ServerName": "netdfs.dfs_RemoveStdRoot.servername", "RootShare": "netdfs.dfs_RemoveStdRoot.rootshare",
         "ApiFlags": "netdfs.dfs_RemoveStdRoot.flags"},
    14: {"ServerName": "netdfs.dfs_ManagerInitialize.servername", "Flags": "netdfs.dfs_ManagerInitialize.flags"},
    15: {"ServerName": "netdfs.dfs_AddStdRootForced.servername",
         "RootShare": "netdfs.dfs_AddStdRootForced.rootshare"},
}
ARG_FIELDS = sorted({f for fields in TSHARK_ARGS.values() for f in fields.values()})
BASE_FIELDS = ["frame.number", "frame.time_epoch", "tcp.srcport", "dcerpc.pkt_type", "dcerpc.cn_flags",
               "dcerpc.opnum", "_ws.col.Protocol"]

pytestmark = pytest.mark.tshark


def tshark(pcap: Path, display_filter: str, fields: list[str]) -> list[dict[str, list[str]]]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    cmd = ["tshark", "-n", "-r", str(pcap), "-Y", display_filter, "-T", "fields", "-E", "separator=\t",
           "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [{f: (v.split("|") if v else []) for f, v in zip(fields, line.split("\t"))}
            for line in out.splitlines()]


def completed_requests(pcap: Path) -> dict[int, dict]:
    """frame -> the request PDU whose last fragment is in it (opnum, port, time, decoded args)."""
    found = {}
    for row in tshark(pcap, "dcerpc.pkt_type == 0", BASE_FIELDS + ARG_FIELDS):
        pdus = zip(row["dcerpc.pkt_type"], row["dcerpc.cn_flags"], row["dcerpc.opnum"])
        last = [int(o) for t, f, o in pdus if t == "0" and int(f, 16) & PFC_LAST_FRAG]
        if last:
            found[int(row["frame.number"][0])] = {
                "opnums": last, "ts": float(row["frame.time_epoch"][0]), "sport": int(row["tcp.srcport"][0]),
                "stub": row["_ws.col.Protocol"][0].lower(), "row": row}
    return found


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_calls_are_where_the_manifest_says(name):
    entry, pcap = MANIFEST[name], PCAPS / name
    wire = completed_requests(pcap)
    for call in entry["calls"]:
        if not call["decodable"] and not call["sealed"]:     # SMB3-encrypted: not visible to tshark
            continue
        seen = wire.get(call["frame"])
        assert seen is not None, f"{name}: no request completes in frame {call['frame']}"
        assert call["opnum"] in seen["opnums"]
        assert seen["sport"] == call["client_port"]
        assert seen["ts"] == pytest.approx(call["ts"], abs=1e-6)
        # Midstream: the bind is not in the capture, so tshark cannot name the interface.
        assert (seen["stub"] == "netdfs") == ("midstream" not in entry)
        if call["decodable"] and seen["stub"] == "netdfs" and call["opnum"] in TSHARK_ARGS:
            for arg, fld in TSHARK_ARGS[call["opnum"]].items():
                want = call["args"][arg]
                got = seen["row"][fld]
                assert got, f"{name} frame {call['frame']}: tshark did not decode {fld}"
                assert (int(got[0], 0) if isinstance(want, int) else got[0]) == want, fld
    attack_frames = {c["frame"] for c in entry["calls"]}
    stray = {f: w["opnums"] for f, w in wire.items()
             if f not in attack_frames and w["stub"] == "netdfs" and COERCION_OPNUMS & set(w["opnums"])}
    assert not stray, f"{name}: coercion requests not in the manifest: {stray}"


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_alert_flag_follows_the_calls(name):
    entry = MANIFEST[name]
    assert entry["should_alert"] == any(c["opnum"] in COERCION_OPNUMS for c in entry["calls"])


@pytest.mark.parametrize("name", sorted(n for n, e in MANIFEST.items() if not e["calls"]))
def test_benign_requests_match_tshark(name):
    wire = completed_requests(PCAPS / name)
    seen = sorted((f, o) for f, w in wire.items() for o in w["opnums"])
    listed = sorted((r["frame"], r["opnum"]) for r in MANIFEST[name]["observed_requests"])
    assert seen == listed and seen


@pytest.mark.parametrize("name", sorted(n for n, e in MANIFEST.items() if "back_auth" in e))
def test_back_authentication(name):
    entry = MANIFEST[name]
    assert entry["back_auth"], f"{name}: coerced-auth capture without a back-authentication"
    rows = tshark(PCAPS / name, "ntlmssp.messagetype == 3", ["frame.number", "ntlmssp.auth.username", "ip.src"])
    seen = {int(r["frame.number"][0]): (r["ntlmssp.auth.username"][0], r["ip.src"][0]) for r in rows}
    first_call = min(c["ts"] for c in entry["calls"])
    for auth in entry["back_auth"]:
        assert seen[auth["frame"]] == (auth["user"], auth["client_ip"]) == ("DC01$", entry["server_ip"])
        assert auth["ts"] > first_call


def test_agent_hostname_is_what_the_server_says():
    name = "dfscoerce-smb21.pcap"
    rows = tshark(PCAPS / name, "ntlmssp.messagetype == 2", ["ntlmssp.challenge.target_info.nb_computer_name"])
    assert {v for r in rows for v in r["ntlmssp.challenge.target_info.nb_computer_name"]} == {
        MANIFEST[name]["agent_hostname"]}


def test_vlan_capture_is_tagged():
    rows = tshark(PCAPS / "dfscoerce-vlan.pcap", "tcp", ["vlan.id"])
    assert rows and all(r["vlan.id"] == ["100"] for r in rows)


def test_every_capture_is_listed_and_small():
    on_disk = {p.name for p in PCAPS.glob("*.pcap")}
    assert on_disk == set(MANIFEST)
    assert sum((PCAPS / n).stat().st_size for n in on_disk) < COMMITTED_LIMIT
