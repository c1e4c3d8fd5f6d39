"""The decode stage of the tshark engine: tshark's dissected packets -> RpcCallEvents.

Sans-IO like every stage: ``feed(packet)`` takes one packet as tshark's JSON layers
(``{"frame": [...], "tcp": [...], "smb2": [...], "dcerpc": [...], "netdfs": [...]}``, each a
list because one frame can carry several SMB2 messages or DCE/RPC PDUs) and returns the
events it completed. Wireshark does TCP reassembly, SMB, DCE/RPC framing and fragment
reassembly; this stage only keeps what the event needs and tshark leaves implicit:
which pipe a PDU travelled on, the accepted presentation contexts of each association
(tshark names a request's interface only through the sub-dissector it picked), and the
NTLMSSP facts of each SMB session. Calls are held until their response or fault by the
native pipeline's held-call stage (sensor/held_calls.py), so both engines fill
``action_rpc_func_exception_code`` alike.
"""
from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable

from sensor.anomaly import Stats
from sensor.dcerpc.events import RpcBind, RpcCall
from sensor.dcerpc import pdu as rpc
from sensor.dcerpc.association import MAX_CONTEXTS
from sensor.dcerpc.pdu import NDR64_SYNTAX
from sensor.event_builder import CallContext, build_event, count_ndr_damage, resolve
from sensor.events import RpcCallEvent, call_fields_json, is_event_time
from sensor.held_calls import HeldCalls
from sensor.interfaces.catalog import Catalog, default_catalog
from sensor.net.stream import FlowKey
from sensor.smb.kerberos import KerberosError, find_ap_request
from sensor.smb import smb1, smb2
from sensor.smb.events import PipeId, SmbSession
from sensor.smb.pipes import normalise_pipe_name
from sensor.tshark.arguments import STUB_PROTOCOLS, stub_arguments
from sensor.tshark.tree import first, labels, number, raw_bytes, values

Packet = dict[str, list]

# tshark's dcerpc.drep.byteorder field: 1 is little-endian (the wire's DREP_LITTLE_ENDIAN nibble).
NDR_LITTLE_ENDIAN = 1
# SMB2 commands whose FileId is pipe I/O: READ, WRITE, IOCTL (FSCTL_PIPE_TRANSCEIVE).
SMB2_PIPE_IO = frozenset({smb2.READ, smb2.WRITE, smb2.IOCTL})
# tshark prints an absent NTLMSSP string as "NULL".
NTLMSSP_EMPTY = "NULL"

# Bounds. A capture or a live link can hold any number of connections; these keep memory
# flat the same way the native flow table does, evicting the oldest entry when full.
MAX_STREAMS = 65536            # TCP connections remembered (the native FlowTable's order of size)
MAX_SESSIONS = 65536           # SMB sessions across all connections
MAX_PIPES = 65536              # open pipe handles and pending opens/reads
MAX_ASSOCIATIONS = 65536       # DCE/RPC associations (pipe or ncacn_ip_tcp connection)
MAX_CONTEXTS_PER_ASSOCIATION = MAX_CONTEXTS   # presentation contexts, as the native association keeps
MAX_PENDING_BINDS = 4096       # binds/alter_contexts awaiting their ack

AssocKey = tuple[int, PipeId | None]             # (tcp.stream, pipe or None for ncacn_ip_tcp)
# What a presentation context names: (interface uuid, version, stub in NDR64).
Context = tuple[str, tuple[int, int], bool]


@dataclass
class TsharkDecoderSettings:
    catalog: Catalog | None = None
    capture_file: str = ""
    # Same contract as sensor.pipeline.PipelineSettings.rpc_observer: (flow, pipe id or
    # None, RpcBind | RpcCall) for every accepted context and every request.
    rpc_observer: Callable[[FlowKey, PipeId | None, object], None] | None = None


@dataclass
class _Session:
    dialect: str = ""
    user: str = ""
    domain: str = ""
    workstation: str = ""
    ntlm_version: str = ""
    server_netbios_name: str = ""
    server_dns_name: str = ""
    server_netbios_domain: str = ""
    encrypted: bool = False


