"""What the SMB1 and SMB2 message parsers of one connection share (their base class)."""
from __future__ import annotations

from sensor.anomaly import Anomaly, Stats
from sensor.net.stream import FlowKey
from sensor.smb.events import PipeData, PipeId
from sensor.smb.ntlmssp import NtlmsspError, find_ntlmssp
from sensor.smb.pipes import PipeTable
from sensor.smb.sessions import SessionBook


class SmbProtocolState:
    """What the SMB1 and SMB2 parsers of one connection share: the flow, its counters, the
    session book and pipe table, and how they report a malformed message."""

    LAYER = ""   # "smb1" or "smb2": names the layer and the bad-structure anomaly

    def __init__(self, flow: FlowKey, stats: Stats, sessions: SessionBook) -> None:
        self.flow = flow
        self.stats = stats
        self.sessions = sessions
        self.pipes = PipeTable(flow, stats)

    def held(self) -> int:
        """Requests awaiting their response and trees kept (for the flow memory budget; read
        per segment, so a C call in the compiled core)."""
        return len(self._pending) + len(self._trees)

    def close(self, ts: float) -> list:
        """End of the connection: every pipe still open is closed, pending requests dropped."""
        events = self.pipes.close_all(ts)
        self._pending.clear()
        self._trees.clear()
        return events

    def _server_data(self, ts: float, frame: int, pipe: PipeId | None, message, offset: int,
                     length: int, events: list) -> None:
        """A response's ``length`` bytes at ``offset`` of ``message`` read from ``pipe``."""
        if pipe is None or not length:
            return
        data = bytes(message[offset:offset + length])
        if len(data) != length:
            events.append(self._bad(ts, "response data runs past the message"))
            return
        events.append(PipeData(self.flow, ts, frame, pipe, False, data))

    def _ntlmssp(self, ts: float, blob, events: list):
        """The NTLMSSP message in a security blob, or None (a malformed one is an anomaly)."""
        try:
            return find_ntlmssp(blob)
        except NtlmsspError as e:
            events.append(self.stats.anomaly(ts, "ntlmssp", "ntlmssp_malformed", self.flow, str(e)))
            return None

    def _bad(self, ts: float, detail: str) -> Anomaly:
        return self.stats.anomaly(ts, self.LAYER, self.LAYER + "_bad_structure", self.flow, detail)
