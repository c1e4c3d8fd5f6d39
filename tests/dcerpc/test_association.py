"""RpcAssociation fed PDUs made by impacket's encoders (and by hand for big endian)."""
from __future__ import annotations

import struct
import subprocess

from hypothesis import given, settings, strategies as st

import dcerpc_wire as w
from sensor.anomaly import Anomaly
from sensor.dcerpc.association import RpcAssociation, RpcSettings
from sensor.dcerpc.events import RpcBind, RpcCall, RpcResult
from sensor.interfaces import dfsnm
from tests.conftest import PCAPS, requires_tshark

REMOVE_STD_ROOT = dfsnm.NetrDfsRemoveStdRoot()
REMOVE_STD_ROOT["ServerName"] = "10.0.0.66\x00"
REMOVE_STD_ROOT["RootShare"] = "test\x00"
REMOVE_STD_ROOT["ApiFlags"] = 1
STUB = REMOVE_STD_ROOT.getData()


def bound_netdfs(ctx_id: int = 0) -> RpcAssociation:
    assoc = RpcAssociation(w.FLOW)
    assoc.feed(True, 1.0, w.bind(1, [(ctx_id, w.NETDFS, (3, 0), w.NDR20)]), 1)
    assoc.feed(False, 1.1, w.bind_ack(1, [(0, w.NDR20)]), 2)
    return assoc


def of(kind, events):
    return [e for e in events if isinstance(e, kind)]


def test_several_pdus_in_one_feed():
    assoc = RpcAssociation(w.FLOW)
    out = assoc.feed(True, 1.0, w.bind(1, [(0, w.NETDFS, (3, 0), w.NDR20)])
                     + w.request(2, 13, STUB) + w.request(3, 12, STUB), 1)
    calls = of(RpcCall, out)   # bind not acked yet: named by what the bind proposed
    assert [(c.call_id, c.opnum, c.interface_uuid, c.stub) for c in calls] == [(2, 13, w.NETDFS, STUB), (3, 12, w.NETDFS, STUB)]
    out = assoc.feed(False, 1.1, w.bind_ack(1, [(0, w.NDR20)]) + w.response(2, b"\0" * 4) + w.fault(3, 5), 2)
    assert out[0] == RpcBind(1.1, 0, w.NETDFS, (3, 0), w.NDR20)
    assert out[1:] == [RpcResult(1.1, 2, 0, False), RpcResult(1.1, 3, 5, True)]


def test_pdu_split_at_every_byte():
    wire = w.request(7, 13, STUB, auth=(10, 5, b"\x01" * 16)) + w.request(8, 12, STUB)
    for cut in range(1, len(wire)):
        assoc = bound_netdfs()
        out = assoc.feed(True, 2.0, wire[:cut], 10) + assoc.feed(True, 2.0, wire[cut:], 11)
        calls = of(RpcCall, out)
        assert [(c.call_id, c.stub, c.auth_level) for c in calls] == [(7, STUB, 5), (8, STUB, None)], cut
        assert not of(Anomaly, out)


def test_one_byte_writes():
    assoc = bound_netdfs()
    wire = w.request(9, 13, STUB)
    out = []
    for i in range(len(wire)):
        out += assoc.feed(True, 3.0, memoryview(wire)[i:i + 1], 100 + i)
    (call,) = out
    assert call.stub == STUB and call.frame == 100 + len(wire) - 1


def test_fragmented_request_joined_with_first_fragment_header():
    assoc = bound_netdfs(ctx_id=0)
    frags = w.fragments(5, 13, STUB, size=8)
    assert len(frags) > 5
    out = []
    for i, frag in enumerate(frags):
        out += assoc.feed(True, 4.0 + i, frag, 20 + i)
    (call,) = out
    assert call.stub == STUB and call.opnum == 13 and call.interface_uuid == w.NETDFS
    assert call.frame == 20 + len(frags) - 1 and call.ts == 4.0 + len(frags) - 1


