"""One fuzz target per stage entry. Each takes arbitrary bytes, drives the stage as the
pipeline does (feed, then close) and must return without raising: every exception out of a
target is a finding. Shared by the bounded CI run (tests/fuzz) and the long atheris run
(fuzz/run_atheris.py)."""
from __future__ import annotations

import os
import struct
import tempfile

from sensor.capture.pcapfile import CaptureError, open_capture
from sensor.dcerpc.association import RpcAssociation
from sensor.dcerpc.events import RpcCall
from sensor.event_builder import decode_arguments
from sensor.interfaces.catalog import default_catalog
from sensor.interfaces.decode import looks_like
from sensor.net.frames import FrameDecoder
from sensor.net.stream import FlowKey
from sensor.pipeline import Pipeline
from sensor.smb.connection import SmbConnection

FLOW = FlowKey("10.0.0.5", 49152, "10.0.0.10", 445)
LINKTYPES = (0, 1, 12, 101, 108, 113, 276)   # null, Ethernet, raw, raw, loop, SLL, SLL2
_U16 = struct.Struct("!H")
_CATALOG = default_catalog()
_OPS = [op for iface in _CATALOG.by_uuid.values() for op in iface.operations.values() if op.request is not None]


def records(data: bytes) -> list[tuple[bool, bytes]]:
    """Split fuzz input into (flag, chunk) records: a 2-byte header (top bit = flag, the rest the
    length) then the chunk. Lets one input be a sequence of frames, segments or writes."""
    out, pos = [], 0
    while pos < len(data):
        if pos + 2 > len(data):
            out.append((False, data[pos:]))
            break
        head = _U16.unpack_from(data, pos)[0]
        n = head & 0x7FFF
        out.append((bool(head & 0x8000), data[pos + 2:pos + 2 + n]))
        pos += 2 + n
    return out


def pack_records(items: list[tuple[bool, bytes]]) -> bytes:
    """The inverse of ``records``, for building seeds."""
    return b"".join(_U16.pack((0x8000 if flag else 0) | len(chunk)) + chunk for flag, chunk in items)


def frames(data: bytes) -> None:
    """FrameDecoder.feed on one frame under every link type (IPv4/IPv6 fragments included)."""
    dec = FrameDecoder()
    for linktype in LINKTYPES:
        dec.feed(0.0, linktype, data)
    dec.close(0.0)


def pipeline(data: bytes) -> None:
    """The whole Pipeline over a sequence of Ethernet frames: frames, TCP, flows and all above."""
    pipe = Pipeline()
    for i, (_, frame) in enumerate(records(data), 1):
        pipe.feed(1_700_000_000.0 + i * 0.01, 1, frame, i)
    pipe.close()


def smb(data: bytes) -> None:
    """SmbConnection (NetBIOS, SMB1, SMB2, NTLMSSP) over client (flag set) and server writes."""
    conn = SmbConnection(FLOW)
    for i, (from_client, chunk) in enumerate(records(data)):
        if not chunk:
            conn.gap(from_client, 0.0, 1 + i)
        else:
            conn.feed(from_client, 0.0, chunk, i)
    conn.close(0.0)


def dcerpc(data: bytes) -> None:
    """RpcAssociation over client (flag set) and server bytes; an empty record is a gap."""
    assoc = RpcAssociation(FLOW)
    for i, (from_client, chunk) in enumerate(records(data)):
        if not chunk:
            assoc.gap(from_client, 0.0, 1 + i)
        else:
            assoc.feed(from_client, 0.0, chunk, i)
    assoc.close(0.0)


def ndr(data: bytes) -> None:
    """One catalogued request decoder and looks_like on the rest of the bytes as a stub. The
    first byte picks the operation (its high bits) and the byte order (bit 0), so each input
    costs one decode and the fuzzer still reaches every decoder."""
    if not data:
        return
    op = _OPS[(data[0] >> 1) % len(_OPS)]
    little = not data[0] & 1
    stub = data[1:]
    call = RpcCall(0.0, 0, 1, 0, op.opnum, None, None, stub, little, None, None, False)
    decode_arguments(op, call)
    looks_like(op, stub, little)


def ndr_input(opnum: int, little: bool, stub: bytes) -> bytes:
    """The ``ndr`` target's input that decodes ``stub`` as ``opnum``'s request (for seeds)."""
    index = next(i for i, op in enumerate(_OPS) if op.opnum == opnum)
    return bytes([index << 1 | (not little)]) + stub


def capture_file(data: bytes) -> None:
    """open_capture + iteration over the bytes as a file (pcap, pcapng, gzip), then the replay's
    batch entry over the same file: the reader counts and reports the same either way."""
    fd, path = tempfile.mkstemp(prefix="fuzz-capture-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            reader = open_capture(path)
        except CaptureError:
            return
        with reader:
            for _ in reader:
                pass
        with open_capture(path) as batched:
            for _ in batched.replay_into(Pipeline()):
                pass
        assert (batched.stats, batched.problems) == (reader.stats, reader.problems)
    finally:
        os.unlink(path)


TARGETS = {f.__name__: f for f in (frames, pipeline, smb, dcerpc, ndr, capture_file)}
