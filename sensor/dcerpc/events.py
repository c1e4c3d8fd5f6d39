"""What the DCE/RPC stage hands on, per association (one pipe, or one ncacn_ip_tcp connection)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RpcBind:
    """A presentation context the server accepted (bind_ack / alter_context_resp result 0),
    or, when no answer to the bind was captured (a one-sided or midstream capture), one the
    client proposed and then made a call on (``acknowledged`` False): reported once, just
    before that first call, as tshark shows the bind whether or not its ack is there."""

    ts: float
    ctx_id: int
    interface_uuid: str          # lower-case canonical text, no braces
    interface_version: tuple[int, int]
    transfer_syntax: str         # lower-case uuid; NDR20 8a885d04-1ceb-11c9-9fe8-08002b104860; "" unacknowledged
    acknowledged: bool = True


@dataclass(frozen=True, slots=True)
class RpcCall:
    """A complete request: all fragments joined, auth trailer removed."""

    ts: float                    # capture time of the last fragment
    frame: int                   # capture frame of the last fragment
    call_id: int
    ctx_id: int
    opnum: int
    interface_uuid: str | None   # None when the bind was not seen (midstream)
    interface_version: tuple[int, int] | None
    stub: bytes                  # NDR stub data; empty when sealed
    little_endian: bool          # data representation of the request
    auth_type: int | None        # sec_trailer auth_type (10 NTLMSSP, 9 SPNEGO, 16 Kerberos); None: no auth
    auth_level: int | None       # 2 connect, 5 integrity, 6 privacy
    sealed: bool                 # PKT_PRIVACY: stub encrypted, arguments not decodable
    object_uuid: str | None = None
    ndr64: bool = False          # the context's transfer syntax is NDR64 (71710533-...): stub in NDR64
    stub_skipped: bool = False   # the interface is not catalogued: stub passed over, not kept (empty)


@dataclass(frozen=True, slots=True)
class RpcResult:
    """The response (status 0) or fault (its status) for an earlier call_id."""

    ts: float
    call_id: int
    status: int
    fault: bool


RpcEvent = RpcBind | RpcCall | RpcResult
