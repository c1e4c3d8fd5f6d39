"""Helpers for the SMB stage tests: SMB messages built by the spec, and TCP payloads cut out
of the public captures (ordered per direction simply: by sequence number, duplicates dropped)
until the project's capture reader and TCP stage are what the tests use."""
from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path

from scapy.utils import RawPcapReader

from sensor.net.stream import FlowKey
from sensor.smb.connection import SmbConnection
from sensor.smb.events import PipeData

FLOW = FlowKey("10.0.0.1", 50000, "10.0.0.10", 445)
SMB_PORTS = (445, 139)


def nbss(message: bytes) -> bytes:
    return struct.pack(">I", len(message)) + message


def play(conn, script, chunk=None, frame=7):
    """Feed (from_client, message) pairs as NetBIOS frames, cut into ``chunk``-byte pieces."""
    events = []
    for from_client, message in script:
        data = nbss(message)
        step = chunk or len(data)
        for i in range(0, len(data), step):
            events += conn.feed(from_client, 1.0, data[i:i + step], frame)
    return events


def smb2_header(command: int, message_id: int, *, response: bool = False, status: int = 0,
                session_id: int = 0x1111, tree_id: int = 5, flags: int = 0,
                next_command: int = 0, async_id: int | None = None) -> bytes:
    flags |= 1 if response else 0
    if async_id is not None:
        flags |= 2
        tail = struct.pack("<Q", async_id)
    else:
        tail = struct.pack("<II", 0, tree_id)
    return (struct.pack("<4sHHIHHIIQ", b"\xfeSMB", 64, 1, status, command, 1, flags,
                        next_command, message_id) + tail + struct.pack("<Q", session_id) + b"\0" * 16)


def compound(*operations: bytes) -> bytes:
    """Chain SMB2 operations: pad each to 8 bytes and set its NextCommand."""
    out = b""
    for i, op in enumerate(operations):
        if i < len(operations) - 1:
            op += b"\0" * (-len(op) % 8)
            op = op[:20] + struct.pack("<I", len(op)) + op[24:]
        out += op
    return out


def tcp_payloads(path: Path):
    """(frame, ts, (client ip, client port, server ip, server port), from_client, payload) of
    the SMB TCP segments of an Ethernet (802.1Q)/IPv4 capture, in sequence order per direction."""
    expected: dict = {}
    out = []
    for frame, (raw, meta) in enumerate(RawPcapReader(str(path)), start=1):
        ts = meta.sec + meta.usec / 1e6 if hasattr(meta, "sec") else meta.tshigh
        ip = 14
        while raw[ip - 2:ip] == b"\x81\x00":   # 802.1Q tags
            ip += 4
        if len(raw) < ip + 20 or raw[ip - 2:ip] != b"\x08\x00":
            continue
        ihl = (raw[ip] & 0xF) * 4
        if raw[ip + 9] != 6:
            continue
        total = struct.unpack_from(">H", raw, ip + 2)[0]
        tcp = ip + ihl
        sport, dport, seq = struct.unpack_from(">HHI", raw, tcp)
        doff = (raw[tcp + 12] >> 4) * 4
        payload = raw[tcp + doff:ip + total]
        if dport in SMB_PORTS:
            key, from_client = (raw[ip + 12:ip + 16], sport, raw[ip + 16:ip + 20], dport), True
        elif sport in SMB_PORTS:
            key, from_client = (raw[ip + 16:ip + 20], dport, raw[ip + 12:ip + 16], sport), False
        else:
            continue
        if not payload:
            continue
        nxt = expected.get((key, from_client))
        if nxt is not None and seq != nxt:
            if (seq - nxt) % 2**32 > 2**31:      # old data: a retransmission
                continue
        expected[(key, from_client)] = (seq + len(payload)) % 2**32
        out.append((frame, ts, key, from_client, bytes(payload)))
    return out


def run_capture(path: Path, chunk: int | None = None):
    """Feed every SMB flow of a capture through its own SmbConnection: (events, connections)."""
    connections: dict = {}
    events = []
    for frame, ts, key, from_client, payload in tcp_payloads(path):
        conn = connections.get(key)
        if conn is None:
            flow = FlowKey(".".join(map(str, key[0])), key[1], ".".join(map(str, key[2])), key[3])
            conn = connections[key] = SmbConnection(flow)
        if chunk:
            for i in range(0, len(payload), chunk):
                events += conn.feed(from_client, ts, payload[i:i + chunk], frame)
        else:
            events += conn.feed(from_client, ts, payload, frame)
    for conn in connections.values():
        events += conn.close(0.0)
    return events, connections


def pipe_bytes(events, from_client: bool) -> dict:
    joined: dict = defaultdict(bytes)
    for e in events:
        if isinstance(e, PipeData) and e.from_client == from_client:
            joined[e.pipe] += e.data
    return joined
