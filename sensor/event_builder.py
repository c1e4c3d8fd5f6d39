"""Turns a complete RPC request and what the SMB session told about its peers into the
xdr_data-equivalent RpcCallEvent (see ../shared/reference/events.md).

Interface resolution, in order of trust:
1. the bind on this association named the interface for the request's context id;
2. the bind was missed (midstream) but the pipe was opened by a name only one catalogued
   interface is served on ("pipe");
2b. the pipe is shared by several interfaces (lsarpc: LSA and EFSR, samr, netlogon): the
   request is reported only if its stub decodes cleanly as a catalogued candidate's call for
   its opnum ("pipe+stub"), else not at all (an LSA call is not named EFSR);
3. pipe and bind were both missed: the request is reported only if its stub decodes cleanly
   as the catalogued call for its opnum ("stub").
"""
from __future__ import annotations

from dataclasses import dataclass

from sensor.anomaly import Anomaly, Stats
from sensor.community_id import community_id
from sensor.dcerpc.events import RpcCall
from sensor.events import (
    ACTOR_REMOTE_RPC_NAMED_PIPE,
    ACTOR_REMOTE_RPC_TCP,
    EVENT_TYPE_RPC_CALL,
    RPC_PROTOCOL_NAMED_PIPES,
    RPC_PROTOCOL_TCP,
    RpcCallEvent,
    call_fields_json,
    make_agent_id,
    make_event_id,
    xdr_time,
)
from sensor.interfaces.catalog import Catalog, Interface, Operation
from sensor.net.stream import FlowKey
from sensor.smb.events import SmbSession


@dataclass(frozen=True, slots=True)
class CallContext:
    """Where a call travelled: the flow, and the pipe and SMB session when over SMB."""

    flow: FlowKey
    pipe_name: str | None          # normalised ("netdfs"); None for ncacn_ip_tcp or an unseen open
    over_smb: bool
    tree: str = ""
    session: SmbSession | None = None
    encrypted: bool = False        # the SMB session was seen encrypting (transform headers)
    capture_file: str = ""
    rpc_server_name: str = ""      # named by an authenticated bind (NTLMSSP CHALLENGE, accepted Kerberos; ncacn_ip_tcp)


def tree_host(tree: str) -> str:
    r"""'\\DC01\IPC$' -> 'DC01'."""
    parts = tree.lstrip("\\").split("\\", 1)
    return parts[0] if parts and parts[0] else ""


def resolve(catalog: Catalog, call: RpcCall, ctx: CallContext) -> tuple[Interface, str] | None:
    """The catalogued interface of a call, and how it was inferred ("" when the bind said)."""
    if call.interface_uuid is not None:
        iface = catalog.interface(call.interface_uuid)
        return (iface, "") if iface else None
    if ctx.pipe_name:
        iface = catalog.for_pipe(ctx.pipe_name)
        if iface is not None:
            return iface, "pipe"
        # A pipe several interfaces answer on (lsarpc carries LSA and EFSR): its name alone
        # would misname the call, so the stub decides among the catalogued candidates.
        candidates = catalog.candidates_for_pipe(ctx.pipe_name)
        if not candidates:
            return None
        found = _by_stub(candidates, call)
        return (found, "pipe+stub") if found else None
    return (found, "stub") if (found := _by_stub(catalog.by_uuid.values(), call)) else None


def _by_stub(candidates, call: RpcCall) -> Interface | None:
    """The first candidate whose call for this opnum the stub cleanly is (never for a sealed stub)."""
    if call.sealed:
        return None
    from sensor.interfaces.decode import looks_like     # impacket's NDR: at the first call decoded

    for iface in candidates:
        op = iface.operation(call.opnum)
        if op is not None and op.request is not None and looks_like(op, call.stub, call.little_endian, call.ndr64):
            return iface
    return None


# The prefix of net_decode_error when a clear stub does not parse as its operation's request.
NDR_ERROR_PREFIX = "ndr: "