def test_interleaved_fragmented_calls_joined_per_call_id():
    assoc = bound_netdfs()
    a, b = w.fragments(1, 13, STUB, 16), w.fragments(2, 12, STUB[::-1], 16)
    out = []
    for fa, fb in zip(a, b):
        out += assoc.feed(True, 1.0, fb + fa, 1)
    assert {(c.call_id, c.stub) for c in of(RpcCall, out)} == {(1, STUB), (2, STUB[::-1])}


def test_multi_context_bind_mixed_results_netdfs_on_ctx_1():
    assoc = RpcAssociation(w.FLOW)
    assoc.feed(True, 1.0, w.bind(2, [(0, w.NETDFS, (3, 0), w.NDR64), (1, w.NETDFS, (3, 0), w.NDR20),
                                         (2, w.NETDFS, (3, 0), w.BIND_TIME_FEATURES)]), 1)
    # Windows answers NDR64 "provider rejection" to a 32-bit client and 0x0003 (negotiate ack) to features.
    out = assoc.feed(False, 1.1, w.bind_ack(2, [(2, w.NDR64), (0, w.NDR20), (3, "00000000-0000-0000-0000-000000000000")]), 2)
    assert out == [RpcBind(1.1, 1, w.NETDFS, (3, 0), w.NDR20)]
    calls = assoc.feed(True, 1.2, w.request(3, 13, STUB, ctx_id=1) + w.request(4, 13, STUB, ctx_id=0), 3)
    assert [(c.ctx_id, c.interface_uuid) for c in calls] == [(1, w.NETDFS), (0, None)]


def test_alter_context_adds_a_context_and_reuse_replaces_it():
    assoc = RpcAssociation(w.FLOW)
    assoc.feed(True, 1.0, w.bind(1, [(0, w.SRVSVC, (3, 0), w.NDR20)]), 1)
    assoc.feed(False, 1.0, w.bind_ack(1, [(0, w.NDR20)]), 2)
    assoc.feed(True, 1.0, w.bind(2, [(1, w.NETDFS, (3, 0), w.NDR20)], alter=True), 3)
    assert assoc.feed(False, 1.0, w.bind_ack(2, [(0, w.NDR20)], alter=True), 4) == [RpcBind(1.0, 1, w.NETDFS, (3, 0), w.NDR20)]
    calls = assoc.feed(True, 1.0, w.request(3, 0, b"", ctx_id=0) + w.request(4, 13, STUB, ctx_id=1), 5)
    assert [c.interface_uuid for c in calls] == [w.SRVSVC, w.NETDFS]
    # ctx 1 re-bound to another interface: later calls on it are that interface's.
    assoc.feed(True, 1.0, w.bind(5, [(1, w.LSARPC, (0, 0), w.NDR20)], alter=True), 6)
    assoc.feed(False, 1.0, w.bind_ack(5, [(0, w.NDR20)], alter=True), 7)
    (call,) = assoc.feed(True, 1.0, w.request(6, 13, STUB, ctx_id=1), 8)
    assert (call.interface_uuid, call.interface_version) == (w.LSARPC, (0, 0))


def test_rejected_alter_context_keeps_the_previous_binding():
    assoc = bound_netdfs(ctx_id=1)
    assoc.feed(True, 1.0, w.bind(5, [(1, w.LSARPC, (0, 0), w.NDR20)], alter=True), 6)
    assert assoc.feed(False, 1.0, w.bind_ack(5, [(2, w.NDR20)], alter=True), 7) == []
    (call,) = assoc.feed(True, 1.0, w.request(6, 13, STUB, ctx_id=1), 8)
    assert call.interface_uuid == w.NETDFS


