"""The real DCE/RPC requests of the attack captures, re-fragmented at any stub size (C706
12.6.4.9: first/last flags, alloc_hint) and fed in any chunking, give the same calls; so do
calls on contexts juggled with alter_context."""
from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.dcerpc import pdu
from sensor.dcerpc.association import RpcAssociation
from sensor.dcerpc.events import RpcBind, RpcCall, RpcResult
from sensor.smb.connection import SmbConnection
from sensor.smb.events import PipeData
from tests.conftest import PCAPS
from tests.dcerpc import dcerpc_wire as wire
from tests.robustness.recut import extract_flows

EXAMPLES = 1000 if os.environ.get("DFS_SENSOR_LONG") else 40
CAPTURES = ["dfscoerce-smb21.pcap", "dfscoerce-smb1.pcap", "dfscoerce-fragmented.pcap",
            "dfscoerce-multi-context.pcap", "dfsnm-other-coercion.pcap", "dfscoerce-rpc-integrity.pcap"]
_REQUEST_BODY = struct.Struct("<IHH")   # alloc_hint, p_cont_id, opnum (C706 12.6.4.9)
_HEADER = struct.Struct("<BBBB4sHHI")


def pipe_streams(name: str) -> list[list[tuple[bool, bytes]]]:
    """Per named pipe: the DCE/RPC bytes each side wrote, as turns."""
    pipes: dict = {}
    for flow in extract_flows(PCAPS / name):
        smb = SmbConnection(flow.key)
        for i, (from_client, data) in enumerate(flow.turns):
            for ev in smb.feed(from_client, 0.0, data, i):
                if isinstance(ev, PipeData):
                    turns = pipes.setdefault((flow.key, ev.pipe), [])
                    if turns and turns[-1][0] == ev.from_client:
                        turns[-1] = (ev.from_client, turns[-1][1] + bytes(ev.data))
                    else:
                        turns.append((ev.from_client, bytes(ev.data)))
    return list(pipes.values())


def split_pdus(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + pdu.COMMON_HEADER_LEN <= len(data):
        frag_length = struct.unpack_from("<H", data, pos + 8)[0]
        out.append(data[pos:pos + frag_length])
        pos += frag_length
    assert pos == len(data)
    return out


def refragment(data: bytes, size: int) -> bytes:
    """Unauthenticated requests joined per call and cut again into ``size``-byte stub fragments;
    every other PDU (and signed/sealed requests, whose verifier covers the fragment) unchanged."""
    out, joining = [], {}
    for raw in split_pdus(data):
        ver, minor, ptype, flags, drep, _, auth_length, call_id = _HEADER.unpack_from(raw)
        if ptype != pdu.PTYPE_REQUEST or auth_length or not drep[0] & pdu.DREP_LITTLE_ENDIAN:
            out.append(raw)
            continue
        head = pdu.REQUEST_HEADER_LEN + (pdu.OBJECT_UUID_LEN if flags & pdu.PFC_OBJECT_UUID else 0)
        if flags & pdu.PFC_FIRST_FRAG:
            joining[call_id] = [raw[:head], bytearray()]
        joining[call_id][1] += raw[head:]
        if not flags & pdu.PFC_LAST_FRAG:
            continue
        first, stub = joining.pop(call_id)
        _, ctx_id, opnum = _REQUEST_BODY.unpack_from(first, 16)
        chunks = [stub[i:i + size] for i in range(0, len(stub), size)] or [b""]
        for n, chunk in enumerate(chunks):
            new_flags = (flags & pdu.PFC_OBJECT_UUID) | (pdu.PFC_FIRST_FRAG if n == 0 else 0) | (
                pdu.PFC_LAST_FRAG if n == len(chunks) - 1 else 0)
            body = _REQUEST_BODY.pack(len(stub) - n * size, ctx_id, opnum) + first[pdu.REQUEST_HEADER_LEN:head] + chunk
            out.append(_HEADER.pack(ver, minor, ptype, new_flags, drep, 16 + len(body), 0, call_id) + body)
    return b"".join(out)


def facts(events) -> list[tuple]:
    out = []
    for ev in events:
        if type(ev) is RpcCall:
            out.append(("call", ev.call_id, ev.ctx_id, ev.opnum, ev.interface_uuid, ev.stub, ev.sealed))
        elif type(ev) is RpcBind:
            out.append(("bind", ev.ctx_id, ev.interface_uuid, ev.interface_version))
        elif type(ev) is RpcResult:
            out.append(("result", ev.call_id, ev.status))
    return out


def run(turns, rng: random.Random | None = None) -> tuple[list, RpcAssociation]:
    assoc, events = RpcAssociation(wire.FLOW), []
    for from_client, data in turns:
        pos = 0
        while pos < len(data):
            n = len(data) if rng is None else rng.randint(1, 300)
            events += assoc.feed(from_client, 0.0, data[pos:pos + n], 0)
            pos += n
    return events, assoc


PIPES = [(name, i) for name in CAPTURES for i in range(len(pipe_streams(name)))]


@pytest.mark.parametrize("name", CAPTURES)
def test_every_capture_has_netdfs_requests_on_a_pipe(name):
    calls = [f for turns in pipe_streams(name) for f in facts(run(turns)[0]) if f[0] == "call"]
    assert any(f[4] == wire.NETDFS for f in calls)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipe=st.sampled_from(PIPES), size=st.one_of(st.integers(1, 16), st.integers(17, 6000)),
       seed=st.integers(0, 2**32 - 1))