def decode_arguments(op: Operation | None, call: RpcCall) -> tuple[dict[str, str], dict[str, str], str]:
    """(string args, integer args, why they are empty)."""
    if call.sealed:
        return {}, {}, "sealed: PKT_PRIVACY stub"
    if op is None or op.request is None:
        return {}, {}, ""
    from sensor.interfaces.decode import NdrDecodeError, decode_request   # as in _by_stub

    try:
        decoded = decode_request(op, call.stub, call.little_endian, call.ndr64)
    except NdrDecodeError as exc:
        return {}, {}, f"{NDR_ERROR_PREFIX}{exc}"
    return decoded.strings, decoded.ints, ""


def count_ndr_damage(event: RpcCallEvent, flow: FlowKey, stats: Stats) -> Anomaly | None:
    """A request whose stub is damaged (not the operation's request in any documented form):
    counted as the named anomaly ``ndr_malformed``. The event itself is still reported (interface
    and opnum: a rule keys on them) and carries the detail in net_decode_error, so the anomaly is
    counted, not emitted a second time."""
    if not event.net_decode_error.startswith(NDR_ERROR_PREFIX):
        return None
    return stats.anomaly(event.event_timestamp / 1000, "ndr", "ndr_malformed", flow,
                         f"{event.action_rpc_func_name}: {event.net_decode_error}")


def build_event(iface: Interface, inferred: str, call: RpcCall, ctx: CallContext) -> RpcCallEvent:
    flow = ctx.flow
    op = iface.operation(call.opnum)
    strings, ints, decode_error = decode_arguments(op, call)
    session = ctx.session
    agent_hostname = (
        (session.server_netbios_name if session else "")
        or (session.server_dns_name if session else "")
        or tree_host(ctx.tree)
        or ctx.rpc_server_name
        or flow.server_ip
    )
    time_text, epoch_ms = xdr_time(call.ts)
    version = call.interface_version or (iface.version if inferred else None)
    return RpcCallEvent(
        _time=time_text,
        event_timestamp=epoch_ms,
        event_id=make_event_id(call.ts, flow.client_ip, flow.client_port, flow.server_ip, flow.server_port,
                               call.call_id, call.opnum, call.stub),
        event_type=EVENT_TYPE_RPC_CALL,
        event_rpc_protocol=RPC_PROTOCOL_NAMED_PIPES if ctx.over_smb else RPC_PROTOCOL_TCP,
        action_rpc_interface_uuid=iface.xdr_uuid,
        action_rpc_interface_version_major=version[0] if version else None,
        action_rpc_interface_version_minor=version[1] if version else None,
        action_rpc_interface_name=iface.name,
        action_rpc_func_opnum=call.opnum,
        action_rpc_func_name=op.name if op else f"Opnum{call.opnum}",
        action_rpc_func_str_call_fields=call_fields_json(strings),
        action_rpc_func_int_call_fields=call_fields_json(ints),
        action_rpc_func_exception_code=None,
        actor_type=ACTOR_REMOTE_RPC_NAMED_PIPE if ctx.over_smb else ACTOR_REMOTE_RPC_TCP,
        actor_remote_ip=flow.client_ip,
        actor_remote_port=flow.client_port,
        actor_remote_pipe_name=("\\Device\\NamedPipe\\" + ctx.pipe_name) if ctx.pipe_name else "",
        agent_hostname=agent_hostname,
        agent_id=make_agent_id(agent_hostname),
        agent_ip=flow.server_ip,
        agent_port=flow.server_port,
        net_community_id=community_id(flow.client_ip, flow.client_port, flow.server_ip, flow.server_port),
        net_smb_dialect=session.dialect if session else "",
        net_smb_user=session.user if session else "",
        net_smb_domain=session.domain if session else "",
        net_smb_workstation=session.workstation if session else "",
        net_rpc_call_id=call.call_id,
        net_rpc_auth_type=call.auth_type,
        net_rpc_auth_level=call.auth_level,
        net_stub_sealed=call.sealed,
        net_encrypted=ctx.encrypted or bool(session and session.encrypted),
        net_interface_inferred=inferred,
        net_decode_error=decode_error,
        net_capture_file=ctx.capture_file,
        net_capture_frame=call.frame,
    )