def test_one_sided_capture_names_calls_by_the_unacknowledged_bind():
    # suricata-verify bug-8629: client-to-server only, so no bind_ack ever comes.
    assoc = RpcAssociation(w.FLOW)
    assoc.feed(True, 1.0, w.bind(2, [(0, w.NETDFS, (3, 0), w.NDR20), (1, w.NETDFS, (3, 0), w.BIND_TIME_FEATURES)]), 1)
    bind, *calls = assoc.feed(True, 1.1, w.request(2, 12, STUB) + w.request(3, 13, STUB, ctx_id=5)
                              + w.request(4, 13, STUB), 2)
    # The bind is reported once, before the first call on its context (issue 18 item 13).
    assert bind == RpcBind(1.1, 0, w.NETDFS, (3, 0), "", acknowledged=False)
    assert [(c.ctx_id, c.interface_uuid, c.interface_version, c.ndr64) for c in calls] == [
        (0, w.NETDFS, (3, 0), False), (5, None, None, False), (0, w.NETDFS, (3, 0), False)]
    assert assoc.stats["calls_on_unacknowledged_context"] == 2
    assert assoc.stats["binds_unacknowledged"] == 1


def test_ack_overrides_the_proposal():
    assoc = RpcAssociation(w.FLOW)
    assoc.feed(True, 1.0, w.bind(1, [(0, w.SRVSVC, (3, 0), w.NDR20)]), 1)
    assoc.feed(False, 1.0, w.bind_ack(1, [(0, w.NDR20)]), 2)
    # ctx 1 proposed as netdfs but rejected: its calls have no interface, ctx 0 keeps srvsvc.
    assoc.feed(True, 1.0, w.bind(2, [(1, w.NETDFS, (3, 0), w.NDR20), (0, w.NETDFS, (3, 0), w.NDR20)], alter=True), 3)
    assoc.feed(False, 1.0, w.bind_ack(2, [(2, w.NDR20), (2, w.NDR20)], alter=True), 4)
    calls = assoc.feed(True, 1.0, w.request(3, 12, STUB, ctx_id=1) + w.request(4, 12, STUB, ctx_id=0), 5)
    assert [c.interface_uuid for c in calls] == [None, w.SRVSVC]
    assert assoc.stats["calls_on_unacknowledged_context"] == 0


def test_bind_nak_drops_the_proposal():
    assoc = RpcAssociation(w.FLOW)
    assoc.feed(True, 1.0, w.bind(7, [(0, w.NETDFS, (3, 0), w.NDR20)]), 1)
    # C706 12.6.4.5 bind_nak: provider_reject_reason 4 (protocol version not supported), no versions.
    nak = struct.pack("<BBBBIHHIHB", 5, 0, 13, 3, 0x10, 19, 0, 7, 4, 0)
    assert assoc.feed(False, 1.0, nak, 2) == []
    (call,) = assoc.feed(True, 1.0, w.request(8, 12, STUB), 3)
    assert call.interface_uuid is None


def test_ndr64_context_marks_its_calls():
    assoc = RpcAssociation(w.FLOW)
    assoc.feed(True, 1.0, w.bind(1, [(0, w.NETDFS, (3, 0), w.NDR20), (1, w.NETDFS, (3, 0), w.NDR64)]), 1)
    out = assoc.feed(False, 1.0, w.bind_ack(1, [(0, w.NDR20), (0, w.NDR64)]), 2)
    assert [b.transfer_syntax for b in out] == [w.NDR20, w.NDR64]
    calls = assoc.feed(True, 1.0, w.request(2, 12, STUB, ctx_id=0) + w.request(3, 12, STUB, ctx_id=1), 3)
    assert [(c.ctx_id, c.ndr64) for c in calls] == [(0, False), (1, True)]


def test_ndr64_call_decodes_with_the_flag_it_carries():
    from sensor.interfaces.catalog import default_catalog
    from sensor.interfaces.decode import decode_request
    call64 = dfsnm.NetrDfsAddStdRoot(isNDR64=True)
    call64["ServerName"], call64["RootShare"], call64["Comment"], call64["ApiFlags"] = "10.0.0.66\x00", "r\x00", "\x00", 0
    assoc = RpcAssociation(w.FLOW)
    assoc.feed(True, 1.0, w.bind(1, [(0, w.NETDFS, (3, 0), w.NDR64)]), 1)
    assoc.feed(False, 1.0, w.bind_ack(1, [(0, w.NDR64)]), 2)
    (call,) = assoc.feed(True, 1.0, w.request(2, 12, call64.getData()), 3)
    op = default_catalog().interface(w.NETDFS).operation(12)
    assert decode_request(op, call.stub, call.little_endian, call.ndr64).strings["ServerName"] == "10.0.0.66"


