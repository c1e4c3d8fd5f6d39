"""The SMB fast path: an in-order segment of a followed SMB flow, from frame to SMB message in one pass.

On a busy file server nearly every frame is one small SMB message (a CREATE, a CLOSE, a
directory query...) on a connection already followed. The slow path takes it through every
stage: a segment tuple, the flow table's tuple-keyed lookup, the TCP direction, a StreamData,
the pipeline's routing, NetBIOS framing, the connection's item loop. Where each of those
stages would only advance an offset or a counter, this does the same in one function and
hands the payload to the SMB stage. A frame is taken only when (anything else goes the slow
path, from the same state):

- untagged Ethernet, option-less unfragmented IPv4, TCP with ACK and none of SYN/FIN/RST;
- its flow is followed (armed when the flow started), not ending, not on the bulk lane, and
  the flow table's idle scan is not due (so the flow table would do nothing but find it);
- neither direction holds out-of-order data, its ack is within the window (TCP would only
  note it), and a payload starts at exactly the next expected byte (TCP would deliver it as is);
- when its direction's NetBIOS stream is between messages and the payload is whole session
  messages of at most WHOLE_MESSAGE_LIMIT bytes with an SMB protocol id (what the NetBIOS
  stage's own first branch frames, counting each in ``nbss_messages``), the last one perhaps
  cut at the segment's end after its first 8 bytes (the start of a message split over
  segments, kept in the NetBIOS stage's buffer as its ``_frame`` keeps it); or when the
  stream is buffering such a message and the payload is its next bytes, up to its end (kept
  the same way, the message handed on when complete). Each whole SMB2 message goes to the
  header triage (``Smb2Protocol.quick``) and, if that cannot decide it, to
  ``SmbConnection.message``; a message kept goes through the message budget as in the
  NetBIOS stage, and only where the budget takes it without evicting others (an eviction is
  an anomaly the NetBIOS stage reports). Any other payload goes to ``SmbConnection.feed``,
  as the slow path's routing would hand it on.

Records and counters are identical with and without it (tests/smb/test_fastpath.py, on every
capture). The NetBIOS message and triaged SMB2 operation counts are kept here as ints and
folded into the pipeline's counters when they are read.
"""
from __future__ import annotations

from typing import Hashable

from sensor.net.flows import Flow, FlowTable
# The frame layout and TCP flags the bulk lane reads: this path reads the same fields.
from sensor.net.lane import HALF_SEQ_SPACE, PORTS, SEQ_MASK, BulkLane, FrameHeaders
from sensor.net.tcp import MAX_WINDOW, UNSET
from sensor.smb.connection import SMB2, SmbConnection
from sensor.smb.netbios import FIRST_PROTOCOL_ID, MIN_MESSAGE, SESSION_MESSAGE, WHOLE_MESSAGE_LIMIT

_SEQ_SPACE = 1 << 32                   # TCP sequence numbers wrap here (RFC 9293 3.4)
# Taken, nothing to route (a pure ACK, or messages that produced no event).
NOTHING: tuple = ()


class _Direction:
    __slots__ = ("flow", "tcp", "peer", "stream", "conn", "smb2", "from_client", "owner", "key")

    def __init__(self, key: bytes, flow: Flow, from_client: bool, conn: SmbConnection, owner: Hashable):
        self.key = key
        self.flow = flow
        self.tcp, self.peer = (flow.client, flow.server) if from_client else (flow.server, flow.client)
        self.stream = conn.stream(from_client)
        self.conn = conn
        self.smb2 = conn.smb2     # the connection's SMB2 state (made with it, never replaced)
        self.from_client = from_client
        self.owner = owner