@dataclass
class _Frame:
    """What the SMB layers of one frame said about where its DCE/RPC PDUs travelled."""

    pipe: PipeId | None = None
    over_smb: bool = False
    tree: str = ""
    session: tuple[int, int] | None = None       # (stream, session id)


def _put(table: OrderedDict | dict, key, value, limit: int, stats: Stats, name: str) -> None:
    table[key] = value
    if len(table) > limit:
        del table[next(iter(table))]
        stats["tshark.evicted_" + name] += 1


def _guid_bytes(text: str) -> bytes:
    """tshark prints an SMB2 FileId as a GUID; the native stage keys pipes by its 16 wire bytes."""
    try:
        return uuid.UUID(text).bytes_le
    except ValueError:
        return text.encode()


class TsharkDecoder:
    def __init__(self, settings: TsharkDecoderSettings | None = None):
        self.settings = settings or TsharkDecoderSettings()
        self.catalog = self.settings.catalog or default_catalog()
        self.stats = Stats()
        self._flows: OrderedDict[int, FlowKey] = OrderedDict()
        self._dialects: OrderedDict[int, str] = OrderedDict()
        self._sessions: OrderedDict[tuple[int, int], _Session] = OrderedDict()
        self._trees: OrderedDict[tuple[int, int, int], str] = OrderedDict()
        self._pipe_names: OrderedDict[tuple[int, PipeId], str] = OrderedDict()
        # (stream, smb version, message id) -> pipe name (an open) or PipeId (a read/transact)
        self._requests: OrderedDict[tuple[int, int, int], object] = OrderedDict()
        self._contexts: OrderedDict[AssocKey, dict[int, Context]] = OrderedDict()
        # stream -> the server's name from an authenticated bind's NTLMSSP CHALLENGE (ncacn_ip_tcp)
        self._rpc_server_names: OrderedDict[int, str] = OrderedDict()
        # What binds proposed while their ack is outstanding: a one-sided capture (client to
        # server only) never shows the ack, yet the proposal names the interface, as tshark's
        # own dcerpc dissector does ("SVCCTL OpenSCManagerW request").
        self._proposed: OrderedDict[AssocKey, dict[int, Context]] = OrderedDict()
        # ctx_ids of proposals already reported as an unacknowledged RpcBind (at their first call)
        self._reported_proposals: OrderedDict[AssocKey, dict[int, bool]] = OrderedDict()
        self._pending_binds: OrderedDict[tuple[int, int], tuple[AssocKey, list, str]] = OrderedDict()
        # Calls wait for their answer in the same stage as the native pipeline's (no timeout:
        # a file's calls are all in the file).
        self.held = HeldCalls(stats=self.stats)
        self._good_ts: float | None = None    # the last frame time that was a date

    # -- input -------------------------------------------------------------------------
    def feed(self, packet: Packet) -> list:
        self.stats["packets"] += 1
        tcp = packet.get("tcp")
        frame = packet.get("frame")
        if not tcp or not frame:
            self.stats["tshark.not_tcp"] += 1
            return []
        stream = number(tcp[0], "tcp.stream")
        ts = float(first(frame[0], "frame.time_epoch", "0"))
        frame_no = number(frame[0], "frame.number", 0)
        if not is_event_time(ts):
            # As the native reader: the previous good time, or the frame skipped before any.
            self.stats.anomaly(0.0, "capture", "capture_bad_timestamp", detail=f"frame {frame_no}")
            if self._good_ts is None:
                return []
            ts = self._good_ts
        self._good_ts = ts
        net = (packet.get("ip") or packet.get("ipv6") or [None])[0]
        if stream is None or net is None:
            self.stats["tshark.not_tcp"] += 1
            return []
        prefix = "ip" if packet.get("ip") else "ipv6"
        endpoints = (first(net, prefix + ".src"), number(tcp[0], "tcp.srcport"),
                     first(net, prefix + ".dst"), number(tcp[0], "tcp.dstport"))
        where = _Frame()
        for message in packet.get("smb2", ()):
            self._smb2(stream, ts, endpoints, message, where)
        # tshark puts a pipe transaction's Setup words (function, FID) in an "smb_pipe" layer
        # of their own, one per SMB_COM_TRANSACTION, beside the SMB header's layer.
        pipe_setups = iter(packet.get("smb_pipe", ()))
        for message in packet.get("smb", ()):
            self._smb1(stream, ts, endpoints, message, where, pipe_setups)
        out: list = []
        # The stub dissectors' layers (netdfs, efs, spoolss...), each tagged with its protocol.
        stubs = [(name, layer) for name in STUB_PROTOCOLS for layer in packet.get(name, ())]
        for pdu in packet.get("dcerpc", ()):
            self._dcerpc(stream, ts, frame_no, endpoints, pdu, where, stubs, out)
        return out

    def close(self) -> list:
        out = self.held.close(0.0)
        self.stats["events"] += len(out)
        for table in (self._flows, self._dialects, self._sessions, self._trees, self._pipe_names,
                      self._requests, self._contexts, self._proposed, self._reported_proposals,
                      self._pending_binds, self._rpc_server_names):
            table.clear()
        return out

    # -- flows -------------------------------------------------------------------------
    def _flow(self, stream: int, endpoints: tuple, from_client: bool) -> FlowKey:
        flow = self._flows.get(stream)
        if flow is None:
            src, sport, dst, dport = endpoints
            flow = FlowKey(src, sport, dst, dport) if from_client else FlowKey(dst, dport, src, sport)
            _put(self._flows, stream, flow, MAX_STREAMS, self.stats, "streams")
        return flow

    def _session(self, key: tuple[int, int]) -> _Session:
        session = self._sessions.get(key)
        if session is None:
            session = _Session()
            _put(self._sessions, key, session, MAX_SESSIONS, self.stats, "sessions")
        return session

    # -- SMB ---------------------------------------------------------------------------
    def _ntlmssp(self, key: tuple[int, int], message: dict) -> None:
        """NTLMSSP CHALLENGE (server names, MS-NLMP 2.2.2.1 AV pairs) and AUTHENTICATE (user)."""
        server = first(message, "ntlmssp.challenge.target_info.nb_computer_name")
        user = first(message, "ntlmssp.auth.username")
        if server is None and user is None:
            return
        session = self._session(key)
        if server is not None:
            session.server_netbios_name = server
            session.server_dns_name = first(message, "ntlmssp.challenge.target_info.dns_computer_name", "")
            session.server_netbios_domain = first(message, "ntlmssp.challenge.target_info.nb_domain_name", "")
        if user is not None:
            clean = lambda v: "" if v in (None, NTLMSSP_EMPTY) else v  # noqa: E731
            session.user = clean(user)
            session.domain = clean(first(message, "ntlmssp.auth.domain"))
            session.workstation = clean(first(message, "ntlmssp.auth.hostname"))
            session.ntlm_version = ("NTLMv2" if first(message, "ntlmssp.ntlmv2_response") is not None
                                    else "NTLMv1" if session.user else "")

    def _smb2(self, stream: int, ts: float, endpoints: tuple, message: dict, where: _Frame) -> None:
        if first(message, "smb2.header.transform.msg_size") is not None:
            # MS-SMB2 2.2.41: an encrypted message; only its session id is in the clear.
            sesid = number(message, "smb2.header.transform.sesid", number(message, "smb2.sesid", 0))
            self._session((stream, sesid)).encrypted = True
            self.stats["smb_encrypted_messages"] += 1
            return
        cmd = number(message, "smb2.cmd")
        if cmd is None:
            return
        from_client = first(message, "smb2.flags.response") == "0"
        self._flow(stream, endpoints, from_client)
        sesid = number(message, "smb2.sesid", 0)
        tid = number(message, "smb2.tid", 0)
        msg_id = number(message, "smb2.msg_id", 0)
        where.over_smb = True
        tree = first(message, "smb2.tree")
        if tree:
            _put(self._trees, (stream, sesid, tid), tree, MAX_PIPES, self.stats, "trees")
        if cmd == smb2.NEGOTIATE and not from_client:
            dialect = number(message, "smb2.dialect")
            if dialect is not None and dialect != smb2.DIALECT_WILDCARD:
                _put(self._dialects, stream, smb2.dialect_name(dialect),
                     MAX_STREAMS, self.stats, "dialects")
        elif cmd == smb2.SESSION_SETUP:
            self._ntlmssp((stream, sesid), message)
        elif cmd == smb2.CREATE:
            key = (stream, 2, msg_id)
            if from_client:
                name = first(message, "smb2.filename")
                if name is not None:
                    _put(self._requests, key, name, MAX_PIPES, self.stats, "requests")
            else:
                name = self._requests.pop(key, None)
                fid = first(message, "smb2.fid")
                if isinstance(name, str) and fid:
                    pipe = (2, sesid, tid, _guid_bytes(fid))
                    _put(self._pipe_names, (stream, pipe), normalise_pipe_name(name), MAX_PIPES, self.stats, "pipes")
        elif cmd in SMB2_PIPE_IO:
            key = (stream, 2, msg_id)
            fid = first(message, "smb2.fid")
            if fid:
                pipe = (2, sesid, tid, _guid_bytes(fid))
                if from_client:
                    _put(self._requests, key, pipe, MAX_PIPES, self.stats, "requests")
            else:        # READ response: no FileId on the wire, take the request's
                pipe = self._requests.get(key)
            if not from_client and number(message, "smb2.nt_status") != smb2.STATUS_PENDING:
                self._requests.pop(key, None)
            if isinstance(pipe, tuple):
                where.pipe = pipe
                where.tree = self._trees.get((stream, sesid, tid), "")
                where.session = (stream, sesid)
                if (stream, pipe) not in self._pipe_names:
                    # the open was missed; tshark may still name the handle in a label
                    for label in labels(message, "GUID handle File: "):
                        _put(self._pipe_names, (stream, pipe), normalise_pipe_name(label[18:]),
                             MAX_PIPES, self.stats, "pipes")

    def _smb1(self, stream: int, ts: float, endpoints: tuple, message: dict, where: _Frame,
              pipe_setups) -> None:
        cmd = number(message, "smb.cmd")
        if cmd is None:
            return
        from_client = first(message, "smb.flags.response") == "0"
        self._flow(stream, endpoints, from_client)
        uid = number(message, "smb.uid", 0)
        tid = number(message, "smb.tid", 0)
        mid = number(message, "smb.mid", 0)
        where.over_smb = True
        if stream not in self._dialects:
            _put(self._dialects, stream, "SMB1", MAX_STREAMS, self.stats, "dialects")
        path = first(message, "smb.path")
        if path:
            _put(self._trees, (stream, uid, tid), path, MAX_PIPES, self.stats, "trees")
        self._ntlmssp((stream, uid), message)
        key = (stream, 1, mid)
        fid = number(message, "smb.fid")
        if cmd == smb1.TRANSACTION:
            setup = next(pipe_setups, None)
            if fid is None and setup is not None:
                fid = number(setup, "smb.fid")
        if fid is None:
            pipe = self._requests.get(key)
        else:
            pipe = (1, uid, tid, fid)
            if from_client:
                _put(self._requests, key, pipe, MAX_PIPES, self.stats, "requests")
        if not from_client:
            self._requests.pop(key, None)
        if not isinstance(pipe, tuple):
            return
        # tshark tracks SMB1 FIDs itself and repeats the file name under every use of one
        name = first(message, "smb.file")
        if name and (cmd == smb1.NT_CREATE_ANDX or (stream, pipe) not in self._pipe_names):
            _put(self._pipe_names, (stream, pipe), normalise_pipe_name(name), MAX_PIPES, self.stats, "pipes")
        if cmd != smb1.NT_CREATE_ANDX:
            where.pipe = pipe
            where.tree = self._trees.get((stream, uid, tid), "")
            where.session = (stream, uid)

    # -- DCE/RPC -----------------------------------------------------------------------
    def _dcerpc(self, stream: int, ts: float, frame_no: int, endpoints: tuple, pdu: dict,
                where: _Frame, stubs: list, out: list) -> None:
        ptype = number(pdu, "dcerpc.pkt_type")
        call_id = number(pdu, "dcerpc.cn_call_id")
        if ptype is None or call_id is None:
            return                                   # connectionless (ncadg) or not a PDU header
        flow = self._flow(stream, endpoints, ptype in rpc.CLIENT_PTYPES)
        if ptype in rpc.CLIENT_PTYPES and (endpoints[0], endpoints[1]) == (flow.server_ip, flow.server_port):
            # A server that echoes the InputBuffer in its FSCTL_PIPE_TRANSCEIVE response (MS-SMB2
            # 2.2.32: InputCount MAY be non-zero) hands tshark the client's request a second
            # time; it is the same call, not a new one.
            self.stats["tshark.echoed_client_pdus"] += 1
            if ptype == rpc.PTYPE_REQUEST:
                self._stub_layer(stubs, number(pdu, "dcerpc.opnum", 0))
            return
        assoc: AssocKey = (stream, where.pipe)
        if ptype in (rpc.PTYPE_BIND, rpc.PTYPE_ALTER_CONTEXT):
            offered = []
            for item in values(pdu, "dcerpc.cn_ctx_item"):
                ctx_id = number(item, "dcerpc.cn_ctx_id")
                iface = first(item, "dcerpc.cn_bind_to_uuid")
                if ctx_id is None or not isinstance(iface, str):
                    continue
                syntaxes = [s.lower() for s in values(item, "dcerpc.cn_bind_trans_id") if isinstance(s, str)]
                offered.append((ctx_id, iface.lower(),
                                (number(item, "dcerpc.cn_bind_if_ver", 0), number(item, "dcerpc.cn_bind_if_ver_minor", 0)),
                                syntaxes))
            host = self._service_host(pdu, ts)
            _put(self._pending_binds, (stream, call_id), (assoc, offered, host), MAX_PENDING_BINDS, self.stats, "binds")
            proposed = self._assoc_table(self._proposed, assoc)
            reported = self._reported_proposals.get(assoc, {})
            for ctx_id, iface, version, syntaxes in offered:
                if len(proposed) < MAX_CONTEXTS_PER_ASSOCIATION or ctx_id in proposed:
                    # NDR64 only when it is the one syntax offered: with several, the ack decides.
                    proposed[ctx_id] = (iface, version, syntaxes == [NDR64_SYNTAX])
                    reported.pop(ctx_id, None)        # a new proposal is a new bind
        elif ptype in (rpc.PTYPE_BIND_ACK, rpc.PTYPE_ALTER_CONTEXT_RESP):
            server = (first(pdu, "ntlmssp.challenge.target_info.nb_computer_name")
                      or first(pdu, "ntlmssp.challenge.target_info.dns_computer_name"))
            pending = self._pending_binds.pop((stream, call_id), None)
            results = [int(r, 0) for r in values(pdu, "dcerpc.cn_ack_result")]
            if not server and pending is not None and pending[2] and 0 in results \
                    and first(pdu, "dcerpc.auth_credentials") is not None:
                server = pending[2]      # the Kerberos service the server accepted (as the native stage)
            if server:
                _put(self._rpc_server_names, stream, server, MAX_STREAMS, self.stats, "rpc_server_names")
            if pending is None:
                return
            bound_assoc, offered, _ = pending
            # C706 12.6.3.4 p_result_t: each result names the transfer syntax the server picked
            # from that context's list (MS-RPCE 2.2.5.1.1: NDR64's uuid for NDR64 stubs).
            accepted = [s.lower() for s in values(pdu, "dcerpc.cn_ack_trans_id") if isinstance(s, str)]
            proposed = self._proposed.get(bound_assoc, {})
            reported = self._reported_proposals.get(bound_assoc, {})
            for ctx_id, *_ in offered:             # the ack, not the proposal, now decides
                proposed.pop(ctx_id, None)
                reported.pop(ctx_id, None)
            contexts = self._assoc_table(self._contexts, bound_assoc)
            for (ctx_id, iface, version, _), result, transfer in zip(offered, results, accepted):
                if result != 0:
                    continue
                if len(contexts) < MAX_CONTEXTS_PER_ASSOCIATION or ctx_id in contexts:
                    contexts[ctx_id] = (iface, version, transfer == NDR64_SYNTAX)
                observer = self.settings.rpc_observer
                if observer is not None:
                    observer(flow, bound_assoc[1], RpcBind(ts, ctx_id, iface, version, transfer))
        elif ptype == rpc.PTYPE_REQUEST:
            flags = number(pdu, "dcerpc.cn_flags", 0)
            if flags & rpc.PFC_LAST_FRAG:               # tshark hands the joined stub with the last fragment
                self._request(stream, ts, frame_no, flow, assoc, call_id, pdu, where, stubs, out)
        elif ptype in (rpc.PTYPE_RESPONSE, rpc.PTYPE_FAULT):
            flags = number(pdu, "dcerpc.cn_flags", 0)
            if flags & rpc.PFC_LAST_FRAG:
                status = number(pdu, "dcerpc.cn_status", 0) if ptype == rpc.PTYPE_FAULT else 0
                self._answer(stream, assoc, call_id, status, out)
            if ptype == rpc.PTYPE_RESPONSE and stubs and self._is_response(stubs[0][1]):
                stubs.pop(0)                        # keep the frame's stub layers in step with its PDUs

    def _service_host(self, pdu: dict, ts: float) -> str:
        """The Kerberos service host a bind's AP-REQ names, read by the native Kerberos reader
        from the raw token (tshark does not dissect every SPNEGO-wrapped AP-REQ)."""
        token = first(pdu, "dcerpc.auth_credentials")
        if not isinstance(token, str):
            return ""
        try:
            ap = find_ap_request(bytes.fromhex(token.replace(":", "")))
        except (KerberosError, ValueError) as exc:
            self.stats.anomaly(ts, "kerberos", "kerberos_malformed", detail=str(exc))
            return ""
        return ap.service_host if ap else ""

    def _assoc_table(self, tables: OrderedDict, assoc: AssocKey) -> dict:
        table = tables.get(assoc)
        if table is None:
            table = {}
            _put(tables, assoc, table, MAX_ASSOCIATIONS, self.stats, "associations")
        return table

    @staticmethod
    def _is_response(layer: dict) -> bool:
        """A stub layer of a response points back at its request (and a netdfs one carries
        the WERROR result); a request's never does."""
        return first(layer, "dcerpc.request_in") is not None or first(layer, "netdfs.werror") is not None

    def _request(self, stream: int, ts: float, frame_no: int, flow: FlowKey, assoc: AssocKey,
                 call_id: int, pdu: dict, where: _Frame, stubs: list, out: list) -> None:
        opnum = number(pdu, "dcerpc.opnum", 0)
        ctx_id = number(pdu, "dcerpc.cn_ctx_id", 0)
        auth_level = number(pdu, "dcerpc.auth_level")
        auth_type = number(pdu, "dcerpc.auth_type")
        sealed = auth_level == rpc.AUTH_LEVEL_PRIVACY
        protocol, layer = self._stub_layer(stubs, opnum)
        stub = b"" if sealed else self._stub(pdu, layer)
        bound = self._contexts.get(assoc, {}).get(ctx_id)
        observer = self.settings.rpc_observer
        if bound is None:
            bound = self._proposed.get(assoc, {}).get(ctx_id)
            if bound is not None:
                self.stats["tshark.calls_on_unacknowledged_context"] += 1
                reported = self._assoc_table(self._reported_proposals, assoc)
                if ctx_id not in reported:        # the bind, once, before its first call (as native)
                    reported[ctx_id] = True
                    if observer is not None:
                        observer(flow, where.pipe, RpcBind(ts, ctx_id, bound[0], bound[1], "", acknowledged=False))
        call = RpcCall(
            ts=ts, frame=frame_no, call_id=call_id, ctx_id=ctx_id, opnum=opnum,
            interface_uuid=bound[0] if bound else None,
            interface_version=bound[1] if bound else None,
            stub=stub,
            little_endian=number(pdu, "dcerpc.drep.byteorder", NDR_LITTLE_ENDIAN) == NDR_LITTLE_ENDIAN,
            auth_type=auth_type, auth_level=auth_level, sealed=sealed,
            object_uuid=first(pdu, "dcerpc.obj_id"), ndr64=bound[2] if bound else False,
        )
        self.stats["rpc_calls"] += 1
        if observer is not None:
            observer(flow, where.pipe, call)
        ctx = self._context(stream, flow, where)
        resolved = resolve(self.catalog, call, ctx)
        if resolved is None:
            return
        event = build_event(resolved[0], resolved[1], call, ctx)
        count_ndr_damage(event, flow, self.stats)
        event = self._with_tshark_arguments(event, call, protocol, layer)
        self._emit(self.held.hold(assoc, call_id, ts, event), out)

    @staticmethod
    def _stub(pdu: dict, layer: dict | None) -> bytes:
        """The joined stub: under "Complete stub data" when a sub-dissector took it; as
        dcerpc.stub_data (colon hex) when tshark knows no dissector for the interface, or,
        inside the stub layer, none for the opnum (Wireshark 4.0 netdfs: 20, 23, 24)."""
        stub = raw_bytes(pdu, "dcerpc.payload_stub_data")
        if stub is not None:
            return stub
        for tree in (pdu, layer):
            text = first(tree, "dcerpc.stub_data") if tree is not None else None
            if isinstance(text, str):
                return bytes.fromhex(text.replace(":", ""))
        return b""

    @staticmethod
    def _stub_layer(stubs: list, opnum: int) -> tuple[str | None, dict | None]:
        """(protocol, layer) tshark's stub dissector made of this request: the frame's next
        stub layer, if it is for the same opnum (several PDUs in one frame each get their own
        layer); (None, None) when there is none."""
        if stubs:
            protocol, layer = stubs[0]
            if number(layer, protocol + ".opnum") == opnum and not TsharkDecoder._is_response(layer):
                return stubs.pop(0)
        return None, None

    def _with_tshark_arguments(self, event: RpcCallEvent, call: RpcCall, protocol: str | None,
                               layer: dict | None) -> RpcCallEvent:
        """Arguments from tshark's own fields where its dissector has them, over the
        project's NDR decoding (already run by build_event), which keeps the opnums and
        arguments tshark lacks."""
        if call.sealed or layer is None:
            if event.action_rpc_interface_name == "netdfs" and not call.sealed and not call.stub:
                self.stats["tshark.no_stub_bytes"] += 1
            return event
        decoded = stub_arguments(protocol, call.opnum, layer)
        if decoded is None:
            return event
        self.stats["tshark.arguments_from_fields"] += 1
        ours_ok = not event.net_decode_error
        strings = (event.str_fields() if ours_ok else {}) | decoded[0]
        ints = (json.loads(event.action_rpc_func_int_call_fields) if ours_ok else {}) | decoded[1]
        return replace(event, action_rpc_func_str_call_fields=call_fields_json(strings),
                       action_rpc_func_int_call_fields=call_fields_json(ints), net_decode_error="")

    def _answer(self, stream: int, assoc: AssocKey, call_id: int, status: int, out: list) -> None:
        answered = self.held.answer(assoc, call_id, status)
        if answered is None:
            # the answer's pipe was not recoverable (e.g. an SMB1 read without its request)
            answered = self.held.answer_on_connection(stream, call_id, status)
        if answered is not None:
            self._emit([answered], out)

    def _emit(self, events: list[RpcCallEvent], out: list) -> None:
        self.stats["events"] += len(events)
        out += events

    def _context(self, stream: int, flow: FlowKey, where: _Frame) -> CallContext:
        if not where.over_smb:
            return CallContext(flow, None, over_smb=False, capture_file=self.settings.capture_file,
                               rpc_server_name=self._rpc_server_names.get(stream, ""))
        name = self._pipe_names.get((stream, where.pipe)) if where.pipe else None
        session = None
        encrypted = False
        if where.session is not None:
            known = self._sessions.get(where.session)
            if known is not None:
                encrypted = known.encrypted
                session = SmbSession(
                    flow=flow, ts=0.0, session_id=where.session[1],
                    dialect=self._dialects.get(stream, ""), user=known.user, domain=known.domain,
                    workstation=known.workstation, ntlm_version=known.ntlm_version,
                    server_netbios_name=known.server_netbios_name, server_dns_name=known.server_dns_name,
                    server_netbios_domain=known.server_netbios_domain, encrypted=known.encrypted)
            elif stream in self._dialects:
                session = SmbSession(flow=flow, ts=0.0, session_id=where.session[1],
                                     dialect=self._dialects[stream])
        return CallContext(flow, name, over_smb=True, tree=where.tree, session=session,
                           encrypted=encrypted, capture_file=self.settings.capture_file)