def test_unacknowledged_ndr64_only_proposal_is_ndr64():
    assoc = RpcAssociation(w.FLOW)
    assoc.feed(True, 1.0, w.bind(1, [(3, w.NETDFS, (3, 0), w.NDR64)]), 1)
    (bind, call) = assoc.feed(True, 1.0, w.request(2, 12, STUB, ctx_id=3), 2)
    assert (bind.ctx_id, bind.acknowledged) == (3, False)
    assert (call.interface_uuid, call.ndr64) == (w.NETDFS, True)


def test_big_endian_bind_and_request():
    assoc = RpcAssociation(w.FLOW)
    assoc.feed(True, 1.0, w.big_endian_bind(1, 4, w.NETDFS, (3, 0)), 1)
    assert assoc.feed(False, 1.0, w.big_endian_bind_ack(1), 2) == [RpcBind(1.0, 4, w.NETDFS, (3, 0), w.NDR20)]
    stub = struct.pack(">I", 0xDEADBEEF)
    (call,) = assoc.feed(True, 1.0, w.big_endian_request(0x01020304, 13, stub, ctx_id=4), 3)
    assert (call.call_id, call.opnum, call.ctx_id, call.little_endian, call.stub) == (0x01020304, 13, 4, False, stub)
    assert call.interface_uuid == w.NETDFS


def test_integrity_trailer_stripped_with_its_pad():
    assoc = bound_netdfs()
    for n in range(0, 20):   # every auth_pad_length 0..15
        stub = STUB[:n]
        (call,) = assoc.feed(True, 1.0, w.request(n + 10, 13, stub, auth=(10, 5, b"\xaa" * 16)), 1)
        assert call.stub == stub and (call.auth_type, call.auth_level, call.sealed) == (10, 5, False)


def test_privacy_is_flagged_sealed_with_opnum():
    assoc = bound_netdfs()
    (call,) = assoc.feed(True, 1.0, w.request(3, 12, b"\x99" * 40, auth=(9, 6, b"\xaa" * 16)), 1)
    assert (call.sealed, call.stub, call.opnum, call.interface_uuid, call.auth_type) == (True, b"", 12, w.NETDFS, 9)


def test_object_uuid_read_and_skipped():
    assoc = bound_netdfs()
    (call,) = assoc.feed(True, 1.0, w.request(3, 13, STUB, object_uuid=w.SRVSVC), 1)
    assert call.object_uuid == w.SRVSVC and call.stub == STUB


def test_fragmented_response_gives_one_result_on_its_last_fragment():
    assoc = bound_netdfs()
    wire = (w.response(4, b"a" * 3000, flags=0x01) + w.response(4, b"b" * 3000, flags=0)
            + w.response(4, b"c" * 10, flags=0x02))
    out = assoc.feed(False, 1.0, wire[:100], 1) + assoc.feed(False, 1.0, wire[100:5000], 2) + assoc.feed(False, 1.0, wire[5000:], 3)
    assert out == [RpcResult(1.0, 4, 0, False)]
    assert len(assoc._dirs[False].buf) == 0   # response bodies are passed over, not buffered


def test_gap_then_resync_at_next_header():
    assoc = bound_netdfs()
    first = w.request(1, 13, STUB)
    out = assoc.feed(True, 1.0, first[:30], 1)
    out += assoc.gap(True, 1.0, 10)
    # The rest of the lost PDU's bytes never come; garbage then a whole request.
    out += assoc.feed(True, 2.0, b"\x05\x00\xff" + first[40:] + w.request(2, 12, STUB), 2)
    assert [e.name for e in of(Anomaly, out)] == ["dcerpc_gap_resync"]
    assert [(c.call_id, c.opnum, c.stub) for c in of(RpcCall, out)] == [(2, 12, STUB)]
    assert assoc.stats["resync_bytes_skipped"] == 3 + len(first) - 40


