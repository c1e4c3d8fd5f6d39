r"""The one place that knows the order of the stages.

    frame -> FrameDecoder -> FlowTable -+-> SmbConnection (per SMB flow) -> RpcAssociation (per pipe)
                                        +-> RpcAssociation (per ncacn_ip_tcp flow)
                                        +-> HttpNtlmFlow (per HTTP flow)
    RpcCall -> event_builder -> HeldCalls -> RpcCallEvent

Bulk SMB data that the NetBIOS stage is certain to skip (file READ/WRITE payloads) is
accounted by length on the bulk lane (sensor/net/lane.py) before any of the stages above, and
an in-order segment of a followed SMB flow goes from frame to SmbConnection in one pass on the
SMB fast path (sensor/smb/fastpath.py); both leave every record and counter as they were.

Frames come in by ``feed(ts, linktype, data, frame)``, one at a time (the stage contract:
live capture, ``--jobs`` workers, the tests), or, replaying a classic pcap file, by the
reader's batch entry (sensor/capture/batch.py), which hands each plain record of its mapped
window to ``_frame``, the same per-frame body, in place. The lane and the fast path read the
frame where it lies; only a frame the full stages decode is copied out.

Every stage is sans-IO and keeps one contract (sensor/stage.py); the pipeline only routes
units between them, keeps the per-flow context an event needs (pipe names, SMB sessions),
and hands each call to the held-call stage (sensor/held_calls.py) until its response or
fault gives the exception code.

``feed`` returns records in order: RpcCallEvent, and what later stages read beside it:
SmbSession and NtlmAuthentication (who authenticated to whom), EncryptedMessage (SMB3
transform headers), ServiceSeen (a Kerberos/LDAP server on an ignored flow) and Anomaly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sensor.anomaly import Anomaly, Stats
from sensor.budget import ByteBudget
from sensor.dcerpc.association import STUB_BUDGET_BYTES, RpcAssociation, RpcSettings
from sensor.dcerpc.events import RpcBind, RpcCall, RpcResult
from sensor.event_builder import CallContext, build_event, count_ndr_damage, resolve
from sensor.events import RpcCallEvent
from sensor.held_calls import HeldCalls
from sensor.http.ntlm import HttpNtlmFlow
from sensor.interfaces.catalog import Catalog, default_catalog
from sensor.net.flows import FLOW_MEMORY_BUDGET_BYTES, Flow, FlowSettings, FlowTable
from sensor.net.frames import LINKTYPE_ETHERNET, FrameDecoder
from sensor.net.lane import BulkLane, FrameHeaders
from sensor.net.stream import FlowEnded, FlowKey, FlowStarted, ServiceSeen, StreamData, StreamGap
from sensor.net.tcp import OOO_BUDGET_BYTES
from sensor.smb.connection import SmbConnection
from sensor.smb.events import (EncryptedMessage, KerberosAuthentication, NtlmAuthentication, PipeClosed,
                               PipeData, PipeId, PipeOpened, SmbSession)
from sensor.smb.fastpath import SmbFastPath
from sensor.smb.netbios import MESSAGE_BUDGET_BYTES

# Held calls are checked for timeout when capture time has advanced this far since the last check.
EXPIRY_INTERVAL = 1.0

# Heap each kind of per-flow state costs, charged to the flow table's memory budget (so the
# flows' total stays under it whatever their count). tracemalloc measurements rounded up;
# tests/robustness/test_flow_memory.py checks each against a measurement of real traffic.
SMB_FLOW_BYTES = 3072        # SmbConnection (parsers, NBSS streams, counters) and _FlowState
HTTP_FLOW_BYTES = 1152       # HttpNtlmFlow and _FlowState
RPC_FLOW_BYTES = 3072        # an ncacn_ip_tcp flow's _FlowState and RpcAssociation
SESSION_BYTES = 1280         # an SMB session (SessionBook entry, the pipeline's copy, names, its tree)
PIPE_BYTES = 768             # an open pipe (pipe table entry, _Pipe, names)
ASSOCIATION_BYTES = 2048     # a pipe's RpcAssociation with its first few contexts ...
CONTEXTS_IN_ASSOCIATION = 4  # ... this many (real clients propose 1-3 per bind) ...
CONTEXT_BYTES = 384          # ... and each one beyond (accepted, proposed or awaiting its ack)
REQUESTS_IN_CONNECTION = 16  # SMB requests awaiting their answer and trees SMB_FLOW_BYTES covers ...
REQUEST_BYTES = 304          # ... and each one beyond (up to 8192 pending and 1024 trees per dialect)

@dataclass
class PipelineSettings:
    """What a pipeline decodes (catalog, fast paths), what it reports to, and its bounds."""
    catalog: Catalog | None = None
    # Called with (flow, pipe id or None, RpcBind | RpcCall) for every bind and request on any
    # interface, catalogued or not: a dce_rpc.log-style view, and the corpus conformance tests.
    rpc_observer: Callable[[FlowKey, PipeId | None, object], None] | None = None
    # Account bulk SMB data frames by length before decoding them (sensor/net/lane.py). Off
    # only to check that it changes nothing.
    bulk_lane: bool = True
    # Take in-order segments of followed SMB flows from frame to SMB message in one pass
    # (sensor/smb/fastpath.py), and SMB2 messages reassembled from segments through its header
    # triage. Off only to check that it changes nothing.
    fast_path: bool = True
    # Bytes of state all tracked flows may hold (sensor/net/flows.py FLOW_MEMORY_BUDGET_BYTES).
    flow_memory_budget: int = FLOW_MEMORY_BUDGET_BYTES
    # Pipelines sharing one service's memory (live --workers N): each takes 1/N of every byte
    # budget (flow state, TCP out-of-order, NBSS messages, stubs), so the budgets' total under
    # the unit's MemoryMax is the same whatever the worker count.
    memory_share: int = 1


@dataclass(slots=True)
class _Pipe:
    """A pipe open on a connection: its name and tree."""
    name: str
    tree: str


class _FlowState:
    """What the pipeline keeps per TCP flow: its parsers and the context events need."""

    __slots__ = ("tcp", "smb", "smb2", "http", "assocs", "pipes", "sessions", "encrypted_sessions", "extra_contexts",
                 "extra_requests")

    def __init__(self, tcp: Flow | None, smb: SmbConnection | None, http: HttpNtlmFlow | None = None):
        self.tcp = tcp          # the flow table's flow (the bulk lane reads its TCP state)
        self.smb = smb
        self.smb2 = smb.smb2 if smb is not None else None   # its SMB2 state, read per segment
        self.http = http
        self.assocs: dict[PipeId | None, RpcAssociation] = {}
        self.pipes: dict[PipeId, _Pipe] = {}
        self.sessions: dict[int, SmbSession] = {}
        # Made a set at the first encrypted session: an empty set costs 216 bytes per flow.
        self.encrypted_sessions: set[int] | frozenset[int] = frozenset()
        # association -> contexts beyond CONTEXTS_IN_ASSOCIATION charged for it (made when one has any)
        self.extra_contexts: dict[PipeId | None, int] | None = None
        self.extra_requests = 0     # SMB requests and trees beyond REQUESTS_IN_CONNECTION charged


class Pipeline:
    def __init__(self, settings: PipelineSettings | None = None):
        self.settings = settings or PipelineSettings()
        self.catalog = self.settings.catalog or default_catalog()
        # Every association of this pipeline (one per process or worker) shares one stub
        # budget, and keeps only the stubs of catalogued interfaces.
        share = self.settings.memory_share
        self.stub_budget = ByteBudget(STUB_BUDGET_BYTES // share)
        # ... and one budget bounds the partial SMB messages all connections buffer.
        self.message_budget = ByteBudget(MESSAGE_BUDGET_BYTES // share)
        self._rpc_settings = RpcSettings(stub_interfaces=frozenset(self.catalog.by_uuid), budget=self.stub_budget)
        self.capture_file = ""
        self.frames = FrameDecoder()
        self.flows = FlowTable(FlowSettings(ooo_budget_bytes=OOO_BUDGET_BYTES // share,
                                            memory_budget_bytes=self.settings.flow_memory_budget // share))
        # Units of flows the memory budget evicted while a unit of another was being routed:
        # routed right after it.
        self._evicted: list = []
        self._flows: dict[FlowKey, _FlowState] = {}
        self.held = HeldCalls()
        self._own = Stats()
        # Per-packet counts as plain ints (a Counter update per packet costs more than the
        # frame decode); folded into ``stats`` when read.
        self._packets = 0
        self._bytes = 0
        # The flow of the previous stream unit and its state: bulk transfers send runs of
        # segments on one flow, and FlowKey's dataclass __hash__ is a Python-level call.
        self._last_flow: FlowKey | None = None
        self._last_state: _FlowState | None = None
        self._retired = Stats()     # counters of stages whose flow or pipe has ended
        self._ts = 0.0              # capture time of the last frame: when close() ends what is left
        self._next_expiry = 0.0
        self.lane = BulkLane() if self.settings.bulk_lane else None
        self._lane_candidate: _FlowState | None = None   # an SMB flow the last frame touched
        self.fast = SmbFastPath(self.flows, self.lane) if self.settings.fast_path else None
        self._headers = FrameHeaders()      # the frame the lane and the fast path read, reused

    # -- input -------------------------------------------------------------------------
    def feed(self, ts: float, linktype: int, data, frame: int) -> list:
        """One frame (the stage contract): the records it completed, in order."""
        out: list = []
        # a live ring's view is copied: dict keys and messages want bytes
        raw = data if type(data) is bytes else bytes(data)
        self._frame(ts, linktype, raw, 0, len(raw), frame, data, out)
        return out

    def _frame(self, ts: float, linktype: int, buf, start: int, end: int, frame: int, data, out: list) -> None:
        """One frame at ``buf[start:end]``: its ``bytes`` (``feed``), or the capture reader's
        window (the batch entry, sensor/capture/batch.py), read in place by the bulk lane and
        the SMB fast path; ``data`` is the frame as given, or None for a copy when a stage
        needs one. Its records are appended to ``out``."""
        self._packets += 1
        self._bytes += end - start
        self._ts = ts
        lane = self.lane
        fast = self.fast
        taken = False
        if linktype == LINKTYPE_ETHERNET and (lane is not None or fast is not None):
            headers = self._headers
            if headers.read(buf, start, end):
                if lane is not None and lane.entries and lane.admit(ts, headers):
                    return
                if fast is not None:
                    events = fast.take(ts, buf, headers, frame)
                    if events is not None:
                        taken = True
                        state = fast.owner
                        if state is not None:   # it carried payload: the SMB stage ran, as for a routed StreamData
                            if fast.skipping:   # ... and the NetBIOS stage skips a payload: the lane may arm
                                fast.skipping = False
                                self._lane_candidate = state
                            self._smb_events(state, state.tcp.key, ts, events, out)   # (the fast path follows only flows with a TCP state)
        if not taken:
            segment = self.frames.feed(ts, linktype, buf[start:end] if data is None else data)
            if segment is not None:
                if lane is not None and lane.entries:
                    owner = lane.release_segment(segment[0], segment[1], segment[2], segment[3])
                    if owner is not None:
                        self._lane_candidate = owner
                for unit in self.flows.feed(ts, segment, frame):
                    self._route(unit, out)
        if self._evicted:
            self._route_evicted(out)
        if ts >= self._next_expiry:   # the flow table expires its own flows as packets pass
            self._next_expiry = ts + EXPIRY_INTERVAL
            self._emit_all(self.held.expire(ts), out)
        if lane is not None and (self._lane_candidate is not None or lane.entries):
            self._arm_lane(lane)

    def _charge(self, flow: FlowKey, n: int, ts: float) -> None:
        """Per-flow state grew (or shrank) by ``n`` bytes: the flow table's memory budget."""
        self.flows.charge(flow, n, ts, self._evicted)

    def _charge_requests(self, state: _FlowState, flow: FlowKey, extra: int, ts: float) -> None:
        """A client can keep thousands of SMB requests unanswered (or trees connected): those
        beyond the few SMB_FLOW_BYTES covers are charged as they come and go."""
        if extra != state.extra_requests:
            self._charge(flow, (extra - state.extra_requests) * REQUEST_BYTES, ts)
            state.extra_requests = extra

    def _charge_contexts(self, state: _FlowState, flow: FlowKey, pipe_id: PipeId | None,
                         assoc: RpcAssociation, ts: float) -> None:
        """Binds can make an association keep hundreds of contexts: those beyond the few
        ASSOCIATION_BYTES covers are charged as they come and go."""
        extra = assoc.contexts_held - CONTEXTS_IN_ASSOCIATION
        charged = state.extra_contexts.get(pipe_id, 0) if state.extra_contexts else 0
        if extra > 0 or charged:
            extra = max(extra, 0)
            if extra != charged:
                self._charge(flow, (extra - charged) * CONTEXT_BYTES, ts)
                if state.extra_contexts is None:
                    state.extra_contexts = {}
                state.extra_contexts[pipe_id] = extra

    def _route_evicted(self, out: list) -> None:
        while self._evicted:
            units, self._evicted = self._evicted, []
            for unit in units:
                self._route(unit, out)

    def _arm_lane(self, lane: BulkLane) -> None:
        state = self._lane_candidate
        if state is not None:
            self._lane_candidate = None
            if state.tcp is not None:
                lane.arm(state.tcp, state.smb, state)
        lane.until = min(self._next_expiry, self.flows.next_expiry)

    def tick(self, now: float) -> list:
        """An idle tick in live capture (no packet for a while): expire flows and held calls."""
        out: list = []
        for unit in self.flows.expire(now):
            self._route(unit, out)
        self._route_evicted(out)
        self._emit_all(self.held.expire(now), out)
        if self.lane is not None:
            self._arm_lane(self.lane)
        return out

    def close(self) -> list:
        """End of input, at the capture time of the last frame fed."""
        ts = self._ts
        out: list = []
        for unit in self.flows.close(ts):
            self._route(unit, out)
        for flow in list(self._flows):
            self._end_flow(flow, ts, out)
        self._emit_all(self.held.close(ts), out)
        return out

    @property
    def stats(self) -> Stats:
        total = Stats()
        total.update(self._own)
        total.update(self.held.stats)
        total["packets"] += self._packets
        total["bytes"] += self._bytes
        if self.lane is not None:
            total["bulk_lane_packets"] += self.lane.packets
            total["bulk_lane_bytes"] += self.lane.bytes
        if self.fast is not None:
            total["smb_fast_path_packets"] += self.fast.frames
            total["nbss_messages"] += self.fast.messages
            total["smb2_operations"] += self.fast.operations
        total.update(self._retired)
        total.update(self.frames.stats)
        total.update(self.flows.stats)
        for state in self._flows.values():
            if state.smb is not None:
                total.update(state.smb.stats)
            if state.http is not None:
                total.update(state.http.stats)
            for assoc in state.assocs.values():
                total.update(assoc.stats)
        return total

    # -- routing -----------------------------------------------------------------------
    def _route(self, unit, out: list) -> None:
        kind = type(unit)
        if kind is StreamData or kind is StreamGap:
            flow = unit.flow
            if flow is self._last_flow:
                state = self._last_state
            else:
                state = self._flows.get(flow)
                if state is None:
                    return
                self._last_flow, self._last_state = flow, state
            if state.smb is not None:
                self._lane_candidate = state
                if kind is StreamData:
                    events = state.smb.feed(unit.from_client, unit.ts, unit.data, unit.frame)
                else:
                    events = state.smb.gap(unit.from_client, unit.ts, unit.length)
                self._smb_events(state, flow, unit.ts, events, out)
            elif state.http is not None:
                if kind is StreamData:
                    out += state.http.feed(unit.from_client, unit.ts, unit.data, unit.frame)
                else:
                    out += state.http.gap(unit.from_client, unit.ts, unit.length)
            else:
                assoc = state.assocs[None]
                if kind is StreamData:
                    events = assoc.feed(unit.from_client, unit.ts, unit.data, unit.frame)
                    self._charge_contexts(state, flow, None, assoc, unit.ts)
                else:
                    events = assoc.gap(unit.from_client, unit.ts, unit.length)
                for ev in events:
                    self._on_rpc(state, unit.flow, None, ev, out)
        elif kind is FlowStarted:
            self._last_flow = self._last_state = None     # a reused 4-tuple replaces its state
            if unit.app == "smb":
                state = self._flows[unit.flow] = _FlowState(self.flows.flow(unit.flow),
                                                            SmbConnection(unit.flow, budget=self.message_budget,
                                                                          triage=self.fast is not None))
                if self.fast is not None:
                    self.fast.arm(state.tcp, state.smb, state)
                self._charge(unit.flow, SMB_FLOW_BYTES, unit.ts)
            elif unit.app == "http":
                self._flows[unit.flow] = _FlowState(None, None, HttpNtlmFlow(unit.flow))
                self._charge(unit.flow, HTTP_FLOW_BYTES, unit.ts)
            else:
                state = self._flows[unit.flow] = _FlowState(None, None)
                state.assocs[None] = RpcAssociation(unit.flow, self._rpc_settings)
                self._charge(unit.flow, RPC_FLOW_BYTES, unit.ts)
        elif kind is FlowEnded:
            self._end_flow(unit.flow, unit.ts, out)
        elif kind is Anomaly or kind is ServiceSeen:
            out.append(unit)

    def _smb_events(self, state: _FlowState, flow: FlowKey, ts: float, events: list, out: list) -> None:
        """The SMB stage took a segment (routed, or on the fast path): its requests held are
        charged, then its events routed."""
        # requests awaiting their response and trees kept, both dialects (up to 2 x 9216)
        extra = state.smb2.connection_held() - REQUESTS_IN_CONNECTION
        if extra > 0 or state.extra_requests:
            self._charge_requests(state, flow, max(extra, 0), ts)
        for ev in events:
            self._on_smb(state, ev, out)

    def _on_smb(self, state: _FlowState, ev, out: list) -> None:
        kind = type(ev)
        if kind is PipeData:
            assoc = state.assocs.get(ev.pipe)
            if assoc is None:
                assoc = state.assocs[ev.pipe] = RpcAssociation(ev.flow, self._rpc_settings)
                self._charge(ev.flow, ASSOCIATION_BYTES, ev.ts)
            for rpc in assoc.feed(ev.from_client, ev.ts, ev.data, ev.frame):
                self._on_rpc(state, ev.flow, ev.pipe, rpc, out)
            self._charge_contexts(state, ev.flow, ev.pipe, assoc, ev.ts)
        elif kind is PipeOpened:
            if ev.pipe not in state.pipes:
                self._charge(ev.flow, PIPE_BYTES, ev.ts)
            state.pipes[ev.pipe] = _Pipe(ev.name, ev.tree)
            self._own["pipes_opened"] += 1
        elif kind is PipeClosed:
            self._end_association(state, ev.flow, ev.pipe, ev.ts, out)
            if state.pipes.pop(ev.pipe, None) is not None:
                self._charge(ev.flow, -PIPE_BYTES, ev.ts)
        elif kind is SmbSession:
            if ev.session_id not in state.sessions:
                self._charge(ev.flow, SESSION_BYTES, ev.ts)
            state.sessions[ev.session_id] = ev
            if ev.encrypted:
                self._note_encrypted(state, ev.session_id)
            out.append(ev)      # who authenticated to whom: what survives encryption
        elif kind is EncryptedMessage:
            self._own["smb_encrypted_messages"] += 1
            self._note_encrypted(state, ev.session_id)
            out.append(ev)      # sizes in the clear: the transform-header fingerprint
        elif kind is NtlmAuthentication or kind is KerberosAuthentication or kind is Anomaly:
            out.append(ev)      # NTLMSSP AUTHENTICATE, Kerberos AP-REQ: the coercion correlator's other half

    def _note_encrypted(self, state: _FlowState, session_id: int) -> None:
        if session_id not in state.encrypted_sessions:
            state.encrypted_sessions = state.encrypted_sessions | {session_id}
            self._own["smb_encrypted_sessions"] += 1

    def _on_rpc(self, state: _FlowState, flow: FlowKey, pipe_id: PipeId | None, ev, out: list) -> None:
        kind = type(ev)
        observer = self.settings.rpc_observer
        if observer is not None and (kind is RpcCall or kind is RpcBind):
            observer(flow, pipe_id, ev)
        if kind is RpcCall:
            self._own["rpc_calls"] += 1
            ctx = self._context(state, flow, pipe_id)
            resolved = resolve(self.catalog, ev, ctx)
            if resolved is None:
                return
            event = build_event(resolved[0], resolved[1], ev, ctx)
            count_ndr_damage(event, flow, self._own)
            self._emit_all(self.held.hold((flow, pipe_id), ev.call_id, ev.ts, event), out)
        elif kind is RpcResult:
            event = self.held.answer((flow, pipe_id), ev.call_id, ev.status)
            if event is not None:
                self._own["events"] += 1
                out.append(event)
        elif kind is Anomaly:
            out.append(ev)

    def _context(self, state: _FlowState, flow: FlowKey, pipe_id: PipeId | None) -> CallContext:
        if pipe_id is None:
            assoc = state.assocs.get(None)
            return CallContext(flow, None, over_smb=False, capture_file=self.capture_file,
                               rpc_server_name=assoc.server_name if assoc else "")
        pipe = state.pipes.get(pipe_id)
        session = state.sessions.get(pipe_id[1])
        return CallContext(
            flow,
            pipe.name if pipe else None,
            over_smb=True,
            tree=pipe.tree if pipe else "",
            session=session,
            encrypted=pipe_id[1] in state.encrypted_sessions,
            capture_file=self.capture_file,
        )

    def _emit_all(self, events: list[RpcCallEvent], out: list) -> None:
        if events:
            self._own["events"] += len(events)
            out += events

    # -- endings -----------------------------------------------------------------------
    def _end_association(self, state: _FlowState, flow: FlowKey, pipe_id: PipeId | None, ts: float,
                         out: list) -> None:
        assoc = state.assocs.pop(pipe_id, None)
        if assoc is None:
            return
        if pipe_id is not None:
            extra = state.extra_contexts.pop(pipe_id, 0) if state.extra_contexts else 0
            self._charge(flow, -ASSOCIATION_BYTES - extra * CONTEXT_BYTES, ts)
        for ev in assoc.close(ts):
            self._on_rpc(state, flow, pipe_id, ev, out)
        self._retired.update(assoc.stats)
        self._emit_all(self.held.release((flow, pipe_id)), out)

    def _end_flow(self, flow: FlowKey, ts: float, out: list) -> None:
        state = self._flows.get(flow)
        if state is None:
            return
        if state is self._last_state:
            self._last_flow = self._last_state = None
        if self.lane is not None:
            self.lane.release(state)    # its skip counts and TCP offsets, before they are read
        if self.fast is not None:
            self.fast.release(state)
        if state.smb is not None:
            for ev in state.smb.close(ts):
                self._on_smb(state, ev, out)
            self._retired.update(state.smb.stats)
        if state.http is not None:
            out += state.http.close(ts)
            self._retired.update(state.http.stats)
        for pipe_id in list(state.assocs):
            self._end_association(state, flow, pipe_id, ts, out)
        del self._flows[flow]
