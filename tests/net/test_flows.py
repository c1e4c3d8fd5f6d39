"""The flow table fed segment tuples: roles, app choice, endings, bounds; and real captures."""
import socket
import subprocess

import pytest

from sensor.capture.pcapfile import open_capture
from sensor.net.flows import FlowSettings, FlowTable, sniff_app
from sensor.net.frames import FrameDecoder
from sensor.net.stream import FlowEnded, FlowKey, FlowStarted, StreamData, StreamGap
from tests.conftest import requires_tshark

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
C, S = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2")
NBSS_SMB2 = b"\x00\x00\x00\x40\xfeSMB" + b"\x40\x00" + b"\0" * 58        # request: flags bit 0 clear
DCERPC_BIND = bytes([5, 0, 11, 3, 0x10, 0, 0, 0, 72, 0, 0, 0, 1, 0, 0, 0]) + b"\0" * 56


def seg(src, dst, sport, dport, seq, ack, flags, payload=b""):
    return src, dst, sport, dport, seq, ack, flags, memoryview(payload), ()


def handshake(table, sport=50000, dport=445, ts=0.0):
    out = table.feed(ts, seg(C, S, sport, dport, 100, 0, SYN), 1)
    out += table.feed(ts, seg(S, C, dport, sport, 500, 101, SYN | ACK), 2)
    out += table.feed(ts, seg(C, S, sport, dport, 101, 501, ACK), 3)
    return out


def kinds(events):
    return [type(e).__name__ for e in events]


def test_session_on_445_announced_with_first_payload_and_ended_by_fins():
    table = FlowTable()
    assert handshake(table) == []          # nothing to announce before a payload byte
    out = table.feed(1.0, seg(C, S, 50000, 445, 101, 501, PSH | ACK, b"req"), 4)
    out += table.feed(1.1, seg(S, C, 445, 50000, 501, 104, PSH | ACK, b"resp"), 5)
    out += table.feed(1.2, seg(C, S, 50000, 445, 104, 505, FIN | ACK), 6)
    out += table.feed(1.3, seg(S, C, 445, 50000, 505, 105, FIN | ACK), 7)
    key = FlowKey("10.0.0.1", 50000, "10.0.0.2", 445)
    assert out == [
        FlowStarted(key, 1.0, False, "smb", ()),
        StreamData(key, True, 1.0, b"req", 4),
        StreamData(key, False, 1.1, b"resp", 5),
        FlowEnded(key, 1.3, "fin"),
    ]
    assert table.feed(1.4, seg(C, S, 50000, 445, 105, 506, ACK), 8) == []    # last ACK absorbed
    assert table.stats["tcp_packets_after_end"] == 1


def test_rst_ends_after_flushing_buffered_data():
    table = FlowTable()
    handshake(table, dport=135)
    out = table.feed(1.0, seg(C, S, 50000, 135, 101, 501, PSH | ACK, DCERPC_BIND[:8]), 4)
    out += table.feed(1.1, seg(C, S, 50000, 135, 113, 501, PSH | ACK, DCERPC_BIND[12:]), 5)
    out += table.feed(1.2, seg(S, C, 135, 50000, 501, 0, RST), 6)
    assert kinds(out) == ["FlowStarted", "StreamData", "StreamGap", "StreamData", "FlowEnded"]
    assert out[0].app == "dcerpc" and out[2].length == 4 and out[-1].reason == "rst"


def test_midstream_roles_by_well_known_port_and_syn_ack_first():
    table = FlowTable()
    [started, data] = table.feed(0.0, seg(S, C, 445, 40000, 7, 9, PSH | ACK, b"\x00\x00\x00\x00"), 1)
    assert started.flow == FlowKey("10.0.0.1", 40000, "10.0.0.2", 445) and started.midstream
    assert data.from_client is False
    table.feed(0.0, seg(S, C, 139, 40001, 10, 20, SYN | ACK), 2)
    [started, _] = table.feed(0.0, seg(C, S, 40001, 139, 20, 11, PSH | ACK, b"\x81\x00\x00\x00"), 3)
    assert started.flow.server_port == 139 and not started.midstream


