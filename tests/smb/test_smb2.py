"""SMB2 pipe tracking on messages built by MS-SMB2, and on frames of public captures."""
import struct

from impacket import ntlm

from sensor.anomaly import Anomaly
from sensor.smb.connection import SmbConnection
from sensor.smb.events import EncryptedMessage, NtlmAuthentication, PipeClosed, PipeData, PipeOpened, SmbSession

from .conftest import FLOW, compound, nbss, pipe_bytes, play, run_capture, smb2_header
from .test_ntlmssp import CHALLENGE

NEGOTIATE, SESSION_SETUP, TREE_CONNECT, CREATE, CLOSE, READ, WRITE, IOCTL = 0, 1, 3, 5, 6, 8, 9, 11
FID = bytes(range(1, 17))
DISK_FID = b"\xd0" * 16
RPC_BIND = b"\x05\x00\x0b\x03\x10\x00\x00\x00" + b"B" * 64


def negotiate_response(dialect):
    return smb2_header(NEGOTIATE, 0, response=True) + struct.pack("<HHH", 65, 1, dialect) + b"\0" * 58


def session_setup(mid, blob, *, response=False, status=0, session_flags=0):
    if response:
        body = struct.pack("<HHHH", 9, session_flags, 72, len(blob))
    else:
        body = struct.pack("<HBBIIHHQ", 25, 0, 1, 0, 0, 88, len(blob), 0)
    return smb2_header(SESSION_SETUP, mid, response=response, status=status) + body + blob


def tree_connect(mid, path, tree_id, share_type=None):
    if share_type is not None:
        return smb2_header(TREE_CONNECT, mid, response=True, tree_id=tree_id) + struct.pack("<HBBIII", 16, share_type, 0, 0, 0, 0x1F01FF)
    raw = path.encode("utf-16-le")
    return smb2_header(TREE_CONNECT, mid, tree_id=0) + struct.pack("<HHHH", 9, 0, 72, len(raw)) + raw


