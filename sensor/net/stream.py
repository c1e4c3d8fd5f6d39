"""What the network stages hand to the protocol stages: ordered byte streams per TCP flow.

FlowKey is made once per flow, never per packet. The hot path below it works on tuples.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FlowKey:
    """A TCP connection, oriented client -> server (SYN sender, else by well-known port)."""

    client_ip: str    # dotted IPv4 or compressed IPv6 text
    client_port: int
    server_ip: str
    server_port: int

    def __str__(self) -> str:
        return f"{self.client_ip}:{self.client_port}->{self.server_ip}:{self.server_port}"


@dataclass(frozen=True, slots=True)
class FlowStarted:
    """A TCP flow the sensor follows from here on."""
    flow: FlowKey
    ts: float
    midstream: bool   # True when the handshake was not seen (capture started mid-connection)
    app: str          # "smb" (NetBIOS session service: 445, 139) or "dcerpc" (ncacn_ip_tcp: 135, or sniffed)
    vlan: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamData:
    """In-order bytes of one direction. ``frame`` is the capture frame that completed them."""

    flow: FlowKey
    from_client: bool
    ts: float
    data: bytes | memoryview
    frame: int


@dataclass(frozen=True, slots=True)
class StreamGap:
    """``length`` bytes of one direction were never captured (loss); the next StreamData
    starts after the hole. Consumers skipping a bulk payload can absorb it; others resync."""

    flow: FlowKey
    from_client: bool
    ts: float
    length: int


@dataclass(frozen=True, slots=True)
class FlowEnded:
    """A followed TCP flow's end, and why it ended."""
    flow: FlowKey
    ts: float
    reason: str   # "fin", "rst", "idle", "evicted", "end_of_capture"


@dataclass(frozen=True, slots=True)
class ServiceSeen:
    """A host answered as a Kerberos/LDAP server (issue 6: what a DC serves besides SMB), on a
    flow the table otherwise ignores. Emitted once per host while the table remembers it."""

    ip: str
    service: str   # "kerberos", "ldap", "ldaps", "gc" (flows.SERVICE_PORTS)
    ts: float


StreamEvent = FlowStarted | StreamData | StreamGap | FlowEnded | ServiceSeen
