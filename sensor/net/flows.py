"""The TCP flow table: which connections matter, who is client and server, when they end.

Only flows that can carry SMB or DCE/RPC go further: server port 445/139 ("smb"), 135
("dcerpc"), or, on any other port, a first payload that looks like a NetBIOS-framed SMB
header or a DCE/RPC connection-oriented header; and HTTP ("http", a client's first payload
starting with a request method, for NTLM back-authentication to WebDAV). Everything else is marked ignored (both
directions' keys in one bounded dict) and its later packets cost one dict lookup.

A flow is announced (``FlowStarted``) with its first payload byte, so port scans and
unanswered SYNs cost the later stages nothing; it ends (``FlowEnded``) on RST, on FIN from
both sides, when idle, when evicted for room, or at close. Before ``FlowEnded`` each
direction is flushed: buffered data is delivered, holes become ``StreamGap``s.

Flow keys ignore VLAN tags: a SPAN that sees a routed connection on two VLANs then merges
the copies (second copy = retransmission) instead of reporting every call twice.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field

from sensor.anomaly import Stats
from sensor.budget import ByteBudget
from sensor.net.frames import Segment
from sensor.net.stream import FlowEnded, FlowKey, FlowStarted, ServiceSeen
from sensor.net.tcp import OOO_BUDGET_BYTES, UNSET, TcpDirection, TcpLimits

# TCP flag bits (RFC 9293 3.1)
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

SMB_PORTS = frozenset((445, 139))     # MS-SMB2 2.1 direct TCP; NetBIOS session service (RFC 1002)
DCERPC_PORT = 135                     # RPC endpoint mapper, ncacn_ip_tcp
WELL_KNOWN_PORTS = SMB_PORTS | {DCERPC_PORT}

# Flows tracked at once. 100k connections is a busy data-centre SPAN's worth of SMB/RPC;
# a flow costs ~1 KiB without buffered data, so the table stays near 100 MiB at worst.
MAX_FLOWS = 100_000
# The state of all tracked flows (TCP, and what later stages keep per flow: SMB connection,
# sessions, pipes, DCE/RPC associations; buffered bytes have budgets of their own) is held
# under this many bytes, whatever the flow count: the systemd unit's MemoryMax=512M less the
# process (~45 MB), the byte budgets (TCP out-of-order 128 MiB, NBSS messages 64 MiB, stubs
# 64 MiB) and a margin for the allocator. Past it the least recently active flows are evicted.
FLOW_MEMORY_BUDGET_BYTES = 128 << 20
# Heap of one tracked TCP flow before any later stage keeps state for it: Flow, its two
# TcpDirections, FlowKey and four dict entries (tracemalloc: ~1.2 KiB; tests/robustness/
# test_flow_memory.py checks every estimate against a measurement).
FLOW_BYTES = 1536
# What an ended flow kept to absorb its stragglers for SHORT_TIMEOUT still costs.
CLOSED_FLOW_BYTES = 1024
# Ignored connections remembered (two keys each). Reset wholesale when full: a forgotten
# flow is re-judged from its next packet, which costs a few comparisons.
MAX_IGNORED_KEYS = 400_000
# Servers of these ports are noted (ServiceSeen) when their flow is ignored: a DC serves
# Kerberos (RFC 4120 7.2.2), LDAP (RFC 4511), LDAPS, the global catalog (MS-ADTS 6.3.1.2).
SERVICE_PORTS = {88: "kerberos", 389: "ldap", 636: "ldaps", 3268: "gc"}
# Hosts noted once each; a full set is forgotten wholesale (a host is then noted again).
MAX_SERVICE_HOSTS = 65_536
# Idle timeouts, capture seconds: 5 min for a connection that carried data (SMB clients
# keep sessions open with echo every 60 s or less; Windows idles them out after ~15 min);
# 30 s for one that never did, or is closing (a SYN unanswered for 30 s is dead: Linux
# gives up after ~31 s of retries).
ESTABLISHED_TIMEOUT = 300.0
SHORT_TIMEOUT = 30.0
# Capture seconds between idle scans triggered by ``feed``.
EXPIRY_INTERVAL = 1.0

# First payload bytes that claim a protocol on a non-standard port.
SMB_MAGICS = (b"\xffSMB", b"\xfeSMB", b"\xfdSMB", b"\xfcSMB")   # SMB1, SMB2, transform, compressed
# DCE/RPC CO PDU types (C706 12.6.4): request 0, bind 11, alter_context 14 from the client;
# response 2, fault 3, bind_ack 12, bind_nak 13, alter_context_resp 15 from the server.
DCERPC_CLIENT_PTYPES = frozenset((0x00, 0x0B, 0x0E))
DCERPC_SERVER_PTYPES = frozenset((0x02, 0x03, 0x0C, 0x0D, 0x0F))
DCERPC_HEADER = 16
# HTTP request lines (RFC 9110 9.3, WebDAV RFC 4918 9): a coerced server's back-authentication
# to a WebDAV listener, on any port ("\\\\host@8080\\x" in the call).
HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PROPFIND ",
                b"PROPPATCH ", b"MKCOL ", b"COPY ", b"MOVE ", b"LOCK ", b"UNLOCK ")

@dataclass(frozen=True)
class FlowSettings:
    """Bounds and timeouts of the flow table."""
    max_flows: int = MAX_FLOWS
    max_ignored_keys: int = MAX_IGNORED_KEYS
    established_timeout: float = ESTABLISHED_TIMEOUT
    short_timeout: float = SHORT_TIMEOUT
    tcp: TcpLimits = field(default_factory=TcpLimits)
    ooo_budget_bytes: int = OOO_BUDGET_BYTES
    memory_budget_bytes: int = FLOW_MEMORY_BUDGET_BYTES


def sniff_app(payload) -> tuple[str, bool | None] | None:
    """Name the protocol a payload starts with, and whether its sender is the client (None if
    the header doesn't say): ("smb" | "dcerpc" | "http", sender_is_client), or None."""
    if len(payload) >= 8 and payload[0] == 0:
        magic = bytes(payload[4:8])
        if magic in SMB_MAGICS:
            # NetBIOS session message (type 0, 3-byte length) holding an SMB header. The
            # reply bits: SMB2 Flags SERVER_TO_REDIR (MS-SMB2 2.2.1), SMB1 Flags REPLY
            # (MS-CIFS 2.2.3.1); transform/compression headers carry no direction.
            if magic == b"\xfeSMB" and len(payload) >= 24:
                return "smb", not payload[20] & 0x01
            if magic == b"\xffSMB" and len(payload) >= 14:
                return "smb", not payload[13] & 0x80
            return "smb", None
    if len(payload) >= DCERPC_HEADER and payload[0] == 5 and payload[1] == 0:
        frag_length = int.from_bytes(payload[8:10], "little" if payload[4] & 0x10 else "big")
        if frag_length >= DCERPC_HEADER:
            if payload[2] in DCERPC_CLIENT_PTYPES:
                return "dcerpc", True
            if payload[2] in DCERPC_SERVER_PTYPES:
                return "dcerpc", False
    if bytes(payload[:10]).startswith(HTTP_METHODS):
        return "http", True
    return None


def _app_by_port(server_port: int) -> str | None:
    if server_port in SMB_PORTS:
        return "smb"
    return "dcerpc" if server_port == DCERPC_PORT else None


class Flow:
    __slots__ = ("key", "app", "client", "server", "vlan", "midstream", "started", "closing",
                 "last_ts", "keys", "cost", "queued_ts")

    def __init__(self, key: FlowKey, app: str | None, midstream: bool, vlan: tuple, ts: float,
                 limits: TcpLimits, stats: Stats, keys: tuple, budget: ByteBudget):
        self.key = key
        self.app = app                # None until a payload names it (non-standard ports)
        self.client = TcpDirection(key, True, limits, stats, budget)
        self.server = TcpDirection(key, False, limits, stats, budget)
        self.vlan = vlan
        self.midstream = midstream
        self.started = False          # FlowStarted emitted
        self.closing = False          # ended; kept briefly to absorb its last packets
        self.last_ts = ts
        self.keys = keys              # the two direction keys in the table, the client's first
        self.cost = FLOW_BYTES        # estimated heap of this flow's state in every stage
        self.queued_ts = ts           # last_ts when it took its place in the eviction queue


class FlowTable:
    def __init__(self, settings: FlowSettings | None = None):
        self.settings = settings or FlowSettings()
        self.stats = Stats()
        self.ooo_budget = ByteBudget(self.settings.ooo_budget_bytes)
        # (src, dst, sport, dport) -> (Flow, from_client); two entries per flow
        self._by_key: dict[tuple, tuple[Flow, bool]] = {}
        # Queue order, for eviction: creation, and the back again for a flow that was active
        # when its turn came (see _make_room).
        self._flows: dict[FlowKey, Flow] = {}
        self.memory_used = 0      # sum of the tracked flows' costs
        self._ignored: set[tuple] = set()
        self._service_hosts: set[bytes] = set()
        self.next_expiry = 0.0     # capture time of the next idle scan ``feed`` will run

    # -- input ---------------------------------------------------------------------------
    def feed(self, ts: float, segment: Segment, frame: int) -> list:
        src, dst, sport, dport, seq, ack, flags, payload, vlan = segment
        key = (src, dst, sport, dport)
        if key in self._ignored:
            return []
        out: list = []
        if ts >= self.next_expiry:
            out.extend(self.expire(ts))
        entry = self._by_key.get(key)
        if entry is not None and entry[0].closing:
            if flags & (SYN | ACK) != SYN:
                self.stats["tcp_packets_after_end"] += 1
                return out
            self._unlink(entry[0])      # the 4-tuple reused by a new connection
            entry = None
        if entry is None:
            entry = self._new_flow(ts, segment, key, out)
            if entry is None:
                return out
        flow, from_client = entry
        flow.last_ts = ts
        if flow.app is None:
            if not payload:
                return self._advance(ts, frame, flow, from_client, seq, ack, flags, payload, out)
            sniffed = sniff_app(payload)
            if sniffed is None or (sniffed[0] == "http" and not from_client):
                self._ignore(flow)      # HTTP only from the client's side: not a server banner
                self._note_service(flow.keys[0], ts, out)
                return out
            flow.app = sniffed[0]      # roles stay as the handshake set them
        if not flow.started and payload:
            flow.started = True
            self.stats["flows_started"] += 1
            out.append(FlowStarted(flow.key, ts, flow.midstream, flow.app, flow.vlan))
        return self._advance(ts, frame, flow, from_client, seq, ack, flags, payload, out)

    def _advance(self, ts, frame, flow: Flow, from_client: bool, seq, ack, flags, payload, out: list) -> list:
        this, peer = (flow.client, flow.server) if from_client else (flow.server, flow.client)
        if flags & ACK:
            lost = peer.acknowledge(ts, frame, ack)
            if lost:
                out += lost
        if payload or flags & (SYN | FIN) or this.next == UNSET:
            out += this.segment(ts, frame, seq, payload, flags & SYN != 0, flags & FIN != 0)
        if flags & RST:
            self._end(ts, frame, flow, "rst", out)
        elif flow.client.fin_at != UNSET and flow.server.fin_at != UNSET:
            self._end(ts, frame, flow, "fin", out)
        return out

    def _new_flow(self, ts: float, segment: Segment, key: tuple, out: list) -> tuple[Flow, bool] | None:
        src, dst, sport, dport, _seq, _ack, flags, payload, vlan = segment
        syn = flags & (SYN | ACK | RST)
        if syn == SYN:
            from_client, midstream = True, False
        elif syn == SYN | ACK:
            from_client, midstream = False, False     # the handshake's second half: sender is server
        elif flags & RST:
            return None                               # nothing to end
        else:
            midstream = True
            from_client = self._client_by_port(sport, dport)
        app = _app_by_port(dport if from_client else sport)
        if app is None and midstream:
            # Judge a mid-connection flow on a non-standard port by its first payload (whose
            # header also tells the roles), without creating state for the pure ACKs before it.
            if not payload:
                return None
            sniffed = sniff_app(payload)
            if sniffed is None:
                self._ignore_keys(key, (dst, src, dport, sport))
                self._note_service(key, ts, out)
                return None
            app = sniffed[0]
            if sniffed[1] is not None:
                from_client = sniffed[1]
        if from_client:
            flow_key = FlowKey(_ip_text(src), sport, _ip_text(dst), dport)
        else:
            flow_key = FlowKey(_ip_text(dst), dport, _ip_text(src), sport)
        reverse = (dst, src, dport, sport)
        keys = (key, reverse) if from_client else (reverse, key)
        flow = Flow(flow_key, app, midstream, vlan, ts, self.settings.tcp, self.stats, keys, self.ooo_budget)
        self._flows[flow_key] = flow
        self._by_key[key] = (flow, from_client)
        self._by_key[reverse] = (flow, not from_client)
        self.memory_used += flow.cost
        self.stats["flows"] += 1
        self._make_room(ts, flow, out)
        return flow, from_client

    def charge(self, key: FlowKey, n: int, ts: float, out: list) -> None:
        """A later stage keeps ``n`` more bytes of state for the flow ``key`` (negative: it let
        go of some). Flows evicted to stay in the budget are ended into ``out``."""
        flow = self._flows.get(key)
        if flow is None or flow.closing:
            return
        flow.cost += n
        self.memory_used += n
        if n > 0 and self.memory_used > self.settings.memory_budget_bytes:
            self._make_room(ts, flow, out)

    @staticmethod
    def _client_by_port(sport: int, dport: int) -> bool:
        """Midstream roles: the well-known port is the server's; else the lower port is."""
        if dport in WELL_KNOWN_PORTS:
            return True
        if sport in WELL_KNOWN_PORTS:
            return False
        return dport <= sport

    # -- endings ---------------------------------------------------------------------------
    def _end(self, ts: float, frame: int, flow: Flow, reason: str, out: list) -> None:
        """Flush both directions and announce the end; keep the entry to absorb stragglers."""
        if flow.started:
            out.extend(flow.client.flush(ts, frame))
            out.extend(flow.server.flush(ts, frame))
            out.append(FlowEnded(flow.key, ts, reason))
            self.stats["flows_ended." + reason] += 1
        flow.closing = True
        flow.client = flow.server = None   # release buffers
        flow.last_ts = ts
        self.memory_used -= flow.cost - CLOSED_FLOW_BYTES   # the later stages let go of it too
        flow.cost = CLOSED_FLOW_BYTES

    def _make_room(self, ts: float, keep: Flow, out: list) -> None:
        """Evict flows while there are more than ``max_flows`` or their state is over the
        memory budget: the least recently active first, never ``keep`` (the flow being
        charged: new state wins over old). A second-chance queue (CLOCK) approximates LRU at
        O(1) per eviction: the flow at the front goes if it was idle since it took its place,
        else it goes to the back with its last activity as its new mark."""
        flows = self._flows
        settings = self.settings
        while len(flows) > 1 and (len(flows) > settings.max_flows or self.memory_used > settings.memory_budget_bytes):
            flow = flows[next(iter(flows))]
            if flow is keep or (flow.last_ts > flow.queued_ts and not flow.closing):
                del flows[flow.key]
                flows[flow.key] = flow
                flow.queued_ts = flow.last_ts
                continue
            if not flow.closing:
                if len(flows) > settings.max_flows:
                    out.append(self.stats.anomaly(ts, "tcp", "flow_table_full", flow.key))
                else:
                    out.append(self.stats.anomaly(ts, "tcp", "flow_memory_budget_exceeded", flow.key,
                                                  f"{self.memory_used} bytes of flow state"))
                    self.stats["flows_evicted_by_memory_budget"] += 1
                self.stats["flows_evicted"] += 1
                self._end(ts, 0, flow, "evicted", out)
            self._unlink(flow)

    def _unlink(self, flow: Flow) -> None:
        if self._flows.get(flow.key) is flow:
            del self._flows[flow.key]
            self.memory_used -= flow.cost
        for key in flow.keys:
            entry = self._by_key.get(key)
            if entry is not None and entry[0] is flow:
                del self._by_key[key]

    def _ignore(self, flow: Flow) -> None:
        self._unlink(flow)
        self._ignore_keys(*flow.keys)

    def _ignore_keys(self, key: tuple, reverse: tuple) -> None:
        if len(self._ignored) >= self.settings.max_ignored_keys:
            self._ignored.clear()
            self.stats["ignored_table_resets"] += 1
        self._ignored.add(key)
        self._ignored.add(reverse)
        self.stats["flows_ignored"] += 1

    def _note_service(self, key: tuple, ts: float, out: list) -> None:
        """An ignored flow's server on a SERVICE_PORTS port (the handshake's server, else the
        port side), once per host. Runs once per ignored flow, never per packet."""
        src, dst, sport, dport = key
        port, ip = (dport, dst) if dport in SERVICE_PORTS else (sport, src)
        if port not in SERVICE_PORTS or ip in self._service_hosts:
            return
        if len(self._service_hosts) >= MAX_SERVICE_HOSTS:
            self._service_hosts.clear()
        self._service_hosts.add(ip)
        out.append(ServiceSeen(_ip_text(ip), SERVICE_PORTS[port], ts))

    def expire(self, now: float) -> list:
        """End flows idle past their timeout; forget closed ones after the short timeout."""
        self.next_expiry = now + EXPIRY_INTERVAL
        out: list = []
        settings = self.settings
        stale = []
        for flow in self._flows.values():
            idle = now - flow.last_ts
            if idle >= settings.established_timeout or (
                    idle >= settings.short_timeout and (flow.closing or not flow.started)):
                stale.append(flow)
        for flow in stale:
            if not flow.closing:
                self._end(now, 0, flow, "idle", out)
            self._unlink(flow)
        return out

    def close(self, ts: float) -> list:
        """End of capture: every live flow ends ("end_of_capture") after its buffers flush, at
        its own last packet's time (the capture may have gone on with other flows until ts)."""
        out: list = []
        for flow in self._flows.values():
            if not flow.closing:
                self._end(flow.last_ts, 0, flow, "end_of_capture", out)
        self._flows.clear()
        self.memory_used = 0
        self._by_key.clear()
        self._ignored.clear()
        self._service_hosts.clear()
        return out

    def flow(self, key: FlowKey) -> Flow | None:
        """The tracked flow of a key (the bulk lane reads its TCP directions)."""
        return self._flows.get(key)

    @property
    def active(self) -> int:
        """Flows in the table (including ended ones kept to absorb their last packets)."""
        return len(self._flows)


def _ip_text(packed: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)
