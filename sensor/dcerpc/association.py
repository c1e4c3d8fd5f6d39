"""One DCE/RPC association: the byte streams of one named pipe or one ncacn_ip_tcp connection.

Frames PDUs by frag_length across any write boundary, tracks presentation contexts
(bind / alter_context and their acks), joins request fragments per call_id and links
responses and faults to their call. Sans-IO: bytes in, RpcBind / RpcCall / RpcResult /
Anomaly out.
"""
from __future__ import annotations

from dataclasses import dataclass

from sensor.anomaly import Anomaly, Stats
from sensor.budget import ByteBudget
from sensor.dcerpc import pdu
from sensor.dcerpc.events import RpcBind, RpcCall, RpcEvent, RpcResult
from sensor.net.stream import FlowKey
from sensor.smb.kerberos import KerberosError, find_ap_request
from sensor.smb.ntlmssp import NtlmChallenge, NtlmsspError, find_ntlmssp

LAYER = "dcerpc"

# MS-RPCE 3.3.1.5.1: max_xmit_frag/max_recv_frag are uint16, so no compliant PDU exceeds
# 65535 bytes; the slack covers nothing legitimate and only makes the bound obvious.
MAX_FRAG_LENGTH = 65535
# A request stub larger than this is cut (and flagged): the coercion calls carry a few
# hundred bytes, and Windows' default RPC max request size for unauthenticated callers is
# far below a mebibyte; the arguments that matter are at the start of the stub.
MAX_STUB_BYTES = 1 << 20
# Fragments stored per call: 1 MiB of stub in 64-byte fragments; beyond it, fragments are
# counted but not kept (the stub is flagged truncated).
MAX_FRAGMENTS_PER_CALL = 16384
# Requests being reassembled at once. Windows serialises calls on a pipe unless the client
# multiplexes; 64 concurrent fragmented calls per association is beyond any real client.
MAX_CALLS_IN_FLIGHT = 64
# Stub bytes being joined by all associations of a process together (one ByteBudget per
# Pipeline). Only fragmented calls still in flight hold stub bytes, a coercion call's stub is a
# few hundred bytes, and uncatalogued interfaces are not buffered at all: 64 MiB is 64 maximal
# stubs at once, and keeps the worst case (100k flows x 256 pipes x 64 calls x 1 MiB) to a
# fixed share of a sensor's memory.
STUB_BUDGET_BYTES = 64 << 20
# Binds/alter_contexts awaiting their ack. Clients wait for each ack (C706 12.4.1.3), so
# more than a handful pending means we lost the acks.
MAX_PENDING_BINDS = 8
# Presentation contexts kept per association. p_cont_id is uint16; Windows clients use a
# few per association; 256 covers every capture in the corpus with room.
MAX_CONTEXTS = 256


@dataclass(frozen=True)
class RpcSettings:
    """Bounds of one DCE/RPC association's state."""
    max_frag_length: int = MAX_FRAG_LENGTH
    max_stub_bytes: int = MAX_STUB_BYTES
    max_fragments_per_call: int = MAX_FRAGMENTS_PER_CALL
    max_calls_in_flight: int = MAX_CALLS_IN_FLIGHT
    max_pending_binds: int = MAX_PENDING_BINDS
    max_contexts: int = MAX_CONTEXTS
    # Interfaces (lower-case uuids) whose request stubs are kept; a call on an accepted or
    # proposed context naming any other interface is counted and its stub skipped by length.
    # None keeps every stub. A call whose context is unknown (bind missed) keeps its stub:
    # the interface may still be inferred from it.
    stub_interfaces: frozenset[str] | None = None
    # Shared by every association of a process: caps the sum of stubs being joined.
    budget: ByteBudget | None = None


_Binding = tuple[str, tuple[int, int], bool]