def test_client_gap_abandons_calls_being_joined():
    assoc = bound_netdfs()
    frags = w.fragments(1, 13, STUB, 8)
    assoc.feed(True, 1.0, frags[0], 1)
    assert "1 fragmented call(s) abandoned" in assoc.gap(True, 1.0, 10)[0].detail
    # Resync wants a first fragment: the rest of call 1 is passed over, call 2 is whole.
    out = assoc.feed(True, 1.0, b"".join(frags[2:]) + w.request(2, 13, STUB), 2)
    assert [(c.call_id, c.stub) for c in out] == [(2, STUB)]


def test_later_fragment_without_a_first_starts_a_call_and_is_flagged():
    assoc = bound_netdfs()
    frags = w.fragments(1, 13, STUB, 8)
    out = assoc.feed(True, 1.0, b"".join(frags[1:]), 2)
    assert [e.name for e in of(Anomaly, out)] == ["dcerpc_fragment_without_first"]
    assert [(c.opnum, c.stub) for c in of(RpcCall, out)] == [(13, STUB[8:])]


def test_garbage_resyncs_and_is_counted():
    assoc = bound_netdfs()
    out = assoc.feed(True, 1.0, b"\x06" * 40 + w.request(2, 13, STUB), 1)
    assert [e.name for e in of(Anomaly, out)] == ["dcerpc_bad_header"]
    assert [c.stub for c in of(RpcCall, out)] == [STUB]


def test_unknown_ptype_is_an_anomaly_and_skipped_by_length():
    assoc = bound_netdfs()
    ping = bytearray(w.request(2, 13, STUB))
    ping[2] = 1   # connectionless ping on a CO association
    out = assoc.feed(True, 1.0, bytes(ping) + w.request(3, 13, STUB), 1)
    assert [e.name for e in of(Anomaly, out)] == ["dcerpc_unknown_ptype"]
    assert [c.call_id for c in of(RpcCall, out)] == [3]


def test_request_from_the_server_side_is_not_a_call():
    assoc = bound_netdfs()
    out = assoc.feed(False, 1.0, w.request(2, 13, STUB), 1)
    assert [e.name for e in out] == ["dcerpc_wrong_direction"]


def test_huge_frag_length_is_refused_and_resynced():
    assoc = RpcAssociation(w.FLOW, RpcSettings(max_frag_length=1024))
    big = w.request(2, 13, b"\0" * 2000)
    out = assoc.feed(True, 1.0, big + w.request(3, 13, STUB), 1)
    assert [e.name for e in of(Anomaly, out)] == ["dcerpc_frag_too_large"]
    assert [c.call_id for c in of(RpcCall, out)] == [3]
    assert len(assoc._dirs[True].buf) < 16


def test_too_many_fragments_keeps_the_start_and_flags_it():
    assoc = RpcAssociation(w.FLOW, RpcSettings(max_fragments_per_call=4))
    out = []
    for frag in w.fragments(9, 13, STUB, 4):
        out += assoc.feed(True, 1.0, frag, 1)
    assert [e.name for e in of(Anomaly, out)] == ["dcerpc_stub_truncated"]
    (call,) = of(RpcCall, out)
    assert call.stub == STUB[:16]


def test_stub_bytes_bound():
    assoc = RpcAssociation(w.FLOW, RpcSettings(max_stub_bytes=20))
    out = []
    for frag in w.fragments(9, 13, STUB, 8):
        out += assoc.feed(True, 1.0, frag, 1)
    (call,) = of(RpcCall, out)
    assert call.stub == STUB[:20] and assoc.stats["anomaly.dcerpc_stub_truncated"] == 1


def test_calls_in_flight_bound_evicts_the_oldest():
    assoc = RpcAssociation(w.FLOW, RpcSettings(max_calls_in_flight=2))
    out = []
    for call_id in (1, 2, 3):
        out += assoc.feed(True, 1.0, w.fragments(call_id, 13, STUB, 8)[0], 1)
    assert [e.detail for e in of(Anomaly, out)] == ["call_id 1 dropped"]
    assert len(assoc._calls) == 2


