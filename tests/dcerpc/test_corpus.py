"""RpcAssociation on real ncacn_ip_tcp captures from the peers' suites (../shared/corpus),
checked against tshark's dissection of the same frames (the .tshark.tsv next to each)."""
from __future__ import annotations

import csv
import struct
from collections import defaultdict
from pathlib import Path

import pytest
from scapy.all import IP, TCP, PcapReader

from sensor.anomaly import Anomaly
from sensor.dcerpc.association import RpcAssociation
from sensor.dcerpc.events import RpcBind, RpcCall
from sensor.net.stream import FlowKey

SV = "suricata-verify/tests/"

# Anomalies a capture really holds, with why.
EXPECTED_ANOMALIES = {
    # suricata's gap test cut frame 9 (the client's alter_context) out of the capture:
    # its alter_context_resp (frame 10) answers nothing we saw.
    "integrity": ["dcerpc_ack_without_bind"],
    # the Windows 7 join's bind_ack (frame 8) answers a 3-context bind with one result
    # (tshark reads the same single result); the first context is taken as the accepted one.
    "sealed": ["dcerpc_bind_result_count"],
}

CAPTURES = {
    # fragmented requests with object uuids, NDR64 accepted on ctx 1, alter_context
    "truncate-applayer": (SV + "truncate-applayer-test-01/input.pcap", 60348),
    # PKT_PRIVACY (sealed) requests after alter_context
    "sealed": ("zeek/testing/btest/Traces/dce-rpc/cs_window7-join_stream092.pcap", 1024),
    # PKT_INTEGRITY requests, a PDU over several TCP segments
    "integrity": (SV + "dcerpc/dce-gap-handling/input.pcap", 49154),
    # a bind without PFC flags, fragmented request
    "bind-no-frag-flag": (SV + "dcerpc/dcerpc-bind-no-frag-flag/input.pcap", 135),
    # many contexts and ctx ids above 0 over one connection
    "ctxids": (SV + "dcerpc/dcerpc-ctxids/input.pcap", 49724),
}


def located(corpus: Path, name: str) -> tuple[Path, int]:
    relative, port = CAPTURES[name]
    return corpus / relative, port


def tcp_streams(path: Path, port: int) -> dict[tuple, list[tuple[bool, int, bytes]]]:
    """Per connection, (from_client, frame, payload) in sequence order; retransmissions
    (a sequence number already seen) dropped. Enough for these clean captures."""
    segments: dict[tuple, dict[bool, dict[int, tuple[int, bytes]]]] = defaultdict(lambda: {True: {}, False: {}})
    with PcapReader(str(path)) as reader:
        for frame, pkt in enumerate(reader, 1):
            if IP not in pkt or TCP not in pkt or port not in (pkt[TCP].sport, pkt[TCP].dport):
                continue
            # IP total length, not the frame, bounds the payload: short frames carry Ethernet padding.
            ip, tcp = pkt[IP], pkt[TCP]
            payload = bytes(tcp.payload)[:ip.len - ip.ihl * 4 - tcp.dataofs * 4]
            if not payload:
                continue
            from_client = pkt[TCP].dport == port
            ends = (pkt[IP].src, pkt[TCP].sport, pkt[IP].dst, pkt[TCP].dport)
            key = ends if from_client else (ends[2], ends[3], ends[0], ends[1])
            segments[key][from_client].setdefault(pkt[TCP].seq, (frame, payload))
    streams = {}
    for key, sides in segments.items():
        units = [(fc, frame, data) for fc in (True, False) for _seq, (frame, data) in sorted(sides[fc].items())]
        streams[key] = sorted(units, key=lambda u: u[1])
    return streams


def tshark_requests(path: Path, port: int) -> set[tuple[int, int, int]]:
    """(call_id, opnum, auth_level or 0) of every request first fragment tshark saw on ``port``."""
    found = set()
    with open(str(path) + ".tshark.tsv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["tcp.dstport"] != str(port):
                continue
            types = row["dcerpc.pkt_type"].split(",")
            calls = row["dcerpc.cn_call_id"].split(",")
            flags = row["dcerpc.cn_flags"].split(",")
            opnums = row["dcerpc.opnum"].split(",")
            levels = row["dcerpc.auth_level"].split(",") if row["dcerpc.auth_level"] else []
            op_i = 0
            for i, ptype in enumerate(types):
                if ptype != "0":
                    continue
                if int(flags[i], 16) & 1:
                    level = int(levels[min(op_i, len(levels) - 1)]) if levels else 0
                    found.add((int(calls[i]), int(opnums[op_i]), level))
                op_i += 1
    return found


def run(path: Path, port: int):
    calls, binds, anomalies = [], [], []
    for key, units in tcp_streams(path, port).items():
        assoc = RpcAssociation(FlowKey(*key))
        for from_client, frame, data in units:
            for ev in assoc.feed(from_client, 0.0, data, frame):
                if isinstance(ev, (RpcCall, RpcBind, Anomaly)):
                    (calls if isinstance(ev, RpcCall) else binds if isinstance(ev, RpcBind) else anomalies).append(ev)
        assoc.close(0.0)
    return calls, binds, anomalies


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_requests_match_tshark(corpus, name):
    path, port = located(corpus, name)
    calls, binds, anomalies = run(path, port)
    ours = {(c.call_id, c.opnum, c.auth_level or 0) for c in calls}
    assert ours == tshark_requests(path, port)
    assert [a.name for a in anomalies] == EXPECTED_ANOMALIES.get(name, [])
    assert all(c.interface_uuid for c in calls)   # every bind was captured


def test_fragmented_requests_joined_with_object_uuid(corpus):
    path, port = located(corpus, "truncate-applayer")
    calls, binds, _ = run(path, port)
    (big,) = [c for c in calls if c.call_id == 5361]   # frames 44, 50, 55: 0x81, 0x80, 0x82
    assert big.frame == 55 and big.object_uuid is not None
    # Windows sets the first fragment's alloc_hint to the whole stub's size (C706 12.6.4.9).
    client = b"".join(d for units in tcp_streams(path, port).values() for fc, _f, d in units if fc)
    first = client.index(b"\x05\x00\x00\x81\x10\x00\x00\x00")
    while struct.unpack_from("<I", client, first + 12)[0] != 5361:
        first = client.index(b"\x05\x00\x00\x81\x10\x00\x00\x00", first + 1)
    assert len(big.stub) == struct.unpack_from("<I", client, first + 16)[0]
    # bind: ctx 0 (NDR20) rejected, ctx 1 (NDR64) accepted; then alter_context binds ctx 0 (NDR20)
    assert [(b.ctx_id, b.transfer_syntax) for b in binds][:2] == [
        (1, "71710533-beba-4937-8319-b5dbef9ccc36"), (0, "8a885d04-1ceb-11c9-9fe8-08002b104860")]


def test_sealed_requests_flagged_with_opnum(corpus):
    path, port = located(corpus, "sealed")
    calls, _, _ = run(path, port)
    sealed = [c for c in calls if c.auth_level == 6]
    assert sealed and all(c.sealed and c.stub == b"" for c in sealed)


def test_integrity_requests_have_stub_without_verifier(corpus):
    path, port = located(corpus, "integrity")
    calls, _, _ = run(path, port)
    signed = [c for c in calls if c.auth_level == 5]
    assert signed and all(not c.sealed and c.stub for c in signed)
