"""A DCE/RPC bind and NetrDfsAddStdRoot request written to \\PIPE\\netdfs in several SMB
writes, cut at any byte (MS-SMB2 3.2.4.7 / MS-CIFS 2.2.4.43: a pipe write is a byte stream,
message boundaries belong to DCE/RPC): SmbConnection + RpcAssociation give the same call as one
write. SMB2 WRITE and SMB1 WRITE_ANDX."""
from __future__ import annotations

import os

from hypothesis import given, settings, strategies as st

from sensor.dcerpc.association import RpcAssociation
from sensor.dcerpc.events import RpcCall
from sensor.interfaces import dfsnm
from sensor.smb.connection import SmbConnection
from sensor.smb.events import PipeData
from tests.dcerpc import dcerpc_wire as wire
from tests.smb import test_smb1 as smb1
from tests.smb import test_smb2 as smb2
from tests.smb.conftest import FLOW

EXAMPLES = 2000 if os.environ.get("DFS_SENSOR_LONG") else 60


def _payload() -> bytes:
    call = dfsnm.NetrDfsAddStdRoot()
    call["ServerName"] = "10.0.0.66\x00"
    call["RootShare"] = "share\x00"
    call["Comment"] = "x\x00"
    call["ApiFlags"] = 0
    return (wire.bind(1, [(0, wire.NETDFS, (3, 0), wire.NDR20)])
            + wire.request(2, 12, call.getData()))


PAYLOAD = _payload()


def pieces(cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(PAYLOAD)]
    return [PAYLOAD[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def calls_through(conn: SmbConnection, script: list[tuple[bool, bytes]], play) -> list[tuple]:
    assoc = RpcAssociation(FLOW)
    out = []
    for ev in play(conn, script):
        if isinstance(ev, PipeData) and ev.from_client:
            out += assoc.feed(True, ev.ts, ev.data, ev.frame)
    return [(c.call_id, c.opnum, c.interface_uuid, c.stub) for c in out if isinstance(c, RpcCall)]


def smb2_calls(writes: list[bytes]) -> list[tuple]:
    script = smb2.login_and_open("netdfs")
    for i, data in enumerate(writes):
        script += [(True, smb2.write(10 + i, smb2.FID, data)), (False, smb2.write_response(10 + i, len(data)))]
    return calls_through(SmbConnection(FLOW), script, smb2.play)


def smb1_calls(writes: list[bytes]) -> list[tuple]:
    script = smb1.SCRIPT[:4]      # tree connect and the netdfs open (FID_A), with replies
    for i, data in enumerate(writes):
        script.append((True, smb1.write_andx(10 + i, smb1.FID_A, data)))
    return calls_through(SmbConnection(FLOW), script, smb1.play)



def test_one_write_is_the_reference():
    [(call_id, opnum, iface, stub)] = smb2_calls([PAYLOAD])
    assert (call_id, opnum, iface) == (2, 12, wire.NETDFS) and PAYLOAD.endswith(stub)
    assert smb1_calls([PAYLOAD]) == smb2_calls([PAYLOAD])


def test_every_byte_its_own_write():
    one_each = [PAYLOAD[i:i + 1] for i in range(len(PAYLOAD))]
    assert smb2_calls(one_each) == smb2_calls([PAYLOAD])
    assert smb1_calls(one_each) == smb2_calls([PAYLOAD])


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.integers(1, len(PAYLOAD) - 1), min_size=1, max_size=12))
def test_smb2_writes_cut_anywhere(cuts):
    assert smb2_calls(pieces(cuts)) == smb2_calls([PAYLOAD])


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.integers(1, len(PAYLOAD) - 1), min_size=1, max_size=12))
def test_smb1_write_andx_cut_anywhere(cuts):
    assert smb1_calls(pieces(cuts)) == smb2_calls([PAYLOAD])