def test_close_releases_state_and_reports_nothing_for_pending_calls():
    assoc = bound_netdfs()
    assoc.feed(True, 1.0, w.fragments(1, 13, STUB, 8)[0] + w.request(2, 13, STUB)[:10], 1)
    assert assoc.close(1.0) == []
    assert not assoc._calls and not assoc._contexts and not assoc._dirs[True].buf


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=200)), max_size=12))
def test_random_bytes_never_raise(writes):
    assoc = RpcAssociation(w.FLOW, RpcSettings(max_frag_length=4096))
    for from_client, data in writes:
        for ev in assoc.feed(from_client, 1.0, data, 1):
            assert isinstance(ev, (RpcBind, RpcCall, RpcResult, Anomaly))
    assert len(assoc._dirs[True].buf) <= 4096 and len(assoc._dirs[False].buf) <= 4096
    assoc.close(1.0)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_real_pdus_never_raise(data):
    wire = bytearray(w.bind(1, [(0, w.NETDFS, (3, 0), w.NDR20)]) + w.request(2, 13, STUB, auth=(10, 5, b"\1" * 16))
                     + w.request(3, 13, STUB, flags=1))
    for _ in range(data.draw(st.integers(1, 8))):
        wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
    assoc = RpcAssociation(w.FLOW)
    assoc.feed(True, 1.0, bytes(wire), 1)
    assoc.gap(True, 1.0, 10)
    assoc.feed(True, 1.0, bytes(wire), 2)
    assoc.feed(False, 1.0, bytes(wire), 3)


def authenticated_bind(capture: str) -> tuple[list[tuple[bool, bytes]], str]:
    """The bind and bind_ack of a lab capture (impacket's client binding with NTLM to the lab's
    server, whose CHALLENGE impacket.ntlm's structures make), and the server name tshark's
    ntlmssp dissector reads in the ack."""
    out = subprocess.run(["tshark", "-n", "-r", str(PCAPS / "family" / capture), "-Y", "dcerpc.pkt_type == 11 || dcerpc.pkt_type == 12",
                          "-T", "fields", "-e", "dcerpc.pkt_type", "-e", "tcp.payload",
                          "-e", "ntlmssp.challenge.target_info.nb_computer_name"],
                         check=True, capture_output=True, text=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    return [(ptype == "11", bytes.fromhex(payload)) for ptype, payload, _ in rows], rows[-1][2]


@requires_tshark
def test_authenticated_bind_ack_names_the_server_as_wireshark_reads_it():
    """Over ncacn_ip_tcp no SMB session names the server; the NTLMSSP CHALLENGE in the ack of an
    authenticated bind does (par-tcp-rpc-privacy: MS-PAR at PKT_PRIVACY)."""
    pdus, tshark_name = authenticated_bind("par-tcp-rpc-privacy.pcap")
    assoc = RpcAssociation(w.FLOW)
    events = [e for n, (from_client, data) in enumerate(pdus) for e in assoc.feed(from_client, 1.0 + n, data, n)]
    assert [e.interface_uuid for e in of(RpcBind, events)] == ["76f03f96-cdfd-44fc-a22c-64950a001209"]
    assert assoc.server_name == tshark_name == "DC01"


@requires_tshark
def test_malformed_challenge_in_a_bind_ack_is_an_anomaly_and_the_bind_stands():
    [(_, bind), (_, ack)], _ = authenticated_bind("par-tcp-rpc-privacy.pcap")
    challenge = ack.index(b"NTLMSSP\x00")
    broken = bytearray(ack)
    struct.pack_into("<I", broken, challenge + 44, 0xFFFF)     # TargetInfoFields.BufferOffset past the end
    assoc = RpcAssociation(w.FLOW)
    events = assoc.feed(True, 1.0, bind, 1) + assoc.feed(False, 1.1, bytes(broken), 2)
    assert [a.name for a in of(Anomaly, events)] == ["ntlmssp_malformed"]
    assert len(of(RpcBind, events)) == 1 and assoc.server_name == ""
