"""The bulk lane: frames of bulk SMB data accounted by length, before any decoding.

On a file server nearly every packet is SMB2 READ/WRITE data lying wholly inside a payload
the NetBIOS stage has already decided to skip. While a flow is in that state the lane holds,
per direction, the raw 12-byte IPv4 address+port slice of its frames (no unpacking, no
FlowKey hashing) -> the next expected sequence number and how many bytes it may still skip.
A frame is admitted (counted and dropped) only when the slow path would have done nothing
with it but advance the same counters:

- untagged Ethernet, option-less unfragmented IPv4, TCP with ACK and no SYN/FIN/RST;
- its seq is exactly the next expected one and its payload fits in the skip budget (so the
  TCP direction would deliver it in order, and NetBIOS skip it whole);
- it acknowledges nothing beyond what the peer direction has sent (so the peer's
  ACK-proven-loss logic has nothing to do; an ACK past a hole takes the slow path);
- the capture time is before the pipeline's next timed work (flow and held-call expiry).

Anything else takes the slow path, which first hands the flow back (``release``): the TCP
directions' next offsets and the NetBIOS skip counters advance by what the lane consumed,
so the slow path resumes exactly where it would have been. The lane is armed only when
both directions have no out-of-order data, no FIN, and no acknowledgement past their next
byte, so nothing the lane skips over could have changed what the TCP stage does.
"""
from __future__ import annotations

import struct
from typing import Hashable, Protocol

from sensor.net.flows import Flow
from sensor.net.tcp import UNSET

SEQ_MASK = (1 << 32) - 1
HALF_SEQ_SPACE = 1 << 31
# (The constants below are C constants in the compiled core, lane.pxd: no module imports them.)
# Frame layout read by ``FrameHeaders.read`` (offsets from the frame's start): Ethernet type,
# IPv4 ver/ihl, total length, flags/fragment offset, protocol; TCP seq, ack, data offset, flags.
ETHERTYPE_AT, VER_IHL_AT, TOTAL_AT, FRAG_AT, PROTO_AT = 12, 14, 16, 20, 23
SEQ_AT, ACK_AT, DATA_OFFSET_AT, FLAGS_AT = 38, 42, 46, 47
IP_START = 14                         # Ethernet header
TCP_START = 34                        # Ethernet 14 + IPv4 20
KEY_START, KEY_END = 26, 38          # IPv4 source, destination, TCP source, destination port
MIN_FRAME = 54                        # Ethernet 14 + IPv4 20 + TCP 20
PORTS = struct.Struct("!HH")
ETHERTYPE_IPV4 = 0x0800
IPV4_NO_OPTIONS = 0x45
IPPROTO_TCP = 6
# TCP flags (RFC 9293 3.1) the lane looks at: only ACK may be set among these.
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
CONTROL_FLAGS = FIN | SYN | RST | ACK


def be32(buf, at: int) -> int:
    """The big-endian (network order) 32-bit unsigned integer at ``buf[at:at + 4]``; one
    byte at a time so that the compiled core adds in a 64-bit C integer."""
    value = buf[at]
    value = value << 8 | buf[at + 1]
    value = value << 8 | buf[at + 2]
    return value << 8 | buf[at + 3]


class FrameHeaders:
    """What the bulk lane and the SMB fast path read of a frame, read in place from the
    capture's buffer into one object reused frame after frame (no tuple; one slice, the key)."""

    __slots__ = ("key", "seq", "ack", "payload", "end")

    def __init__(self) -> None:
        self.key = b""              # the raw IPv4 address+port slice both look flows up by
        self.seq = self.ack = 0     # TCP sequence and acknowledgement numbers
        self.payload = self.end = 0     # where the TCP payload starts and ends in the buffer

    def read(self, buf, start: int, end: int) -> bool:
        """The frame at ``buf[start:end]``: True, with the fields set, if it is untagged
        Ethernet, option-less unfragmented IPv4, TCP with ACK and none of SYN/FIN/RST, whose
        IP length fits in the frame and TCP header in the IP length."""
        if end - start < MIN_FRAME:
            return False
        total = buf[start + TOTAL_AT] << 8 | buf[start + TOTAL_AT + 1]
        offset = buf[start + DATA_OFFSET_AT]
        if ((buf[start + ETHERTYPE_AT] << 8 | buf[start + ETHERTYPE_AT + 1]) != ETHERTYPE_IPV4
                or buf[start + VER_IHL_AT] != IPV4_NO_OPTIONS or buf[start + PROTO_AT] != IPPROTO_TCP
                or buf[start + FRAG_AT] & 0x3F or buf[start + FRAG_AT + 1]
                or buf[start + FLAGS_AT] & CONTROL_FLAGS != ACK or total > end - start - IP_START
                or offset < 0x50):
            return False
        payload = start + TCP_START + (offset >> 4) * 4
        frame_end = start + IP_START + total
        if payload > frame_end:
            return False
        self.payload = payload
        self.end = frame_end
        self.key = buf[start + KEY_START:start + KEY_END]
        self.seq = be32(buf, start + SEQ_AT)
        self.ack = be32(buf, start + ACK_AT)
        return True


