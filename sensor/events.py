"""The event record: one per RPC request on a catalogued interface, xdr_data-equivalent.

Field names and value formats follow Cortex XDR's xdr_data RPC-call records so that the
DFSCoerce hunting query reads them unchanged (see ../shared/reference/events.md). What
the wire gives beyond that is prefixed ``net_`` so it never collides.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone

from sensor.text import json_line

EVENT_TYPE_RPC_CALL = 22          # xdr_data event_type for RPC_CALL
RPC_PROTOCOL_TCP = 1              # xdr_data event_rpc_protocol
RPC_PROTOCOL_NAMED_PIPES = 2
ACTOR_REMOTE_RPC_NAMED_PIPE = 2   # xdr_data actor_type
ACTOR_REMOTE_RPC_TCP = 4

# Namespace for agent_id: the same server name gives the same id on every sensor and run.
AGENT_ID_NAMESPACE = uuid.UUID("5b0c3c1e-9a57-4f43-9d6e-2f4f1c0d5e11")
# A packet time an event can carry: from 1970 to the end of year 9999 (Python's datetime, and
# so ``_time``, stops there). A source with a time outside it (pcapng's 64-bit ticks and
# if_tsoffset reach far past both ends) gives the frame the previous good time instead.
MAX_EVENT_TIME = 253_402_300_800.0


def is_event_time(ts: float) -> bool:
    return 0.0 <= ts < MAX_EVENT_TIME


@dataclass(frozen=True, slots=True)
class RpcCallEvent:
    """One DCE/RPC call, as Cortex XDR's xdr_data RPC-call record (events.md)."""
    _time: str
    event_timestamp: int
    event_id: str
    event_type: int
    event_rpc_protocol: int
    action_rpc_interface_uuid: str
    action_rpc_interface_version_major: int | None
    action_rpc_interface_version_minor: int | None
    action_rpc_interface_name: str
    action_rpc_func_opnum: int
    action_rpc_func_name: str
    action_rpc_func_str_call_fields: str
    action_rpc_func_int_call_fields: str
    action_rpc_func_exception_code: int | None
    actor_type: int
    actor_remote_ip: str
    actor_remote_port: int
    actor_remote_pipe_name: str
    agent_hostname: str
    agent_id: str
    agent_ip: str
    agent_port: int
    net_community_id: str
    net_smb_dialect: str = ""
    net_smb_user: str = ""
    net_smb_domain: str = ""
    net_smb_workstation: str = ""
    net_rpc_call_id: int = 0
    net_rpc_auth_type: int | None = None
    net_rpc_auth_level: int | None = None
    net_stub_sealed: bool = False
    net_encrypted: bool = False
    net_interface_inferred: str = ""   # "", "pipe" (bind missed, pipe named it), "stub" (decoded as the call)
    net_decode_error: str = ""         # why the arguments are empty, when they are
    net_capture_file: str = ""
    net_capture_frame: int = 0
    sensor: str | None = None          # the sensor that saw it (configured name, default the host name)

    def str_fields(self) -> dict[str, str]:
        return json.loads(self.action_rpc_func_str_call_fields)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json_line(self.to_dict())

    def with_exception_code(self, code: int) -> "RpcCallEvent":
        return replace(self, action_rpc_func_exception_code=code)


def xdr_time(ts: float) -> tuple[str, int]:
    """The ``_time`` text (UTC, millisecond precision, Z) and ``event_timestamp`` (epoch ms)."""
    ms = int(round(ts * 1000))
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z", ms


def make_event_id(ts: float, client: str, client_port: int, server: str, server_port: int,
                  call_id: int, opnum: int, stub: bytes) -> str:
    """Deterministic: the same request in the same capture gives the same id on every replay,
    whatever the file is called, so replaying twice stores nothing twice."""
    h = hashlib.sha256()
    h.update(f"{int(round(ts * 1_000_000))}|{client}|{client_port}|{server}|{server_port}|{call_id}|{opnum}|".encode())
    h.update(stub)
    return h.hexdigest()[:32]


def make_agent_id(agent_hostname: str) -> str:
    return str(uuid.uuid5(AGENT_ID_NAMESPACE, agent_hostname.upper()))


def call_fields_json(fields: dict[str, str]) -> str:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
