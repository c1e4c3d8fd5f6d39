"""Real attack streams out of pcaps/, re-cut into new TCP segments and written back as frames.

The streams are taken with the sensor's own reader, frame decoder and flow table, so what is
re-cut is exactly what the later stages saw. A flow becomes a list of *turns*: the bytes one
side sent before the other side spoke again. Frames are Ethernet/IPv4/TCP built by RFC 791 /
RFC 9293 with struct (checksums zero: the sensor, like a SPAN sensor must, does not check them).
"""
from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from sensor.capture.pcapfile import open_capture
from sensor.events import RpcCallEvent
from sensor.net.flows import FlowTable
from sensor.net.frames import LINKTYPE_ETHERNET, FrameDecoder
from sensor.net.stream import FlowKey, StreamData
from sensor.pipeline import Pipeline

SYN, FIN, ACK, PSH = 0x02, 0x01, 0x10, 0x08
_ETHERNET = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_CLIENT_MAC, _SERVER_MAC = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
SEQ_SPACE = 1 << 32


@dataclass
class Flow:
    key: FlowKey
    turns: list[tuple[bool, bytes]]   # (from_client, bytes) in the order the sides spoke


def extract_flows(path: Path) -> list[Flow]:
    """Every flow of an IPv4 capture that the sensor follows, as turns."""
    frames, table = FrameDecoder(), FlowTable()
    flows: dict[FlowKey, Flow] = {}

    def take(units):
        for unit in units:
            if type(unit) is StreamData:
                flow = flows.setdefault(unit.flow, Flow(unit.flow, []))
                data = bytes(unit.data)
                if flow.turns and flow.turns[-1][0] == unit.from_client:
                    flow.turns[-1] = (unit.from_client, flow.turns[-1][1] + data)
                else:
                    flow.turns.append((unit.from_client, data))

    for ts, linktype, data, frame in open_capture(path):
        segment = frames.feed(ts, linktype, data)
        if segment is not None:
            take(table.feed(ts, segment, frame))
    take(table.close(ts))
    return list(flows.values())


@dataclass(frozen=True)
class Segment:
    from_client: bool
    offset: int          # stream offset of the first byte (0 = first byte after the SYN)
    data: bytes
    flags: int = ACK | PSH


def frame(flow: FlowKey, seg: Segment, isn: tuple[int, int], acked: tuple[int, int]) -> bytes:
    """One Ethernet/IPv4/TCP frame. ``isn`` and ``acked`` are (client, server)."""
    c_ip, s_ip = socket.inet_aton(flow.client_ip), socket.inet_aton(flow.server_ip)
    if seg.from_client:
        src, dst, sport, dport, macs = c_ip, s_ip, flow.client_port, flow.server_port, (_SERVER_MAC, _CLIENT_MAC)
        seq, ack = isn[0] + 1 + seg.offset, isn[1] + 1 + acked[1]
    else:
        src, dst, sport, dport, macs = s_ip, c_ip, flow.server_port, flow.client_port, (_CLIENT_MAC, _SERVER_MAC)
        seq, ack = isn[1] + 1 + seg.offset, isn[0] + 1 + acked[0]
    if seg.flags & SYN:
        seq -= 1
    if not seg.flags & ACK:
        ack = 0
    tcp = _TCP.pack(sport, dport, seq % SEQ_SPACE, ack % SEQ_SPACE, 5 << 4, seg.flags, 65535, 0, 0) + seg.data
    ip = _IPV4.pack(0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst) + tcp
    return _ETHERNET.pack(*macs, 0x0800) + ip


def flow_frames(flow: FlowKey, turns_segments: list[list[Segment]], isn: tuple[int, int]) -> list[bytes]:
    """Handshake, each turn's segments (as given: any order, overlap, duplicates), FINs.
    Every segment acknowledges all the peer sent before this turn: never past a hole."""
    sent = [0, 0]   # client, server bytes so far (whole turns)
    out = [frame(flow, Segment(True, 0, b"", SYN), isn, (0, 0)),
           frame(flow, Segment(False, 0, b"", SYN | ACK), isn, (0, 0)),
           frame(flow, Segment(True, 0, b"", ACK), isn, (0, 0))]
    for segments in turns_segments:
        acked = (sent[0], sent[1])
        for seg in segments:
            out.append(frame(flow, seg, isn, acked))
        for seg in segments:
            side = 0 if seg.from_client else 1
            sent[side] = max(sent[side], seg.offset + len(seg.data))
    out.append(frame(flow, Segment(True, sent[0], b"", FIN | ACK), isn, tuple(sent)))
    out.append(frame(flow, Segment(False, sent[1], b"", FIN | ACK), isn, (sent[0], sent[1])))
    return out


def turn_offsets(turns: list[tuple[bool, bytes]]) -> list[int]:
    """The stream offset each turn starts at, in its own direction."""
    sent = {True: 0, False: 0}
    offsets = []
    for from_client, data in turns:
        offsets.append(sent[from_client])
        sent[from_client] += len(data)
    return offsets


def run_frames(frames: list[bytes], t0: float = 1_700_000_000.0) -> tuple[list, object]:
    """The whole Pipeline over frames, 1 ms apart: (records, stats)."""
    pipe = Pipeline()
    records = []
    for i, data in enumerate(frames, 1):
        records.extend(pipe.feed(t0 + i / 1000, LINKTYPE_ETHERNET, data, i))
    records.extend(pipe.close())
    return records, pipe.stats


def event_facts(records) -> list[tuple]:
    """What must not change however the bytes are cut: the call, its arguments, who and where."""
    return [(e.action_rpc_interface_name, e.action_rpc_func_opnum, e.action_rpc_func_name,
             json.loads(e.action_rpc_func_str_call_fields), json.loads(e.action_rpc_func_int_call_fields),
             e.actor_remote_ip, e.actor_remote_port, e.agent_ip, e.agent_port, e.actor_remote_pipe_name,
             e.action_rpc_func_exception_code, e.net_stub_sealed, e.net_smb_user)
            for e in records if isinstance(e, RpcCallEvent)]