class Skipper(Protocol):
    """The stage that knows how many bytes of a direction it will skip (SmbConnection)."""

    def skip_remaining(self, from_client: bool) -> int: ...

    def take_skip(self, from_client: bool, n: int) -> None: ...


class _Direction:
    __slots__ = ("key", "seq", "budget", "taken", "tcp", "from_client", "peer", "flow",
                 "skipper", "owner")

    def __init__(self, key: bytes, flow: Flow, from_client: bool, skipper: Skipper, owner: Hashable):
        self.key = key
        self.tcp = flow.client if from_client else flow.server
        self.seq = self.tcp.next & SEQ_MASK        # next expected sequence number
        self.budget = self.taken = skipper.skip_remaining(from_client)
        self.from_client = from_client
        self.flow = flow
        self.skipper = skipper
        self.owner = owner
        self.peer: _Direction | None = None


class BulkLane:
    def __init__(self) -> None:
        self.entries: dict[bytes, _Direction] = {}
        self._owners: dict[Hashable, tuple[_Direction, _Direction]] = {}
        # Capture time from which frames go the slow path (its timed work must see them).
        self.until = 0.0
        self.packets = 0        # frames admitted
        self.bytes = 0          # payload bytes admitted (counted when handed back)

    def admit(self, ts: float, frame: FrameHeaders) -> bool:
        """One frame (its headers read): True if it was accounted here and must not go further."""
        entry = self.entries.get(frame.key)
        if entry is None or ts >= self.until:
            return False
        if frame.seq != entry.seq or (entry.peer.seq - frame.ack) & SEQ_MASK >= HALF_SEQ_SPACE:
            return False
        size = frame.end - frame.payload
        if size > entry.budget:
            return False
        if size:
            entry.seq = (frame.seq + size) & SEQ_MASK
            entry.budget -= size
        entry.flow.last_ts = ts
        self.packets += 1
        return True

    def arm(self, flow: Flow, skipper: Skipper, owner: Hashable) -> None:
        """Put a flow on the lane if a direction is skipping and TCP has nothing pending."""
        if owner in self._owners or flow.closing:
            return
        if not (skipper.skip_remaining(True) or skipper.skip_remaining(False)):
            return
        for tcp in (flow.client, flow.server):
            if tcp.next == UNSET or tcp.buffered or tcp.fin_at != UNSET or tcp.acked > tcp.next:
                return
        client_key, server_key = flow.keys
        if len(client_key[0]) != 4:
            return          # IPv6: its frames never match the IPv4 slice
        client = _Direction(_raw_key(client_key), flow, True, skipper, owner)
        server = _Direction(_raw_key(server_key), flow, False, skipper, owner)
        client.peer, server.peer = server, client
        self.entries[client.key] = client
        self.entries[server.key] = server
        self._owners[owner] = (client, server)

    def holds(self, owner: Hashable) -> bool:
        """Is this flow on the lane (its frames' TCP state is the lane's until released)?"""
        return owner in self._owners

    def release_segment(self, src: bytes, dst: bytes, sport: int, dport: int) -> Hashable | None:
        """A frame of this 4-tuple takes the slow path: hand its flow back first. Returns the
        flow's owner if it was on the lane."""
        entry = self.entries.get(src + dst + PORTS.pack(sport, dport))
        if entry is None:
            return None
        self.release(entry.owner)
        return entry.owner

    def release(self, owner: Hashable) -> None:
        """Hand a flow back: TCP next offsets and skip counters advance by what was consumed."""
        pair = self._owners.pop(owner, None)
        if pair is None:
            return
        for entry in pair:
            del self.entries[entry.key]
            used = entry.taken - entry.budget
            if used:
                entry.tcp.next += used
                entry.skipper.take_skip(entry.from_client, used)
                self.bytes += used


def _raw_key(key: tuple) -> bytes:
    src, dst, sport, dport = key
    return src + dst + PORTS.pack(sport, dport)