def test_any_fragment_size_and_chunking_gives_the_same_calls(pipe, size, seed):
    turns = pipe_streams(pipe[0])[pipe[1]]
    baseline, _ = run(turns)
    refragmented = [(c, refragment(d, size) if c else d) for c, d in turns]
    events, assoc = run(refragmented, random.Random(seed))
    assert facts(events) == facts(baseline)
    assert not [e for e in events if type(e).__name__ == "Anomaly"]


def test_alter_context_and_context_id_juggling():
    """ctx 0 bound to srvsvc; alter_context adds ctx 1 = netdfs, then re-binds ctx 0 to netdfs
    and ctx 1 to lsarpc: each request is named by what its context meant when it was sent."""
    stub = b"\x00" * 8
    assoc = RpcAssociation(wire.FLOW)
    seq = [
        (True, wire.bind(1, [(0, wire.SRVSVC, (3, 0), wire.NDR20)])),
        (False, wire.bind_ack(1, [(0, wire.NDR20)])),
        (True, wire.request(2, 12, stub, ctx_id=0)),
        (True, wire.bind(3, [(1, wire.NETDFS, (3, 0), wire.NDR20)], alter=True)),
        (False, wire.bind_ack(3, [(0, wire.NDR20)], alter=True)),
        (True, b"".join(wire.fragments(4, 12, stub * 4, 5, ctx_id=1))),
        (True, wire.bind(5, [(0, wire.NETDFS, (3, 0), wire.NDR20), (1, wire.LSARPC, (0, 0), wire.NDR20)], alter=True)),
        (False, wire.bind_ack(5, [(0, wire.NDR20), (0, wire.NDR20)], alter=True)),
        (True, wire.request(6, 13, stub, ctx_id=0)),
        (True, wire.request(7, 13, stub, ctx_id=1)),
    ]
    calls = [e for c, d in seq for e in assoc.feed(c, 0.0, d, 0) if type(e) is RpcCall]
    assert [(c.call_id, c.ctx_id, c.opnum, c.interface_uuid) for c in calls] == [
        (2, 0, 12, wire.SRVSVC), (4, 1, 12, wire.NETDFS), (6, 0, 13, wire.NETDFS), (7, 1, 13, wire.LSARPC)]
    assert calls[1].stub == stub * 4