class _Direction:
    """Byte-stream state of one direction."""

    __slots__ = ("buf", "skip", "resyncing")

    def __init__(self) -> None:
        self.buf = bytearray()   # an incomplete PDU (bounded by max_frag_length)
        self.skip = 0            # bytes of a response body still to pass over unbuffered
        self.resyncing = False   # after a gap or garbage: scanning for a plausible header


class _PendingCall:
    """A request whose last fragment has not arrived yet."""

    __slots__ = ("call_id", "ctx_id", "opnum", "object_uuid", "little", "auth", "chunks", "size", "fragments",
                 "truncated", "keep")

    def __init__(self, call_id: int, req: pdu.Request, little: bool, keep: bool) -> None:
        self.call_id = call_id
        self.ctx_id = req.ctx_id
        self.opnum = req.opnum
        self.object_uuid = req.object_uuid
        self.little = little
        self.auth = req.auth
        self.chunks: list[bytes] = []
        self.size = 0
        self.fragments = 0
        self.truncated = False
        self.keep = keep          # stub wanted: False skips it (uncatalogued interface)


class RpcAssociation:
    """The stage contract (sensor/stage.py): ``feed``/``gap`` per direction, ``close`` at the
    end of the pipe or flow; every anomaly names ``flow``."""

    __slots__ = ("flow", "settings", "stats", "_dirs", "_calls", "_pending_binds", "_contexts", "_proposed",
                 "_reported_proposals", "_bind_service_host", "server_name")

    def __init__(self, flow: FlowKey, settings: RpcSettings | None = None) -> None:
        self.flow = flow
        self.settings = settings or RpcSettings()
        self.stats = Stats()
        self._dirs = (_Direction(), _Direction())     # [from_client]: server's, client's
        self._calls: dict[int, _PendingCall] = {}     # oldest first (a dict keeps insertion order)
        self._pending_binds: list[tuple[int, list[pdu.Context]]] = []
        # ctx_id -> (interface uuid, version, NDR64?): what the server accepted.
        self._contexts: dict[int, _Binding] = {}
        # ctx_id -> what a bind proposed while its ack is outstanding. A one-sided capture
        # (client to server only) never shows the ack; the client's proposal still names
        # the interface its calls are meant for, as it does for tshark.
        self._proposed: dict[int, _Binding] = {}
        # ctx_ids of proposals already reported as an unacknowledged RpcBind (at their first call).
        # (A frozenset until the first one: an empty set costs 216 bytes per association.)
        self._reported_proposals: set[int] | frozenset[int] = frozenset()
        # The server's name from an authenticated bind: the NTLMSSP CHALLENGE of its ack (AV
        # pairs, MS-NLMP 2.2.2.1), or the host of the Kerberos service the bind's AP-REQ named
        # once the server accepted it: over ncacn_ip_tcp no SMB session names the server.
        self.server_name = ""
        # That Kerberos service host, from the last authenticated bind until its ack.
        self._bind_service_host = ""

    # -- the stage contract -------------------------------------------------------------

    def feed(self, from_client: bool, ts: float, data: bytes | memoryview, frame: int) -> list[RpcEvent | Anomaly]:
        d = self._dirs[from_client]
        out: list = []
        self.stats["bytes"] += len(data)
        start = 0
        if d.skip:
            start = min(d.skip, len(data))
            d.skip -= start
            if start == len(data):
                return out
        if d.buf:
            d.buf += data[start:]
            src: bytes | bytearray | memoryview = d.buf
            start = 0
        else:
            src = data
        view = memoryview(src)
        try:
            pos = self._drain(d, from_client, view, start, ts, frame, out)
        finally:
            view.release()
        if src is d.buf:
            del d.buf[:pos]
        else:
            d.buf = bytearray(src[pos:])
        return out

    def gap(self, from_client: bool, ts: float, length: int) -> list[RpcEvent | Anomaly]:
        """``length`` bytes of one direction were lost: drop its partial PDU and resync at the
        next header."""
        d = self._dirs[from_client]
        d.buf.clear()
        d.skip = 0
        d.resyncing = True
        detail = "client side" if from_client else "server side"
        if from_client and self._calls:
            # A lost fragment leaves a hole in every call being joined: none can be trusted.
            detail += f", {len(self._calls)} fragmented call(s) abandoned"
            self._drop_all_calls()
        return [self._anomaly(ts, "dcerpc_gap_resync", f"{length} bytes, {detail}")]

    @property
    def contexts_held(self) -> int:
        """Presentation contexts kept: accepted, proposed, and in binds awaiting their ack
        (up to 256 + 256 + 8 x 255: what the flow memory budget charges beyond a few)."""
        return len(self._contexts) + len(self._proposed) + sum(len(c) for _, c in self._pending_binds)

    def close(self, ts: float) -> list[RpcEvent | Anomaly]:
        """Calls still being joined are dropped (their last fragment never came)."""
        self.stats["calls_incomplete_at_close"] += len(self._calls)
        self._drop_all_calls()
        self._pending_binds.clear()
        self._contexts.clear()
        self._proposed.clear()
        self._reported_proposals = frozenset()
        for d in self._dirs:
            d.buf = bytearray()
            d.skip = 0
        return []

    def _anomaly(self, ts: float, name: str, detail: str = "") -> Anomaly:
        """Count and return a named anomaly of this association's flow."""
        return self.stats.anomaly(ts, LAYER, name, self.flow, detail)

    # -- framing ------------------------------------------------------------------------

    def _drain(self, d: _Direction, from_client: bool, buf: memoryview, pos: int,
               ts: float, frame: int, out: list) -> int:
        """Handle every complete PDU in ``buf`` from ``pos``; return where the rest begins."""
        max_frag = self.settings.max_frag_length
        end = len(buf)
        while end - pos >= pdu.COMMON_HEADER_LEN:
            if d.resyncing:
                found = self._scan(buf, pos, max_frag)
                self.stats["resync_bytes_skipped"] += found - pos
                pos = found
                if end - pos < pdu.COMMON_HEADER_LEN:
                    break
                d.resyncing = False
            hdr = pdu.parse_header(buf, pos)
            if hdr is None or hdr.frag_length > max_frag:
                detail = "implausible common header" if hdr is None else f"frag_length {hdr.frag_length}"
                out.append(self._anomaly(ts, "dcerpc_bad_header" if hdr is None else "dcerpc_frag_too_large",
                                         f"frame {frame}: {detail}"))
                d.resyncing = True
                pos += 1
                continue
            if hdr.ptype == pdu.PTYPE_RESPONSE and from_client is False:
                # Only the header matters: pass over the stub without buffering it.
                self.stats["pdus"] += 1
                if hdr.flags & pdu.PFC_LAST_FRAG:
                    self.stats["results"] += 1
                    out.append(RpcResult(ts, hdr.call_id, 0, False))
                take = min(hdr.frag_length, end - pos)
                d.skip = hdr.frag_length - take
                pos += take
                continue
            if end - pos < hdr.frag_length:
                break
            self.stats["pdus"] += 1
            try:
                self._pdu(hdr, from_client, buf[pos:pos + hdr.frag_length], ts, frame, out)
            except pdu.PduError as exc:
                out.append(self._anomaly(ts, "dcerpc_malformed_pdu",
                                         f"frame {frame}: ptype {hdr.ptype}: {exc}"))
            pos += hdr.frag_length
        if d.resyncing and end - pos >= pdu.COMMON_HEADER_LEN:
            pos = self._scan(buf, pos, max_frag)
        return pos

    @staticmethod
    def _scan(buf: memoryview, pos: int, max_frag: int) -> int:
        """The offset of the next plausible header, or where fewer than a header's bytes remain.
        Only those last bytes are kept, so the scan never holds more than a header."""
        last = len(buf) - pdu.COMMON_HEADER_LEN
        raw = buf.obj if isinstance(buf.obj, (bytes, bytearray)) and len(buf.obj) == len(buf) else bytes(buf)
        while pos <= last:
            pos = raw.find(b"\x05", pos, last + 1)
            if pos < 0:
                return last + 1
            if pdu.plausible_header(buf, pos, max_frag):
                return pos
            pos += 1
        return pos

    # -- PDUs ---------------------------------------------------------------------------

    def _pdu(self, hdr: pdu.Header, from_client: bool, data: memoryview, ts: float, frame: int, out: list) -> None:
        ptype = hdr.ptype
        if ptype not in pdu.CO_PTYPES:
            out.append(self._anomaly(ts, "dcerpc_unknown_ptype", f"frame {frame}: ptype {ptype}"))
            return
        if ptype not in (pdu.CLIENT_PTYPES if from_client else pdu.SERVER_PTYPES):
            out.append(self._anomaly(ts, "dcerpc_wrong_direction",
                                     f"frame {frame}: ptype {ptype} from {'client' if from_client else 'server'}"))
            return
        if ptype == pdu.PTYPE_REQUEST:
            self._request(hdr, data, ts, frame, out)
        elif ptype == pdu.PTYPE_FAULT:
            self.stats["results"] += 1
            out.append(RpcResult(ts, hdr.call_id, pdu.fault_status(data, hdr), True))
        elif ptype in (pdu.PTYPE_BIND, pdu.PTYPE_ALTER_CONTEXT):
            self._bind(hdr, data, ts, out)
        elif ptype in (pdu.PTYPE_BIND_ACK, pdu.PTYPE_ALTER_CONTEXT_RESP):
            self._bind_ack(hdr, data, ts, out)
        elif ptype == pdu.PTYPE_BIND_NAK:
            self._forget_proposals(self._take_pending_bind(hdr.call_id))
            self._bind_service_host = ""            # a refused ticket names nothing
        else:
            # auth3, shutdown, co_cancel, orphaned: recognised, nothing to report.
            self.stats[f"ptype_{ptype}"] += 1

    def _bind(self, hdr: pdu.Header, data: memoryview, ts: float, out: list) -> None:
        contexts = pdu.parse_bind(data, hdr)
        if len(self._pending_binds) >= self.settings.max_pending_binds:
            self._pending_binds.pop(0)
            out.append(self._anomaly(ts, "dcerpc_too_many_pending_binds"))
        self._pending_binds.append((hdr.call_id, contexts))
        # Every bind replaces it: a name a refused or unauthenticated bind carried never carries over.
        self._bind_service_host = self._service_host(hdr, data, ts, out) if hdr.auth_length else ""
        for ctx in contexts:
            if ctx.ctx_id in self._proposed or len(self._proposed) < self.settings.max_contexts:
                # NDR64 only when it is the one syntax offered: with several, the ack decides.
                ndr64 = ctx.transfer_syntaxes == (pdu.NDR64_SYNTAX,)
                self._proposed[ctx.ctx_id] = (ctx.interface_uuid, ctx.interface_version, ndr64)
                self._reported_proposals -= {ctx.ctx_id}     # a new proposal is a new bind

    def _forget_proposals(self, contexts: list[pdu.Context] | None) -> None:
        """The server answered: its ack, not the proposal, now says what each context is."""
        for ctx in contexts or ():
            self._proposed.pop(ctx.ctx_id, None)
            self._reported_proposals -= {ctx.ctx_id}

    def _take_pending_bind(self, call_id: int) -> list[pdu.Context] | None:
        """The bind this ack answers: the one with its call_id (C706 12.6.4.4: the ack
        echoes it), else the oldest, since acks come in order."""
        for i, (pending_id, contexts) in enumerate(self._pending_binds):
            if pending_id == call_id:
                del self._pending_binds[i]
                return contexts
        return self._pending_binds.pop(0)[1] if self._pending_binds else None

    def _bind_ack(self, hdr: pdu.Header, data: memoryview, ts: float, out: list) -> None:
        results = pdu.parse_bind_ack(data, hdr)
        learned = self._challenge(hdr, data, ts, out) if hdr.auth_length else False
        contexts = self._take_pending_bind(hdr.call_id)
        self._forget_proposals(contexts)
        if contexts is None:
            if results:
                out.append(self._anomaly(ts, "dcerpc_ack_without_bind", f"call_id {hdr.call_id}"))
            return
        if len(results) != len(contexts):
            out.append(self._anomaly(ts, "dcerpc_bind_result_count",
                                     f"{len(contexts)} contexts, {len(results)} results"))
        for ctx, res in zip(contexts, results):
            if res.result != pdu.RESULT_ACCEPTANCE:
                continue
            if ctx.ctx_id not in self._contexts and len(self._contexts) >= self.settings.max_contexts:
                out.append(self._anomaly(ts, "dcerpc_too_many_contexts", f"ctx_id {ctx.ctx_id}"))
                continue
            # A later alter_context re-binding a ctx_id replaces what it named.
            self._contexts[ctx.ctx_id] = (ctx.interface_uuid, ctx.interface_version,
                                          res.transfer_syntax == pdu.NDR64_SYNTAX)
            self.stats["binds"] += 1
            out.append(RpcBind(ts, ctx.ctx_id, ctx.interface_uuid, ctx.interface_version, res.transfer_syntax))
        if hdr.auth_length and self._bind_service_host and not learned \
                and any(res.result == pdu.RESULT_ACCEPTANCE for res in results):
            # The client chose the service name; it names this server only because the server
            # accepted the ticket (answered the bind with authentication of its own): a ticket
            # for another host's SPN is encrypted with that host's key (RFC 4120 3.2.3).
            self.server_name = self._bind_service_host
        self._bind_service_host = ""

    def _service_host(self, hdr: pdu.Header, data: memoryview, ts: float, out: list) -> str:
        """The host of the Kerberos service principal a bind's AP-REQ names (RFC 4120 5.3,
        ``host/ps1.corp.example``); "" without one."""
        try:
            ap = find_ap_request(pdu.auth_value(data, hdr))
        except KerberosError as e:
            out.append(self.stats.anomaly(ts, "kerberos", "kerberos_malformed", self.flow, str(e)))
            return ""
        return ap.service_host if ap else ""

    def _challenge(self, hdr: pdu.Header, data: memoryview, ts: float, out: list) -> bool:
        """MS-RPCE 3.3.1.5.2: an NTLM bind's ack carries the CHALLENGE (raw, or in SPNEGO).
        True when it named the server."""
        try:
            message = find_ntlmssp(pdu.auth_value(data, hdr))
        except NtlmsspError as e:
            out.append(self.stats.anomaly(ts, "ntlmssp", "ntlmssp_malformed", self.flow, str(e)))
            return False
        if isinstance(message, NtlmChallenge):
            name = message.nb_computer_name or message.dns_computer_name
            self.server_name = name or self.server_name
            return bool(name)
        return False

    def _request(self, hdr: pdu.Header, data: memoryview, ts: float, frame: int, out: list) -> None:
        req = pdu.parse_request(data, hdr)
        call = self._calls.get(hdr.call_id)
        if hdr.flags & pdu.PFC_FIRST_FRAG or call is None:
            if call is not None:
                out.append(self._anomaly(ts, "dcerpc_call_restarted", f"call_id {hdr.call_id}"))
            elif not hdr.flags & pdu.PFC_FIRST_FRAG:
                # Midstream, or a stack that leaves the flag off: the opnum is in every fragment.
                out.append(self._anomaly(ts, "dcerpc_fragment_without_first",
                                         f"frame {frame}: call_id {hdr.call_id}"))
            call = _PendingCall(hdr.call_id, req, hdr.little, self._wants_stub(req.ctx_id))
            self._drop_call(hdr.call_id)
            if len(self._calls) >= self.settings.max_calls_in_flight:
                evicted = next(iter(self._calls))
                self._drop_call(evicted)
                out.append(self._anomaly(ts, "dcerpc_too_many_calls", f"call_id {evicted} dropped"))
            self._calls[hdr.call_id] = call
        sealed = req.auth is not None and req.auth.auth_level == pdu.AUTH_LEVEL_PRIVACY
        call.fragments += 1
        if not call.keep:
            self.stats["stub_bytes_skipped"] += req.stub_end - req.stub_start
        elif not sealed:
            self._append_stub(call, data[req.stub_start:req.stub_end], ts, hdr.call_id, out)
        if not hdr.flags & pdu.PFC_LAST_FRAG:
            return
        self._drop_call(hdr.call_id)
        self.stats["calls"] += 1
        iface = self._contexts.get(call.ctx_id)
        if iface is None:
            iface = self._proposed.get(call.ctx_id)
            if iface is not None:
                self.stats["calls_on_unacknowledged_context"] += 1
                if call.ctx_id not in self._reported_proposals:
                    # The bind is as much a part of the pickup as the call (issue 18 item 13).
                    self._reported_proposals |= {call.ctx_id}
                    self.stats["binds_unacknowledged"] += 1
                    out.append(RpcBind(ts, call.ctx_id, iface[0], iface[1], "", acknowledged=False))
        auth = call.auth
        out.append(RpcCall(
            ts=ts, frame=frame, call_id=hdr.call_id, ctx_id=call.ctx_id, opnum=call.opnum,
            interface_uuid=iface[0] if iface else None,
            interface_version=iface[1] if iface else None,
            stub=b"".join(call.chunks), little_endian=call.little,
            auth_type=auth.auth_type if auth else None,
            auth_level=auth.auth_level if auth else None,
            sealed=sealed, object_uuid=call.object_uuid, ndr64=iface[2] if iface else False,
            stub_skipped=not call.keep,
        ))

    def _wants_stub(self, ctx_id: int) -> bool:
        wanted = self.settings.stub_interfaces
        if wanted is None:
            return True
        iface = self._contexts.get(ctx_id) or self._proposed.get(ctx_id)
        return iface is None or iface[0].lower() in wanted

    def _drop_call(self, call_id: int) -> None:
        """Forget a call being joined (complete, restarted, evicted) and its budget share."""
        call = self._calls.pop(call_id, None)
        if call is not None and self.settings.budget is not None:
            self.settings.budget.release(call)

    def _drop_all_calls(self) -> None:
        for call_id in list(self._calls):
            self._drop_call(call_id)

    def _evicted_by_budget(self, call: _PendingCall) -> None:
        """The process-wide stub budget dropped this (oldest) call to make room elsewhere."""
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]
            self.stats["calls_dropped_by_stub_budget"] += 1

    def _append_stub(self, call: _PendingCall, stub: memoryview, ts: float, call_id: int, out: list) -> None:
        room = self.settings.max_stub_bytes - call.size
        if call.fragments > self.settings.max_fragments_per_call or len(stub) > room:
            if not call.truncated:
                call.truncated = True
                out.append(self._anomaly(ts, "dcerpc_stub_truncated",
                                         f"call_id {call_id}: over {self.settings.max_stub_bytes} bytes "
                                         f"or {self.settings.max_fragments_per_call} fragments"))
            if call.fragments > self.settings.max_fragments_per_call:
                return
            stub = stub[:max(room, 0)]
        if stub:
            call.chunks.append(bytes(stub))
            call.size += len(stub)
            budget = self.settings.budget
            if budget is not None and budget.charge(call, len(stub), self._evicted_by_budget):
                out.append(self._anomaly(ts, "dcerpc_stub_budget_exceeded",
                                         f"call_id {call_id}: oldest calls being joined dropped "
                                         f"(all stubs over {budget.limit} bytes)"))
