"""Binds whose answer was not captured (issue 18 item 13). A capture that holds only the
client's side, or starts after the pipe was opened so that nothing names it, still shows the
bind: tshark reports it, and the sensor used its proposal to name the calls but reported no
bind, because a bind was reported only at its ack. Now the bind is reported once, before the
first call on its context (``RpcBind.acknowledged`` False), by both engines.

Oracles: tshark's own dissection of a real Windows capture from the public corpus (suricata-
verify bug-8629: svcctl binds and calls in SMB2 WRITEs, the server's answers not captured),
and of the lab's impacket DFSCoerce capture cut to its client side."""
from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from sensor.capture.pcapfile import open_capture
from sensor.dcerpc.events import RpcBind, RpcCall
from sensor.pipeline import Pipeline, PipelineSettings
from tests.conftest import requires_tshark
from tests.robustness.test_cli_malformed import ATTACK, _PCAP_RECORD, records, replay

WINDOWS_ONE_SIDED = ["suricata-verify/tests/bug-8629-async-oneside/input.pcap",   # client frames only
                     "suricata-verify/tests/bug-8629/input.pcap"]                  # server sends only ACKs
NETDFS = "4fc742e0-4a10-11cf-8273-00aa004ae673"


def native(path: Path) -> tuple[Counter, list[RpcBind]]:
    """What the native pipeline saw per pipe: ("bind", uuid) and ("call", uuid, opnum), pipes
    numbered by first appearance (the engines name pipe handles differently)."""
    seen: Counter = Counter()
    binds: list[RpcBind] = []
    ordinals: dict = {}

    def observe(flow, pipe, ev):
        ordinal = ordinals.setdefault(pipe, len(ordinals))
        if isinstance(ev, RpcBind):
            binds.append(ev)
            seen[(ordinal, "bind", ev.interface_uuid)] += 1
        elif isinstance(ev, RpcCall):
            seen[(ordinal, "call", ev.interface_uuid, ev.opnum)] += 1

    pipeline = Pipeline(PipelineSettings(rpc_observer=observe))
    with open_capture(path) as reader:
        for frame in reader:
            pipeline.feed(*frame)
    pipeline.close()
    return seen, binds


def tshark(path: Path) -> Counter:
    """tshark's dissection: every bind PDU (the first context's interface: each names one) and
    every request, per SMB2 FileId numbered by first appearance; a request's interface is the
    one its pipe's bind proposed (tshark names the call by it: "SVCCTL OpenSCManagerW")."""
    rows = subprocess.run(["tshark", "-r", str(path), "-Y", "dcerpc.pkt_type == 11 || dcerpc.pkt_type == 0",
                           "-T", "fields", "-E", "occurrence=f", "-e", "smb2.fid", "-e", "dcerpc.pkt_type",
                           "-e", "dcerpc.cn_bind_to_uuid", "-e", "dcerpc.opnum"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    seen: Counter = Counter()
    ordinals: dict = {}
    bound: dict = {}
    for row in rows:
        fid, ptype, uuid, opnum = row.split("\t")
        ordinal = ordinals.setdefault(fid, len(ordinals))
        if ptype == "11":
            bound[ordinal] = uuid
            seen[(ordinal, "bind", uuid)] += 1
        else:
            seen[(ordinal, "call", bound.get(ordinal), int(opnum))] += 1
    return seen


@requires_tshark
@pytest.mark.parametrize("name", WINDOWS_ONE_SIDED)
def test_windows_binds_without_their_ack_are_reported_as_tshark_dissects_them(name, corpus):
    path = corpus / name
    seen, binds = native(path)
    expected = tshark(path)
    assert sum(n for key, n in expected.items() if key[1] == "bind") == 2      # two svcctl pipes
    assert seen == expected
    assert all(not bind.acknowledged and bind.transfer_syntax == "" for bind in binds)


def client_side_only(tmp_path: Path) -> Path:
    """The lab's impacket DFSCoerce capture with only the client's frames (IPv4 source
    10.0.0.66 at Ethernet offset 26): no CREATE response names the pipe, no bind_ack answers."""
    header, recs = records(ATTACK)
    client = bytes([10, 0, 0, 66])
    kept = [(ts, us, orig, data) for ts, us, orig, data in recs if data[26:30] == client]
    path = tmp_path / "client-side.pcap"
    path.write_bytes(header + b"".join(_PCAP_RECORD.pack(ts, us, len(d), orig) + d for ts, us, orig, d in kept))
    return path


@requires_tshark
def test_impacket_bind_without_ack_is_reported_and_the_event_says_the_bind_named_it(tmp_path):
    path = client_side_only(tmp_path)
    seen, binds = native(path)
    assert seen == tshark(path)
    assert seen == Counter({(0, "bind", NETDFS): 1, (0, "call", NETDFS, 13): 1, (0, "call", NETDFS, 12): 1})
    assert [(b.ctx_id, b.interface_version, b.acknowledged) for b in binds] == [(0, (3, 0), False)]
    proc = replay(tmp_path, "--events", "ev.jsonl", str(path))
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert [(e["action_rpc_func_opnum"], e["net_interface_inferred"], e["action_rpc_interface_uuid"].strip("{}").lower())
            for e in events] == [(13, "", NETDFS), (12, "", NETDFS)]      # from the bind, not the pipe or stub


def test_a_bind_with_its_ack_is_reported_once_as_before():
    seen, binds = native(ATTACK)
    assert [(b.interface_uuid, b.acknowledged) for b in binds] == [(NETDFS, True)]
    assert seen[(0, "bind", NETDFS)] == 1
