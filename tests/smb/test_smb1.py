"""SMB1 pipe tracking on messages built by MS-CIFS, and on a public capture."""
import struct

from sensor.anomaly import Anomaly
from sensor.net.stream import FlowKey
from sensor.smb.connection import SmbConnection
from sensor.smb.events import PipeClosed, PipeOpened, SmbSession

from .conftest import FLOW, nbss, pipe_bytes, play, run_capture

UID, TID, PID = 0x0800, 0x0801, 0xFEFF
FID_A, FID_B = 0x4000, 0x4001
FLOW_139 = FlowKey("10.0.0.1", 50001, "10.0.0.10", 139)


def smb1(command, mid, words, data, *, reply=False, status=0, tid=TID, uid=UID):
    header = struct.pack("<4sBIBHH8sHHHHH", b"\xffSMB", command, status, 0x98 if reply else 0x18,
                         0xC807, 0, b"\0" * 8, 0, tid, PID, uid, mid)
    return header + bytes([len(words) // 2]) + words + struct.pack("<H", len(data)) + data


def utf16z(text):
    return (text + "\0").encode("utf-16-le")


def tree_connect(mid):
    return smb1(0x75, mid, struct.pack("<BBHHH", 0xFF, 0, 0, 0, 1), b"\0" + utf16z("\\\\10.0.0.10\\IPC$") + b"?????\0", tid=0)


def tree_connect_reply(mid):
    return smb1(0x75, mid, struct.pack("<BBHH", 0xFF, 0, 0, 1), b"IPC\0", reply=True)


def nt_create(mid, name):
    raw = utf16z(name)
    words = struct.pack("<BBHBHIIIQIIIIIB", 0xFF, 0, 0, 0, len(raw) - 2, 0, 0, 0x2019F, 0, 0, 3, 1, 0, 2, 0)
    return smb1(0xA2, mid, words, b"\0" + raw)   # pad: unicode names align to 2 from the header


def nt_create_reply(mid, fid):
    return smb1(0xA2, mid, struct.pack("<BBHBH", 0xFF, 0, 0, 0, fid) + b"\0" * 61, b"", reply=True)


def write_andx(mid, fid, data, mode=0):
    words = struct.pack("<BBHHIIHHHHHI", 0xFF, 0, 0, fid, 0, 0, mode, len(data), 0, len(data), 64, 0)
    return smb1(0x2F, mid, words, b"\0" + data)


def read_andx(mid, fid):
    return smb1(0x2E, mid, struct.pack("<BBHHIHHIHI", 0xFF, 0, 0, fid, 0, 1024, 1024, 0, 0, 0), b"")


def read_andx_reply(mid, data, status=0):
    words = struct.pack("<BBHHHHHHH", 0xFF, 0, 0, 0xFFFF, 0, 0, len(data), 60, 0) + b"\0" * 8
    return smb1(0x2E, mid, words, b"\0" + data, reply=True, status=status)


def transact_nmpipe(mid, fid, data):
    words = struct.pack("<HHHHBBHIHHHHHBBHH", 0, len(data), 0, 1024, 0, 0, 0, 0, 0, 0, 84, len(data), 84, 2, 0, 0x26, fid)
    return smb1(0x25, mid, words, b"\0" + utf16z("\\PIPE\\") + b"\0\0" + data)


def transact_reply(mid, data):
    words = struct.pack("<HHHHHHHHHBB", 0, len(data), 0, 0, 56, 0, len(data), 56, 0, 0, 0)
    return smb1(0x25, mid, words, b"\0" + data, reply=True)


def close(mid, fid):
    return smb1(0x04, mid, struct.pack("<HI", fid, 0), b"")


SCRIPT = [
    (True, tree_connect(1)), (False, tree_connect_reply(1)),
    (True, nt_create(2, "\\netdfs")), (False, nt_create_reply(2, FID_A)),
    (True, nt_create(3, "\\lsarpc")), (False, nt_create_reply(3, FID_B)),
    # Samba's rule: raw mode + message start put a 2-byte message length before the data.
    (True, write_andx(4, FID_A, struct.pack("<H", 11) + b"\x05\x00\x0bbind-A", mode=0x000C)),
    (True, transact_nmpipe(5, FID_B, b"\x05\x00\x00call-B")),
    (False, transact_reply(5, b"\x05\x00\x02resp-B")),
    (True, read_andx(6, FID_A)),
    (False, read_andx_reply(6, b"\x05\x00\x0cack-A", status=0x80000005)),
    (True, close(7, FID_A)),
]
PIPE_A, PIPE_B = (1, UID, TID, FID_A), (1, UID, TID, FID_B)


def test_two_fids_at_once_write_read_and_transact():
    conn = SmbConnection(FLOW)
    events = play(conn, SCRIPT)
    assert [(e.pipe, e.name, e.tree) for e in events if isinstance(e, PipeOpened)] == [
        (PIPE_A, "netdfs", "\\\\10.0.0.10\\IPC$"), (PIPE_B, "lsarpc", "\\\\10.0.0.10\\IPC$")]
    assert pipe_bytes(events, True) == {PIPE_A: b"\x05\x00\x0bbind-A", PIPE_B: b"\x05\x00\x00call-B"}
    assert pipe_bytes(events, False) == {PIPE_B: b"\x05\x00\x02resp-B", PIPE_A: b"\x05\x00\x0cack-A"}
    assert [e for e in events if isinstance(e, PipeClosed)] == [PipeClosed(FLOW, 1.0, PIPE_A)]
    assert not [e for e in events if isinstance(e, Anomaly)]
    assert conn.close(2.0) == [PipeClosed(FLOW, 2.0, PIPE_B)]


def test_port_139_session_request_then_one_byte_feeds():
    # RFC 1002 4.3.2: SESSION REQUEST (called, calling names), POSITIVE RESPONSE, KEEPALIVE.
    names = b" CKFDENECFDEFFCFGEFFCCACACACACACA\0" * 2
    conn = SmbConnection(FLOW_139)
    events = conn.feed(True, 1.0, b"\x81\x00\x00\x44" + names, 1)
    events += conn.feed(False, 1.0, b"\x82\x00\x00\x00\x85\x00\x00\x00", 2)
    events += play(conn, SCRIPT, chunk=1)
    assert events == play(SmbConnection(FLOW_139), SCRIPT)
    assert conn.stats["nbss_type_0x81"] == 1 and conn.stats["nbss_type_0x85"] == 1


def test_andx_offset_pointing_back_is_a_loop():
    words = struct.pack("<BBHHIHHIHI", 0x2E, 0, 32, FID_A, 0, 1024, 1024, 0, 0, 0)
    conn = SmbConnection(FLOW)
    events = conn.feed(True, 1.0, nbss(smb1(0x2E, 9, words, b"")), 1)
    assert [e.name for e in events] == ["smb1_andx_loop"]


def test_corpus_raw_ntlm_in_smb1_names_and_pipes(corpus):
    events, _ = run_capture(corpus / "zeek/testing/btest/Traces/smb/raw_ntlm_in_smb.pcap")
    [session] = [e for e in events if isinstance(e, SmbSession)]
    assert (session.dialect, session.user, session.domain, session.workstation) == (
        "SMB1", "test", "TEST-F7DFBC3FE9", "BABYBOOK")
    opened = [e for e in events if isinstance(e, PipeOpened)]
    assert [e.name for e in opened] == ["srvsvc", "lsarpc"]
    assert len({e.pipe for e in opened}) == 2
    for pipe, data in pipe_bytes(events, True).items():
        assert data[:3] == b"\x05\x00\x0b"     # each pipe starts with its DCE/RPC bind


def transact_nmpipe_first(mid, fid, data, total):
    """A TransactNmPipe whose TotalDataCount (``total``) is more than the data it carries."""
    words = struct.pack("<HHHHBBHIHHHHHBBHH", 0, total, 0, 1024, 0, 0, 0, 0, 0, 0, 84, len(data), 84, 2, 0, 0x26, fid)
    return smb1(0x25, mid, words, b"\0" + utf16z("\\PIPE\\") + b"\0\0" + data)


def trans_secondary(mid, data, total, displacement):
    # MS-CIFS 2.2.4.34.1: 8 words; the data right after the byte count (header 32 + 1 + 16 + 2).
    words = struct.pack("<HHHHHHHH", 0, total, 0, 0, 0, len(data), 51, displacement)
    return smb1(0x26, mid, words, data)


def test_transaction_secondary_carries_the_rest_of_the_pipe_write():
    first, rest = b"\x05\x00\x00\x03" + b"A" * 20, b"B" * 30
    conn = SmbConnection(FLOW)
    events = play(conn, SCRIPT[:6] + [
        (True, transact_nmpipe_first(9, FID_B, first, len(first) + len(rest))),
        (True, trans_secondary(9, rest, len(first) + len(rest), len(first))),
        (False, transact_reply(9, b"\x05\x00\x02resp")),
    ])
    assert pipe_bytes(events, True) == {PIPE_B: first + rest}
    assert pipe_bytes(events, False) == {PIPE_B: b"\x05\x00\x02resp"}
    assert not [e for e in events if isinstance(e, Anomaly)]


def test_mid_reused_by_concurrent_requests_of_different_commands():
    # suricata-verify smb-filename: CLOSE, TREE_CONNECT and NT_CREATE all outstanding with MID 0.
    conn = SmbConnection(FLOW)
    events = play(conn, [
        (True, tree_connect(0)), (True, nt_create(0, "\\netdfs")), (True, close(0, FID_B)),
        (False, tree_connect_reply(0)), (False, nt_create_reply(0, FID_A)),
        (True, write_andx(1, FID_A, b"\x05\x00\x0bbind")),
    ])
    assert [(e.pipe, e.name) for e in events if isinstance(e, PipeOpened)] == [(PIPE_A, "netdfs")]
    assert not [e for e in events if isinstance(e, Anomaly)]