def test_non_standard_port_sniffed_by_first_payload_with_roles_from_the_header():
    table = FlowTable()
    # midstream, lower port is the client: the DCE/RPC bind says who the client is
    [started, data] = table.feed(0.0, seg(C, S, 1025, 49999, 1, 1, PSH | ACK, DCERPC_BIND), 1)
    assert started.app == "dcerpc" and started.flow.client_port == 1025 and data.from_client
    # a handshake on another port, then SMB2 over NetBIOS framing
    handshake(table, sport=50001, dport=8445)
    [started, _] = table.feed(0.0, seg(C, S, 50001, 8445, 101, 501, PSH | ACK, NBSS_SMB2), 4)
    assert started.app == "smb" and started.flow.server_port == 8445


def test_other_traffic_is_ignored_with_one_lookup_and_no_events():
    table = FlowTable()
    handshake(table, sport=50002, dport=80)
    assert table.feed(0.0, seg(C, S, 50002, 80, 101, 501, PSH | ACK, b"SSH-2.0-OpenSSH_9.2\r\n"), 4) == []
    assert table.active == 0 and table.stats["flows_ignored"] == 1
    for i in range(10):
        assert table.feed(0.0, seg(S, C, 80, 50002, 501, 117, PSH | ACK, b"\x00\x00\x00\x00\xfeSMB"), 5 + i) == []
    assert table.feed(0.0, seg(C, S, 1234, 5678, 1, 1, PSH | ACK, b"\x16\x03\x01"), 20) == []
    assert table.active == 0 and table.stats["flows_ignored"] == 2


def test_sniffer_accepts_only_protocol_headers():
    assert sniff_app(NBSS_SMB2) == ("smb", True)
    assert sniff_app(DCERPC_BIND) == ("dcerpc", True)
    assert sniff_app(bytes([5, 0, 12]) + DCERPC_BIND[3:]) == ("dcerpc", False)    # bind_ack
    assert sniff_app(b"\x00\x00\x00\x40GET ") is None
    assert sniff_app(bytes([5, 0, 99]) + DCERPC_BIND[3:]) is None


def test_flow_table_bound_evicts_oldest_with_flush():
    table = FlowTable(FlowSettings(max_flows=2))
    out = []
    for port in (40000, 40001, 40002):
        out += table.feed(0.0, seg(C, S, port, 445, 1, 1, PSH | ACK, b"\x00\x00\x00\x01"), port)
    ended = [e for e in out if isinstance(e, FlowEnded)]
    assert [(e.flow.client_port, e.reason) for e in ended] == [(40000, "evicted")]
    assert table.active == 2 and table.stats["flows_evicted"] == 1
    assert table.stats["anomaly.flow_table_full"] == 1


def test_idle_expiry_from_feed_and_explicit():
    table = FlowTable()
    table.feed(0.0, seg(C, S, 40000, 445, 1, 1, PSH | ACK, b"x"), 1)
    table.feed(0.0, seg(C, S, 40001, 445, 1, 0, SYN), 2)       # half-open, never announced
    assert table.expire(29.0) == [] and table.active == 2
    assert table.expire(31.0) == [] and table.active == 1      # half-open forgotten silently
    out = table.feed(301.0, seg(C, S, 40002, 139, 1, 1, ACK), 3)
    assert [(e.flow.client_port, e.reason) for e in out if isinstance(e, FlowEnded)] == [(40000, "idle")]


def test_close_flushes_and_ends_everything():
    table = FlowTable()
    handshake(table)
    table.feed(1.0, seg(C, S, 50000, 445, 101, 501, PSH | ACK, b"a"), 4)
    table.feed(1.0, seg(C, S, 50000, 445, 110, 501, PSH | ACK, b"z"), 5)
    out = table.close(1.0)
    assert kinds(out) == ["StreamGap", "StreamData", "FlowEnded"] and out[-1].reason == "end_of_capture"
    assert table.active == 0


