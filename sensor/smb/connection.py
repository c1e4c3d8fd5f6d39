"""The SMB stage for one TCP flow: bytes of both directions in, named-pipe events out.

State: one NbssStream per direction (framing, skipping, resync), the SMB2 and SMB1 message
state (Smb2Protocol, Smb1Protocol, each with its own pending requests, trees and pipes),
and the SessionBook they share (dialect, NTLMSSP challenge, sessions). A connection speaks
SMB1 or SMB2 after NEGOTIATE; both are kept so a multi-protocol NEGOTIATE (SMB1 request,
SMB2 response) and odd captures need no special case.
"""
from __future__ import annotations

import struct

from sensor.anomaly import Anomaly, Stats
from sensor.budget import ByteBudget
from sensor.net.stream import FlowKey
from sensor.smb import netbios
from sensor.smb.events import SmbEvent
from sensor.smb.smb1 import Smb1Protocol
from sensor.smb.smb2 import Smb2Protocol
from sensor.smb.sessions import SessionBook

SMB1 = 0xFF
SMB2 = 0xFE
TRANSFORM = 0xFD     # MS-SMB2 2.2.41: encrypted message, never decoded
COMPRESSED = 0xFC    # MS-SMB2 2.2.42: compressed message; not decompressed (counted)

# Malformed input is turned into these anomalies; any of these escaping a parser is a bug in
# a bounds check, so it is caught per message rather than letting the flow die.
_PARSE_ERRORS = (IndexError, ValueError, KeyError, TypeError, struct.error)


class SmbConnection:
    """The stage contract (sensor/stage.py): ``feed``/``gap`` per direction, ``close`` at the
    end of the flow."""

    __slots__ = ("flow", "stats", "sessions", "smb2", "smb1_state", "_streams", "_triage")

    def __init__(self, flow: FlowKey, budget: ByteBudget | None = None, triage: bool = False) -> None:
        self.flow = flow
        self.stats = Stats()
        self.sessions = SessionBook(flow, self.stats)
        self.smb2 = Smb2Protocol(flow, self.stats, self.sessions)
        self.smb1_state: Smb1Protocol | None = None     # made at the first SMB1 message (~700 bytes)
        # ``budget``: the pipeline's bound on partial messages buffered by all connections
        # ``triage``: SMB2 messages reassembled from segments go through the header triage
        # (Smb2Protocol.quick_whole) before the full parser (the pipeline's fast path setting)
        self._triage = triage
        self._streams = (netbios.NbssStream(self._wants_whole, self.stats, budget),   # server -> client
                         netbios.NbssStream(self._wants_whole, self.stats, budget))   # client -> server

    def feed(self, from_client: bool, ts: float, data: bytes | memoryview, frame: int) -> list[SmbEvent | Anomaly]:
        return self._items(from_client, ts, frame, self._streams[from_client].feed(data))

    def gap(self, from_client: bool, ts: float, length: int) -> list[SmbEvent | Anomaly]:
        return self._items(from_client, ts, 0, self._streams[from_client].gap(length))

    def stream(self, from_client: bool) -> netbios.NbssStream:
        """The NetBIOS framing of one direction (the SMB fast path reads its state)."""
        return self._streams[from_client]

    def skip_remaining(self, from_client: bool) -> int:
        """Bytes of this direction certain to be skipped next (inside a bulk payload)."""
        return self._streams[from_client].skipping

    def take_skip(self, from_client: bool, n: int) -> None:
        """``n`` of those bytes went by on the bulk lane, never fed (``n <= skip_remaining``)."""
        self._streams[from_client].take_skip(n)

    def close(self, ts: float) -> list[SmbEvent | Anomaly]:
        for stream in self._streams:
            stream.release()
        # Each stream holds a bound method of this connection: without this, an ended flow's
        # whole SMB state is a reference cycle that only a full garbage collection frees (the
        # heap grew by ~3 KiB per ended flow between them; issue 18 item 2).
        self._streams = ()
        return self.smb2.close(ts) + (self.smb1_state.close(ts) if self.smb1_state is not None else [])

    @property
    def smb1(self) -> Smb1Protocol:
        if self.smb1_state is None:
            self.smb1_state = self.smb2.smb1 = Smb1Protocol(self.flow, self.stats, self.sessions)
        return self.smb1_state

    def _wants_whole(self, prefix: bytes, length: int) -> bool:
        if prefix[0] == SMB2:
            return self.smb2.wants_whole(prefix)
        if prefix[0] == SMB1:
            return self.smb1.wants_whole(prefix)
        return False

    def _items(self, from_client: bool, ts: float, frame: int, items: list[tuple]) -> list:
        events: list = []
        for kind, value, length in items:
            if kind == netbios.ANOMALY:
                events.append(self.stats.anomaly(ts, "netbios", value, self.flow, length))
            elif kind == netbios.CONTROL:
                continue
            elif not (self._triage and kind == netbios.MESSAGE and value[0] == SMB2
                      and self.smb2.quick_whole(ts, frame, value)):
                events += self.message(from_client, ts, frame, value, length, kind == netbios.HEAD)
        return events

    def message(self, from_client: bool, ts: float, frame: int, data: bytes, length: int,
                truncated: bool) -> list:
        """One framed SMB message (``length``: its NetBIOS length; ``truncated``: only its start)."""
        protocol = data[0]
        try:
            if protocol == SMB2:
                return self.smb2.message(ts, frame, data, truncated)
            if protocol == SMB1:
                return self.smb1.message(ts, frame, data, truncated)
            if protocol == TRANSFORM:
                # wire size: the whole NetBIOS message, its 4-byte header included
                return self.smb2.encrypted(ts, frame, from_client, data, length + 4)
            self.stats["smb2_compressed_messages"] += 1
            return []
        except _PARSE_ERRORS as e:
            layer = "smb1" if protocol == SMB1 else "smb2"
            return [self.stats.anomaly(ts, layer, f"{layer}_bad_structure", self.flow,
                                       f"{type(e).__name__}: {e}")]
