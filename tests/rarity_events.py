"""RpcCallEvent records for detector, store and CLI tests, built like the event builder does."""
from __future__ import annotations

from datetime import datetime, timezone

from sensor.events import (ACTOR_REMOTE_RPC_NAMED_PIPE, EVENT_TYPE_RPC_CALL, RPC_PROTOCOL_NAMED_PIPES,
                           RpcCallEvent, call_fields_json, make_agent_id, make_event_id, xdr_time)

DFSNM_UUID = "{4FC742E0-4A10-11CF-8273-00AA004AE673}"
EFSR_UUID = "{C681D488-D850-11D0-8C52-00C04FD90F7E}"
DFSNM_NAMES = {12: "NetrDfsAddStdRoot", 13: "NetrDfsRemoveStdRoot", 14: "NetrDfsManagerInitialize"}


def ts_of(day: str, hour: int = 12, minute: int = 0) -> float:
    """Epoch seconds of a UTC date (YYYY-MM-DD) and time."""
    d = datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=timezone.utc)
    return d.timestamp()


def rpc_event(ts: float, *, client: str = "10.0.0.5", server: str = "DC01", server_ip: str = "10.0.0.10",
              opnum: int = 13, name: str | None = None, relay: str | None = "10.0.0.66",
              share: str | None = "test", uuid: str = DFSNM_UUID, event_type: int = EVENT_TYPE_RPC_CALL,
              actor_type: int = ACTOR_REMOTE_RPC_NAMED_PIPE, call_id: int = 1, fields: str | None = None,
              user: str = "alice", capture_file: str = "") -> RpcCallEvent:
    time_text, ms = xdr_time(ts)
    if fields is None:
        args = {}
        if relay is not None:
            args["ServerName"] = relay
        if share is not None:
            args["RootShare"] = share
        fields = call_fields_json(args)
    return RpcCallEvent(
        _time=time_text, event_timestamp=ms,
        event_id=make_event_id(ts, client, 50123, server_ip, 445, call_id, opnum, fields.encode()),
        event_type=event_type, event_rpc_protocol=RPC_PROTOCOL_NAMED_PIPES,
        action_rpc_interface_uuid=uuid, action_rpc_interface_version_major=3,
        action_rpc_interface_version_minor=0, action_rpc_interface_name="netdfs",
        action_rpc_func_opnum=opnum, action_rpc_func_name=name or DFSNM_NAMES.get(opnum, f"Opnum{opnum}"),
        action_rpc_func_str_call_fields=fields, action_rpc_func_int_call_fields="{}",
        action_rpc_func_exception_code=None, actor_type=actor_type, actor_remote_ip=client,
        actor_remote_port=50123, actor_remote_pipe_name="\\Device\\NamedPipe\\netdfs",
        agent_hostname=server, agent_id=make_agent_id(server), agent_ip=server_ip, agent_port=445,
        net_community_id="1:test", net_smb_dialect="2.1", net_smb_user=user, net_smb_domain="LAB",
        net_smb_workstation="WS1", net_rpc_call_id=call_id, net_capture_file=capture_file)
