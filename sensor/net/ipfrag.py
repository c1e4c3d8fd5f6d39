"""IP fragment reassembly (IPv4 and IPv6 alike), bounded in datagrams, bytes and time.

A datagram is keyed by whatever the caller passes (IPv4: src, dst, protocol, id; IPv6: src,
dst, id). Overlapping fragments keep the bytes that arrived first (RFC 5722 says drop the
datagram for IPv6; keeping first-received is what most stacks do for IPv4 and keeps us
consistent with the TCP stage) and count "ip_fragment_overlap"; differing bytes in the
overlap are the evasion signature and count "ip_fragment_overlap_conflict".
"""
from __future__ import annotations

from dataclasses import dataclass

from sensor.anomaly import Stats

# Datagrams being reassembled at once. Legit fragmentation is rare on SMB paths (TCP uses
# PMTU discovery); 1024 in flight survives a burst while capping a fragment flood.
MAX_DATAGRAMS_IN_FLIGHT = 1024
# Total buffered fragment bytes across all datagrams: 8 MiB holds 128 maximum-size datagrams
# at once, while a fragment flood cannot grow memory past it (oldest datagram dropped).
MAX_BUFFERED_BYTES = 8 << 20
# An IP datagram cannot exceed 65535 bytes (IPv4 total length; IPv6 without jumbograms).
MAX_DATAGRAM = 65535
# Seconds a partial datagram waits for its fragments: Linux ipfrag_time and RFC 8200's 60 s
# bracket this; 30 s like Linux.
FRAGMENT_TIMEOUT = 30.0


@dataclass(frozen=True)
class FragmentLimits:
    """Bounds on IPv4 fragments held for reassembly."""
    max_datagrams: int = MAX_DATAGRAMS_IN_FLIGHT
    max_bytes: int = MAX_BUFFERED_BYTES
    timeout: float = FRAGMENT_TIMEOUT


class _Datagram:
    __slots__ = ("first_ts", "pieces", "size", "total")

    def __init__(self, ts: float):
        self.first_ts = ts
        self.pieces: list[tuple[int, bytes]] = []   # (offset, bytes), non-overlapping
        self.size = 0          # bytes held
        self.total = -1        # payload length, known once the last fragment (MF=0) arrived


class FragmentReassembler:
    def __init__(self, limits: FragmentLimits | None = None):
        self.limits = limits or FragmentLimits()
        self.stats = Stats()
        self._pending: dict[tuple, _Datagram] = {}   # insertion order = age
        self._bytes = 0

    def feed(self, ts: float, key: tuple, offset: int, more: bool, data) -> bytes | None:
        """Add one fragment (``offset`` in bytes); return the whole payload once complete."""
        stats = self.stats
        stats["ip_fragments"] += 1
        self._expire(ts)
        end = offset + len(data)
        if end > MAX_DATAGRAM:
            stats.anomaly(ts, "ip", "ip_fragment_too_big", detail=f"fragment ends at {end}")
            return None
        dgram = self._pending.get(key)
        if dgram is None:
            if len(self._pending) >= self.limits.max_datagrams:
                self._drop_oldest("ip_fragment_table_full", ts)
            dgram = self._pending[key] = _Datagram(ts)
        if not more:
            if dgram.total >= 0 and dgram.total != end:
                stats.anomaly(ts, "ip", "ip_fragment_inconsistent_end", detail=f"{dgram.total} vs {end}")
            dgram.total = end
        added = self._insert(ts, dgram, offset, bytes(data))
        dgram.size += added
        self._bytes += added
        while self._bytes > self.limits.max_bytes and self._pending:
            self._drop_oldest("ip_fragment_buffer_full", ts)
        if key not in self._pending:
            return None
        if dgram.total >= 0 and dgram.size >= dgram.total and self._contiguous(dgram):
            del self._pending[key]
            self._bytes -= dgram.size
            stats["ip_datagrams_reassembled"] += 1
            return b"".join(piece for _, piece in dgram.pieces)[:dgram.total]
        return None

    def close(self) -> list:
        """Forget every partial datagram (there is nothing to deliver from them)."""
        if self._pending:
            self.stats["ip_fragments_incomplete"] += len(self._pending)
        self._pending.clear()
        self._bytes = 0
        return []

    def _insert(self, ts: float, dgram: _Datagram, offset: int, data: bytes) -> int:
        """Add the parts of ``data`` no earlier fragment covers; return the bytes added."""
        pieces = dgram.pieces
        end = offset + len(data)
        new: list[tuple[int, bytes]] = []
        cursor = offset
        for start, held in pieces:
            held_end = start + len(held)
            if held_end <= cursor or start >= end:
                continue
            lo, hi = max(cursor, start), min(end, held_end)
            self.stats.anomaly(ts, "ip", "ip_fragment_overlap")
            if data[lo - offset:hi - offset] != held[lo - start:hi - start]:
                self.stats.anomaly(ts, "ip", "ip_fragment_overlap_conflict")
            if start > cursor:
                new.append((cursor, data[cursor - offset:start - offset]))
            cursor = max(cursor, held_end)
        if cursor < end:
            new.append((cursor, data[cursor - offset:]))
        if new:
            pieces.extend(new)
            pieces.sort(key=lambda piece: piece[0])
        return sum(len(piece) for _, piece in new)

    @staticmethod
    def _contiguous(dgram: _Datagram) -> bool:
        cursor = 0
        for start, held in dgram.pieces:
            if start != cursor:
                return False
            cursor += len(held)
        return cursor >= dgram.total

    def _drop_oldest(self, reason: str, ts: float) -> None:
        key = next(iter(self._pending))
        self._bytes -= self._pending.pop(key).size
        self.stats.anomaly(ts, "ip", reason)

    def _expire(self, now: float) -> None:
        timeout = self.limits.timeout
        while self._pending:
            key, dgram = next(iter(self._pending.items()))
            if now - dgram.first_ts < timeout:
                return
            del self._pending[key]
            self._bytes -= dgram.size
            self.stats["ip_fragments_timed_out"] += 1