def create(mid, name, tree_id=5, **kw):
    raw = name.encode("utf-16-le")
    return smb2_header(CREATE, mid, tree_id=tree_id, **kw) + struct.pack(
        "<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, 0x12019F, 0, 3, 1, 0, 120, len(raw), 0, 0) + raw


def create_response(mid, fid, **kw):
    return smb2_header(CREATE, mid, response=True, **kw) + struct.pack("<HBBI", 89, 0, 0, 1) + b"\0" * 56 + fid + b"\0" * 8


def write(mid, fid, data, **kw):
    return smb2_header(WRITE, mid, **kw) + struct.pack("<HHIQ16sIIHHI", 49, 112, len(data), 0, fid, 0, 0, 0, 0, 0) + data


def write_response(mid, n, **kw):
    return smb2_header(WRITE, mid, response=True, **kw) + struct.pack("<HHIII", 17, 0, n, 0, 0)


def read(mid, fid, **kw):
    return smb2_header(READ, mid, **kw) + struct.pack("<HBBIQ16sIIIHH", 49, 0, 0, 4280, 0, fid, 0, 0, 0, 0, 0) + b"\0"


def read_response(mid, data, status=0, **kw):
    return smb2_header(READ, mid, response=True, status=status, **kw) + struct.pack("<HBBIII", 17, 80, 0, len(data), 0, 0) + data


def ioctl(mid, fid, data, ctl=0x0011C017):
    return smb2_header(IOCTL, mid) + struct.pack("<HHI16sIIIIIIII", 57, 0, ctl, fid, 120, len(data), 0, 0, 0, 4280, 1, 0) + data


def ioctl_response(mid, fid, data, ctl=0x0011C017):
    return smb2_header(IOCTL, mid, response=True) + struct.pack("<HHI16sIIIIII", 49, 0, ctl, fid, 112, 0, 112, len(data), 0, 0) + data


def close(mid, fid, response=False, **kw):
    if response:
        return smb2_header(CLOSE, mid, response=True) + struct.pack("<HH", 60, 0) + b"\0" * 56
    return smb2_header(CLOSE, mid, **kw) + struct.pack("<HHI16s", 24, 0, 0, fid)


def login_and_open(name="netdfs"):
    """(from_client, message) up to an open pipe ``name`` on IPC$ (tree 5) and a disk tree 6."""
    type1 = ntlm.getNTLMSSPType1("WS7", "CORP")
    type3, _ = ntlm.getNTLMSSPType3(type1, CHALLENGE, "alice", "Passw0rd", "CORP")
    return [
        (False, negotiate_response(0x0311)),
        (True, session_setup(1, type1.getData())),
        (False, session_setup(1, CHALLENGE, response=True, status=0xC0000016)),
        (True, session_setup(2, type3.getData())),
        (False, session_setup(2, b"", response=True)),
        (True, tree_connect(3, "\\\\10.0.0.10\\IPC$", 0)),
        (False, tree_connect(3, None, 5, share_type=2)),
        (True, tree_connect(4, "\\\\10.0.0.10\\C$", 0)),
        (False, tree_connect(4, None, 6, share_type=1)),
        (True, create(5, name)),
        (False, create_response(5, FID)),
    ]


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


PIPE = (2, 0x1111, 5, FID)


def test_session_pipe_open_write_read_overflow_close():
    script = login_and_open() + [
        (True, write(6, FID, RPC_BIND)),
        (False, write_response(6, len(RPC_BIND))),
        (True, read(7, FID)),
        # MS-SMB2 3.3.4.4: a partial message read answers STATUS_BUFFER_OVERFLOW with data.
        (False, read_response(7, b"\x05\x00\x0c-part1", status=0x80000005)),
        (True, read(8, FID)),
        (False, read_response(8, b"-part2")),
        (True, close(9, FID)),
        (False, close(9, FID, response=True)),
    ]
    conn = SmbConnection(FLOW)
    events = play(conn, script)
    [session] = of(events, SmbSession)
    assert (session.user, session.domain, session.workstation, session.ntlm_version) == ("alice", "CORP", "WS7", "NTLMv2")
    assert (session.dialect, session.server_netbios_name, session.server_dns_name, session.server_netbios_domain) == (
        "3.1.1", "DC01", "dc01.corp.local", "CORP")
    [opened] = of(events, PipeOpened)
    assert (opened.pipe, opened.name, opened.tree) == (PIPE, "netdfs", "\\\\10.0.0.10\\IPC$")
    assert pipe_bytes(events, True) == {PIPE: RPC_BIND}
    assert pipe_bytes(events, False) == {PIPE: b"\x05\x00\x0c-part1-part2"}
    assert of(events, PipeClosed) == [PipeClosed(FLOW, 1.0, PIPE)]
    assert not of(events, Anomaly)
    # Split at every byte boundary: the same events.
    assert play(SmbConnection(FLOW), script, chunk=1) == events


def test_related_compound_inherits_the_created_file_id():
    # MS-SMB2 3.3.5.2.7.2: CREATE + WRITE + READ + CLOSE, the last three with FileId all ones.
    related = dict(flags=4)
    ff = b"\xff" * 16
    request = compound(create(10, "lsarpc"), write(11, ff, RPC_BIND, **related),
                       read(12, ff, **related), close(13, ff, **related))
    response = compound(create_response(10, FID), write_response(11, len(RPC_BIND)),
                        read_response(12, b"\x05\x00\x0c"), close(13, FID, response=True))
    conn = SmbConnection(FLOW)
    events = play(conn, login_and_open()[:9] + [(True, request), (False, response)])
    kinds = [type(e).__name__ for e in events if not isinstance(e, (SmbSession, NtlmAuthentication))]
    assert kinds == ["PipeOpened", "PipeData", "PipeData", "PipeClosed"]
    assert of(events, PipeOpened)[0].name == "lsarpc"
    assert pipe_bytes(events, True) == {PIPE: RPC_BIND}
    assert pipe_bytes(events, False) == {PIPE: b"\x05\x00\x0c"}


def test_ioctl_transceive_and_async_interim_then_final():
    script = login_and_open() + [
        (True, ioctl(6, FID, RPC_BIND)),
        (False, ioctl_response(6, FID, b"\x05\x00\x0c-ack")),
        (True, read(7, FID)),
        (False, smb2_header(READ, 7, response=True, status=0x103, async_id=99) + struct.pack("<HBBI", 9, 0, 0, 0) + b"\0"),
        (False, read_response(7, b"late", async_id=99)),
        (True, ioctl(8, FID, b"not a pipe call", ctl=0x00060194)),   # FSCTL_DFS_GET_REFERRALS
    ]
    conn = SmbConnection(FLOW)
    events = play(conn, script)
    assert pipe_bytes(events, True) == {PIPE: RPC_BIND}
    assert pipe_bytes(events, False) == {PIPE: b"\x05\x00\x0c-acklate"}
    assert conn.stats["smb2_async_interim"] == 1 and not of(events, Anomaly)
    # The pipe still open at the end of the flow is closed by close().
    assert conn.close(2.0) == [PipeClosed(FLOW, 2.0, PIPE)]


def test_several_messages_in_one_segment_and_error_response_has_no_data():
    script = login_and_open()
    conn = SmbConnection(FLOW)
    joined = b"".join(nbss(m) for c, m in script if c)
    replies = b"".join(nbss(m) for c, m in script if not c)
    events = conn.feed(True, 1.0, joined, 1) + conn.feed(False, 1.0, replies, 2)
    # Requests all first, then replies: still matched by MessageId.
    assert [e.name for e in of(events, PipeOpened)] == ["netdfs"]
    error = smb2_header(READ, 20, response=True, status=0xC000014B) + struct.pack("<HBBI", 9, 0, 0, 0) + b"\0"
    events = conn.feed(True, 1.0, nbss(read(20, FID)), 3) + conn.feed(False, 1.0, nbss(error), 4)
    assert events == []


def test_bulk_write_on_a_disk_file_is_skipped_and_a_gap_inside_it_is_absorbed():
    conn = SmbConnection(FLOW)
    play(conn, login_and_open() + [(True, create(6, "big.iso", tree_id=6)),
                                    (False, create_response(6, DISK_FID))])
    bulk = nbss(write(7, DISK_FID, b"Z" * 300_000, tree_id=6))
    events = conn.feed(True, 1.0, bulk[:1000], 1)
    events += conn.gap(True, 1.0, 200_000)
    events += conn.feed(True, 1.0, bulk[201_000:], 2)
    events += play(conn, [(True, write(8, FID, RPC_BIND))])
    assert not of(events, Anomaly)
    assert pipe_bytes(events, True) == {PIPE: RPC_BIND}
    assert conn.stats["nbss_gap_bytes_absorbed"] == 200_000
    assert conn.stats["nbss_bytes_skipped"] >= 99_000


def test_gap_in_pipe_data_resyncs_at_the_next_header():
    conn = SmbConnection(FLOW)
    play(conn, login_and_open())
    first = nbss(write(6, FID, b"A" * 500))
    events = conn.feed(True, 1.0, first[:100], 1)
    events += conn.gap(True, 1.0, 300)
    events += conn.feed(True, 1.0, first[400:] + nbss(write(7, FID, RPC_BIND)), 2)
    assert [a.name for a in of(events, Anomaly)] == ["smb_resync"]
    assert pipe_bytes(events, True) == {PIPE: RPC_BIND}


def test_transform_header_counted_and_session_marked_encrypted_once():
    def transform(size):
        return b"\xfdSMB" + b"\x11" * 32 + struct.pack("<IHHQ", size, 0, 1, 0x1111) + b"\xee" * size
    conn = SmbConnection(FLOW)
    play(conn, login_and_open()[:5])
    events = play(conn, [(True, transform(100)), (False, transform(80))])
    assert [(e.from_client, e.session_id, e.original_size, e.wire_size) for e in of(events, EncryptedMessage)] == [
        (True, 0x1111, 100, 156), (False, 0x1111, 80, 136)]
    [session] = of(events, SmbSession)
    assert session.encrypted and session.user == "alice"
    assert conn.stats["smb2_encrypted_messages"] == 2


def test_midstream_garbage_then_message():
    conn = SmbConnection(FLOW)
    events = conn.feed(True, 1.0, b"\x07tail of something" + nbss(create(5, "netdfs")), 1)
    events += conn.feed(False, 1.0, nbss(create_response(5, FID)), 2)
    assert [a.name for a in of(events, Anomaly)] == ["nbss_bad_type", "smb_resync"]
    assert not of(events, PipeOpened)   # tree connect not seen: a pipe-like name is only a candidate
    events = conn.feed(True, 1.1, nbss(write(6, FID, RPC_BIND)), 3)
    [opened] = of(events, PipeOpened)
    assert opened.name == "netdfs" and opened.tree == "" and opened.frame == 3
    assert [d.data for d in of(events, PipeData)] == [RPC_BIND]


def test_pipe_like_file_on_unseen_tree_is_not_a_pipe_unless_it_speaks_dcerpc():
    # zeek smb2readwrite.pcap: "pythonfile" opened on a tree whose connect was not captured.
    conn = SmbConnection(FLOW)
    events = play(conn, [
        (True, create(5, "pythonfile")), (False, create_response(5, FID)),
        (True, write(6, FID, b"print('hello')\n")), (False, write_response(6, 15)),
        (True, read(7, FID)), (False, read_response(7, b"\x05\x00\x0c\x03 not after a DCE/RPC write")),
        (True, write(8, FID, RPC_BIND)),
    ])
    assert not of(events, PipeOpened) and not of(events, PipeData)
    assert conn.stats["smb_pipe_candidates"] == 1 and not conn.stats["smb_pipes_adopted"]


def test_corpus_at_schedule_atsvc_pipe_bytes_equal_in_one_byte_feeds(corpus):
    path = corpus / "zeek/doc/traces/20171220_smb_at_schedule.pcap"
    events, _ = run_capture(path)
    [opened] = of(events, PipeOpened)
    assert opened.name == "atsvc"
    client = pipe_bytes(events, True)[opened.pipe]
    assert client[:3] == b"\x05\x00\x0b"                 # DCE/RPC bind
    assert pipe_bytes(events, False)[opened.pipe][:3] == b"\x05\x00\x0c"
    events_1, _ = run_capture(path, chunk=1)
    assert pipe_bytes(events_1, True) == pipe_bytes(events, True)
    assert of(events_1, PipeOpened) == of(events, PipeOpened)


def test_corpus_smb3_encrypted_session(corpus):
    events, conns = run_capture(corpus / "zeek/testing/btest/Traces/smb/smb3.pcap")
    assert len(of(events, EncryptedMessage)) == 44          # tshark: 44 transform headers
    assert any(s.encrypted for s in of(events, SmbSession))
    assert not of(events, PipeData)


def test_corpus_ntlmssp_names_match_tshark(corpus):
    events, _ = run_capture(corpus / "suricata-verify/tests/smb2-ntlmssp-order/smb2.pcap")
    [session] = of(events, SmbSession)
    # tshark: ntlmssp.auth.username SERVER01, hostname Administrator, domain CONTOSO
    assert (session.user, session.workstation, session.domain, session.dialect) == (
        "SERVER01", "Administrator", "CONTOSO", "2.0.2")
    assert session.server_dns_name == "SERVER002.contoso.com"


def test_midstream_write_on_unseen_handle_is_adopted_only_when_it_carries_dcerpc():
    # The CREATE was before the capture started: only the WRITE and READ of the pipe are seen.
    conn = SmbConnection(FLOW)
    events = play(conn, [
        (True, write(40, FID, RPC_BIND)),
        (False, write_response(40, len(RPC_BIND))),
        (True, read(41, FID)),
        (False, read_response(41, b"\x05\x00\x0c\x03" + b"A" * 60)),
        (True, write(42, DISK_FID, b"just file bytes, not a PDU")),
    ])
    assert not of(events, PipeOpened)
    data = of(events, PipeData)
    assert [(d.from_client, d.data[:3]) for d in data] == [(True, RPC_BIND[:3]), (False, b"\x05\x00\x0c")]
    assert len({d.pipe for d in data}) == 1 and data[0].pipe[3] == FID
    assert conn.stats["smb_pipes_adopted"] == 1


def test_corpus_pipe_like_files_on_a_missed_tree_are_not_pipes(corpus):
    # zeek smb2readwrite.pcap starts after the tree connect; "pythonfile" is a disk file
    # (tshark: plain data in its WRITE), so it must not become a pipe.
    events, conns = run_capture(corpus / "zeek/testing/btest/Traces/smb/smb2readwrite.pcap")
    assert not of(events, PipeOpened) and not of(events, PipeData)
    assert sum(c.stats["smb_pipe_candidates"] for c in conns.values()) == 2
