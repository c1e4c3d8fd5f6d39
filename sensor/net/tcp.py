"""One direction of a TCP connection, reassembled into an ordered byte stream.

Sequence numbers are turned into absolute stream offsets (an int anchored at the initial
sequence number; 64-bit in the compiled core) by taking the 32-bit difference to ``next`` as a
signed value, so wraparound at 2**32 and streams longer than 4 GiB need no special case.

Policy, chosen once: **the first bytes received for an offset win** (Linux and the BSDs keep
already-queued data for most overlap shapes; Zeek and Suricata's "first" policy). Later bytes
that disagree count "tcp_overlap_conflict": that disagreement is the evasion signature.
Bytes that were already delivered are never compared (they are gone), only counted as
retransmitted.

Holes: the direction waits for a missing range while later data sits in the out-of-order
buffer, and gives up on it (``StreamGap``, then the data after it) when
- the buffer exceeds its bounds (its own, or the process-wide OOO_BUDGET_BYTES shared by every
  direction: the oldest queue is then given up, its bytes treated as acknowledged-but-lost, so
  they become a StreamGap when later data or the end of the flow comes),
- the peer acknowledged past the hole (it got bytes the capture lost), judged when both the
  acknowledgement and later data are in hand, so a SPAN port that shows an ACK a little
  before the data it acknowledges does not make a false gap,
- the flow ends (``flush``).

In-order data with an empty buffer is passed on as the frame's own memoryview, without a
copy; the reader hands out a fresh ``bytes`` per frame, so the view stays valid. Buffered
data is copied once, to ``bytes``.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from sensor.anomaly import Stats
from sensor.budget import ByteBudget
from sensor.net.stream import FlowKey, StreamData, StreamGap

_SEQ_SPACE = 1 << 32
_HALF_SEQ_SPACE = 1 << 31

# Out-of-order bytes held per direction before the oldest hole is declared lost. 1 MiB is
# 16 default 64 KiB SMB2 writes: more than any receive window we see in SMB traffic without
# window scaling, and 100k flows can't exhaust memory unless most of them are stuck at once.
MAX_OOO_BYTES = 1 << 20
# Segments held per direction: bounds the per-segment bookkeeping when an attacker sends
# 1-byte segments out of order (1 MiB of them would be a million list entries).
MAX_OOO_SEGMENTS = 2048
# Out-of-order bytes held by all directions of all flows of a flow table (one per process or
# worker): 128 full queues at once. More than 128 of 100k flows stalled on a hole at the same
# moment is an attack or a broken SPAN, and 100k x 2 x MAX_OOO_BYTES would be 200 GiB.
OOO_BUDGET_BYTES = 128 << 20
# Data or acknowledgements this far beyond the next expected byte are not from this
# connection (the largest TCP window with scaling is 2**30 bytes, RFC 7323 2.3).
MAX_WINDOW = 1 << 30
# ``next``, ``acked`` and ``fin_at`` not known yet: below any stream offset (one is at least an
# initial sequence number less 2**31), so an acknowledgement is always past it. An int, not
# None: they are C integers in the compiled core (tcp.pxd), read and written per packet.
UNSET = -(1 << 62)


@dataclass(frozen=True)
class TcpLimits:
    """Bounds on out-of-order bytes and segments held per direction."""
    max_ooo_bytes: int = MAX_OOO_BYTES
    max_ooo_segments: int = MAX_OOO_SEGMENTS


class TcpDirection:
    """Bytes from one side of one flow. ``stats`` is the flow table's counter set (shared, so
    per-flow counters need no summing)."""

    __slots__ = ("flow", "from_client", "limits", "stats", "budget", "next", "acked", "fin_at",
                 "_starts", "_datas", "_buffered", "_charged")

    def __init__(self, flow: FlowKey, from_client: bool, limits: TcpLimits, stats: Stats,
                 budget: ByteBudget | None = None):
        self.flow = flow
        self.from_client = from_client
        self.limits = limits
        self.stats = stats
        self.budget = budget             # the flow table's bound on all out-of-order queues
        self.next = UNSET                # absolute offset of the next byte to deliver
        self.acked = UNSET               # highest offset the peer acknowledged
        self.fin_at = UNSET              # offset just past the last byte (FIN seen)
        self._starts: list[int] = []     # out-of-order buffer: sorted, non-overlapping
        self._datas: list[bytes] = []
        self._buffered = 0
        self._charged = 0                # what the budget holds against this direction

    def _offset(self, seq: int) -> int:
        delta = (seq - self.next) % _SEQ_SPACE
        if delta >= _HALF_SEQ_SPACE:
            delta -= _SEQ_SPACE
        return self.next + delta

    def segment(self, ts: float, frame: int, seq: int, payload, syn: bool = False, fin: bool = False) -> list:
        """One segment sent by this side. Returns the StreamData/StreamGap/Anomaly it completes."""
        nxt = self.next
        if nxt == UNSET:
            # SYN: data starts after it. Midstream: the first segment we see starts the stream.
            nxt = self.next = seq + 1 if syn else seq
        delta = (seq - nxt) % _SEQ_SPACE      # self._offset(seq), inlined: once per packet
        if delta >= _HALF_SEQ_SPACE:
            delta -= _SEQ_SPACE
        start = nxt + delta + (1 if syn else 0)
        size = len(payload)
        end = start + size
        if fin and self.fin_at == UNSET:
            self.fin_at = end
        if not size:
            return []
        if end <= nxt:
            self.stats["tcp_retransmitted_segments"] += 1
            return []
        if end - nxt > MAX_WINDOW:
            return [self.stats.anomaly(ts, "tcp", "tcp_segment_out_of_window", self.flow,
                                       f"{end - nxt} bytes ahead")]
        if start < nxt:
            self.stats["tcp_partial_retransmissions"] += 1
            payload = payload[nxt - start:]
            start = nxt
        if start == nxt and not self._starts:
            self.next = end
            return [StreamData(self.flow, self.from_client, ts, payload, frame)]
        out: list = []
        self._insert(ts, start, payload, out)
        self._drain(ts, frame, out)
        limits = self.limits
        while self._starts and (self._buffered > limits.max_ooo_bytes or len(self._starts) > limits.max_ooo_segments):
            self.stats.anomaly(ts, "tcp", "tcp_ooo_buffer_full", self.flow)
            self._skip_to(ts, frame, self._starts[0], out)
        if self._starts and self.acked > self.next:
            self._skip_to(ts, frame, self.acked, out)
        if self.budget is not None and self._charged != self._buffered:
            self._settle_budget(ts, out)
        return out

    def acknowledge(self, ts: float, frame: int, ack: int) -> list:
        """The peer acknowledged ``ack``: holes below it, with data buffered above, are loss."""
        nxt = self.next
        if nxt == UNSET:
            return []
        delta = (ack - nxt) % _SEQ_SPACE      # self._offset(ack), inlined: once per packet
        if delta >= _HALF_SEQ_SPACE:
            delta -= _SEQ_SPACE
        acked = nxt + delta
        if self.fin_at != UNSET and acked > self.fin_at:
            acked = self.fin_at     # the FIN takes one sequence number, not a byte
        if acked - self.next > MAX_WINDOW:
            self.stats["tcp_ack_out_of_window"] += 1
            return []
        if acked > self.acked:
            self.acked = acked
        if self._starts and acked > self.next:
            out: list = []
            self._skip_to(ts, frame, acked, out)
            if self.budget is not None:
                self._settle_budget(ts, out)
            return out
        return []

    def flush(self, ts: float, frame: int = 0) -> list:
        """End of the flow: deliver everything buffered, with gaps for the holes (also the
        tail the peer acknowledged but the capture lost), and release the buffer."""
        if self.next == UNSET:
            return []
        out: list = []
        limit = self.next
        if self._starts:
            limit = self._starts[-1] + len(self._datas[-1])
        if self.acked > limit:
            limit = self.acked
        self._skip_to(ts, frame, limit, out)
        if self.budget is not None:
            self._settle_budget(ts, out)
        return out

    @property
    def buffered(self) -> int:
        """Out-of-order bytes held."""
        return self._buffered

    def _settle_budget(self, ts: float, out: list) -> None:
        """Charge the budget with what the queue holds now (it is released when empty)."""
        self.budget.release(self)
        self._charged = self._buffered
        if self._buffered and self.budget.charge(self, self._buffered, self._evicted_by_budget):
            out.append(self.stats.anomaly(ts, "tcp", "tcp_ooo_budget_exceeded", self.flow,
                                          f"oldest queues given up (all over {self.budget.limit} bytes)"))

    def _evicted_by_budget(self, _holder) -> None:
        """The process-wide budget gave this (oldest) queue up: its bytes count as acknowledged
        and lost, so the hole and the queue become one StreamGap when the stream goes on."""
        lost_to = self._starts[-1] + len(self._datas[-1])
        if self.acked < lost_to:
            self.acked = lost_to
        self._starts.clear()
        self._datas.clear()
        self._buffered = self._charged = 0
        self.stats["tcp_queues_dropped_by_budget"] += 1

    def _insert(self, ts: float, start: int, data, out: list) -> None:
        """Buffer the parts of ``data`` no earlier segment covers (first received wins)."""
        starts, datas = self._starts, self._datas
        end = start + len(data)
        i = bisect_right(starts, start) - 1
        if i < 0 or starts[i] + len(datas[i]) <= start:
            i += 1
        cursor = start
        pieces: list[tuple[int, bytes]] = []
        while i < len(starts) and starts[i] < end:
            held_start, held = starts[i], datas[i]
            held_end = held_start + len(held)
            if held_start > cursor:
                pieces.append((cursor, bytes(data[cursor - start:held_start - start])))
            lo, hi = max(cursor, held_start), min(end, held_end)
            if data[lo - start:hi - start] != held[lo - held_start:hi - held_start]:
                out.append(self.stats.anomaly(ts, "tcp", "tcp_overlap_conflict", self.flow,
                                              f"{hi - lo} bytes at offset {lo}"))
            cursor = max(cursor, held_end)
            i += 1
        if cursor < end:
            pieces.append((cursor, bytes(data[cursor - start:])))
        if not pieces:
            self.stats["tcp_retransmitted_segments"] += 1
            return
        for piece_start, piece in pieces:
            at = bisect_left(starts, piece_start)
            starts.insert(at, piece_start)
            datas.insert(at, piece)
            self._buffered += len(piece)

    def _drain(self, ts: float, frame: int, out: list) -> None:
        """Deliver the buffered run that now starts at (or before) ``next`` as one StreamData."""
        starts, datas = self._starts, self._datas
        chunks = []
        while starts and starts[0] <= self.next:
            start = starts.pop(0)
            data = datas.pop(0)
            self._buffered -= len(data)
            end = start + len(data)
            if end <= self.next:
                continue
            chunks.append(data[self.next - start:] if start < self.next else data)
            self.next = end
        if chunks:
            out.append(StreamData(self.flow, self.from_client, ts,
                                  chunks[0] if len(chunks) == 1 else b"".join(chunks), frame))

    def _skip_to(self, ts: float, frame: int, limit: int, out: list) -> None:
        """Give up on every hole below ``limit``: a StreamGap for each, then the data after it."""
        while True:
            self._drain(ts, frame, out)
            if self.next >= limit:
                return
            hole_end = min(self._starts[0], limit) if self._starts else limit
            out.append(StreamGap(self.flow, self.from_client, ts, hole_end - self.next))
            self.stats["tcp_gaps"] += 1
            self.stats["tcp_gap_bytes"] += hole_end - self.next
            self.next = hole_end