def test_port_reuse_after_end_starts_a_new_flow():
    table = FlowTable()
    handshake(table)
    table.feed(1.0, seg(C, S, 50000, 445, 101, 501, PSH | ACK, b"a"), 4)
    assert kinds(table.feed(1.0, seg(S, C, 445, 50000, 501, 0, RST), 5)) == ["FlowEnded"]
    table.feed(2.0, seg(C, S, 50000, 445, 9000, 0, SYN), 6)
    out = table.feed(2.1, seg(C, S, 50000, 445, 9001, 0, PSH | ACK, b"b"), 7)
    assert kinds(out) == ["FlowStarted", "StreamData"] and bytes(out[1].data) == b"b"


def run_capture(path):
    decoder, table = FrameDecoder(), FlowTable()
    events = []
    for ts, linktype, data, frame in open_capture(path):
        segment = decoder.feed(ts, linktype, data)
        if segment is not None:
            events += table.feed(ts, segment, frame)
    return events + table.close(ts)


def follow_tcp(path, flow: FlowKey) -> tuple[bytes, bytes]:
    """tshark's reassembled stream of one flow: (client bytes, server bytes)."""
    index = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "tcp.stream", "-Y",
                            f"tcp.port == {flow.client_port} && tcp.port == {flow.server_port}"],
                           capture_output=True, text=True, check=True).stdout.split()[0]
    text = subprocess.run(["tshark", "-r", str(path), "-q", "-z", f"follow,tcp,raw,{index}"],
                          capture_output=True, text=True, check=True).stdout
    lines = text.split("=" * 67)[1].splitlines()
    node0 = lines[3].split(": ", 1)[1]          # "Node 0: ip:port", whoever sent data first
    node0_bytes, node1_bytes = [], []
    for line in lines[5:]:
        if line.strip():
            (node1_bytes if line.startswith("\t") else node0_bytes).append(bytes.fromhex(line.strip()))
    first, second = b"".join(node0_bytes), b"".join(node1_bytes)
    return (first, second) if node0.endswith(f":{flow.client_port}") else (second, first)


@pytest.mark.tshark
@requires_tshark
@pytest.mark.parametrize("capture", [
    "zeek/testing/btest/Traces/smb/smb2readwrite.pcap",
    "zeek/testing/btest/Traces/dce-rpc/dce_rpc_ntlm.pcapng",                   # midstream, odd ports
    "suricata-verify/tests/smb-eicar-file-segmentation-random/input.pcap",     # random segmentation
    "suricata-verify/tests/smb-eicar-overlap/input.pcap",
    "zeek/testing/btest/Traces/krb/kerberos_tso.pcapng",                       # TSO, IP length 0
])
def test_corpus_streams_equal_tshark_follow(corpus, capture):
    path = corpus / capture
    events = run_capture(path)
    started = [e for e in events if isinstance(e, FlowStarted)]
    assert started
    assert not [e for e in events if isinstance(e, StreamGap)]
    flow = started[0].flow
    client = b"".join(bytes(e.data) for e in events if isinstance(e, StreamData) and e.flow == flow and e.from_client)
    server = b"".join(bytes(e.data) for e in events if isinstance(e, StreamData) and e.flow == flow and not e.from_client)
    assert (client, server) == follow_tcp(path, flow)


def test_http_request_from_the_client_is_followed_on_any_port():
    assert sniff_app(b"PROPFIND /share HTTP/1.1\r\n") == ("http", True)
    table = FlowTable()
    handshake(table, sport=50003, dport=8080)
    [started] = [u for u in table.feed(0.0, seg(C, S, 50003, 8080, 101, 501, PSH | ACK,
                                                   b"OPTIONS / HTTP/1.1\r\n"), 4) if isinstance(u, FlowStarted)]
    assert (started.app, started.flow.server_port) == ("http", 8080)