class SmbFastPath:
    def __init__(self, flows: FlowTable, lane: BulkLane | None) -> None:
        self.flows = flows
        self.lane = lane
        self.entries: dict[bytes, _Direction] = {}
        # The two directions found last, looked at before ``entries``: a frame's 12-byte key is
        # a new bytes object, whose hash (SipHash) a dict lookup computes each time, and most
        # frames answer the one before or belong to it (reset when ``entries`` changes).
        self._last: _Direction | None = None
        self._before: _Direction | None = None
        self._owners: dict[Hashable, tuple[_Direction, _Direction]] = {}
        self.owner: Hashable = None     # the flow whose SMB stage the last frame taken fed (None: no payload)
        self.skipping = False           # ... and its NetBIOS stage now skips a payload (the pipeline resets it)
        self.frames = 0                 # frames taken
        self.messages = 0               # NetBIOS session messages framed here (nbss_messages)
        self.operations = 0             # SMB2 operations the header triage did (smb2_operations)

    def arm(self, flow: Flow | None, conn: SmbConnection, owner: Hashable) -> None:
        """Follow a started SMB flow (IPv4 only: its frames are matched by their raw addresses)."""
        if flow is None or len(flow.keys[0][0]) != 4:
            return
        client_key, server_key = flow.keys
        client = _Direction(_raw_key(client_key), flow, True, conn, owner)
        server = _Direction(_raw_key(server_key), flow, False, conn, owner)
        self.entries[client.key] = client
        self.entries[server.key] = server
        self._owners[owner] = (client, server)
        self._last = self._before = None

    def release(self, owner: Hashable) -> None:
        """The flow ended. A reused 4-tuple's new flow may own the keys already: keep those."""
        for entry in self._owners.pop(owner, ()):
            if self.entries.get(entry.key) is entry:
                del self.entries[entry.key]
        self._last = self._before = None

    def take(self, ts: float, buf, headers: FrameHeaders, frame: int):
        """One frame in ``buf`` whose headers ``headers`` has read (untagged Ethernet, IPv4,
        TCP with ACK alone): None if it must go the slow path, else the SMB events of the messages it completed (their flow state is
        ``self.owner``). ``buf`` is the frame's ``bytes`` or the capture's mapped window: its
        payload is read in place and only what a later stage keeps is copied out."""
        key = headers.key
        entry = self._last
        if entry is None or entry.key != key:
            entry = self._before
            if entry is None or entry.key != key:
                entry = self.entries.get(key)
                if entry is None:
                    return None
            self._before = self._last
            self._last = entry
        seq, ack, start, end = headers.seq, headers.ack, headers.payload, headers.end
        flow = entry.flow
        if flow.closing or ts >= self.flows.next_expiry:
            return None
        lane = self.lane
        if lane is not None and lane.entries and lane.holds(entry.owner):
            return None
        this, peer = entry.tcp, entry.peer
        if this.next == UNSET or this._starts or peer._starts:
            return None
        nxt = this.next     # (stream offsets: C integers in the compiled core, like the sums below)
        # The ack (TcpDirection.acknowledge with nothing queued): note it, or leave a
        # suspicious one to the slow path, which counts it.
        acking = peer.next != UNSET
        if acking:
            peer_next = peer.next
            delta = (ack - peer_next) & SEQ_MASK
            if delta >= HALF_SEQ_SPACE:
                delta -= _SEQ_SPACE
            acked = peer_next + delta
            if peer.fin_at != UNSET and acked > peer.fin_at:
                acked = peer.fin_at
            if acked - peer_next > MAX_WINDOW:
                return None
        size = end - start
        whole = size > 0
        continuing = False      # the payload is the next bytes of a message split over segments
        partial = end           # where a message that later segments complete starts
        if whole:
            if seq != nxt & SEQ_MASK:
                return None
            stream = entry.stream
            if stream._skip or stream._hunting or stream._dead:
                whole = False
            elif stream._buf:
                # The middle or the end of a message split over segments (a 1-8 KB READ or
                # WRITE): kept as NetBIOS stage keeps it, if it goes no further than the
                # message's end and the message budget takes it without evicting others.
                whole = continuing = size <= stream.room() and stream.fits(size)
            else:
                # NetBIOS (RFC 1002 4.3.1): session messages, as NbssStream._frame's first
                # branch frames them, the last one perhaps cut at the segment's end (its first
                # 8 bytes here: framed as _frame would buffer it).
                at = start
                while at < end:
                    if end - at < 8 or buf[at] != SESSION_MESSAGE:
                        whole = False
                        break
                    length = (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]
                    protocol = buf[at + 4]
                    # MAGICS, read in place: a protocol id MIN_MESSAGE knows, then "SMB"
                    if (length > WHOLE_MESSAGE_LIMIT or protocol < FIRST_PROTOCOL_ID
                            or buf[at + 5] != 0x53 or buf[at + 6] != 0x4D or buf[at + 7] != 0x42
                            or length < MIN_MESSAGE[protocol - FIRST_PROTOCOL_ID]):
                        whole = False
                        break
                    if at + 4 + length > end:
                        partial = at
                        whole = stream.fits(end - at)
                        break
                    at += 4 + length
        # Taken: from here on, what the slow path's stages would have done.
        self.frames += 1
        flow.last_ts = ts
        if acking and acked > peer.acked:
            peer.acked = acked
        if not size:
            self.owner = None
            return NOTHING
        this.next = nxt + size
        conn, from_client = entry.conn, entry.from_client
        self.owner = entry.owner
        if not whole:
            # A control message, a large message, a resync...: the NetBIOS stage frames it
            # as the slow path would; if it is now skipping a payload, the lane may take the
            # flow (the other direction's skipping began at a frame of its own).
            events = conn.feed(from_client, ts, buf[start:end], frame)
            self.skipping = entry.stream._skip > 0
            return events
        if continuing:
            message = entry.stream.extend(buf[start:end])
            if message is None:
                return NOTHING
            self.messages += 1
            return self._message(entry, ts, frame, message, 0, len(message))
        at = start
        length = (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]
        if at + 4 + length == end:      # one message: the common case
            self.messages += 1
            return self._message(entry, ts, frame, buf, at + 4, length)
        events = []
        while at < partial:
            length = (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]
            self.messages += 1
            events += self._message(entry, ts, frame, buf, at + 4, length)
            at += 4 + length
        if partial < end:
            entry.stream.start(buf[partial:end], (buf[partial + 1] << 16) | (buf[partial + 2] << 8) | buf[partial + 3])
        return events

    def _message(self, entry: _Direction, ts: float, frame: int, buf, at: int, length: int):
        """One whole SMB message at ``buf[at:at + length]``: an SMB2 one through the header
        triage, else (or if it cannot decide) to the SMB stage's parsers."""
        if buf[at] == SMB2:
            events = entry.smb2.quick(ts, frame, buf, at, length)
            if events is not None:
                self.operations += 1
                return events
        return entry.conn.message(entry.from_client, ts, frame, buf[at:at + length], length, False)

def _raw_key(key: tuple) -> bytes:
    src, dst, sport, dport = key
    return src + dst + PORTS.pack(sport, dport)
