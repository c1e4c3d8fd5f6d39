"""What the coercion stages raise: alerts that link an inbound session to its effect."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from sensor.text import json_line

CONFIRMED = "coercion-confirmed"            # decoded call named L, then V's machine account -> L
PROBABLE = "probable-coercion"              # encrypted inbound session, then V's machine account -> L
ENCRYPTED_NETDFS = "probable-dfscoerce-encrypted"   # transform-header sizes of a netdfs root call


@dataclass(frozen=True, slots=True)
class CoercionAlert:
    rule: str
    ts: float
    victim_ip: str          # V: the server that was made to authenticate
    listener_ip: str        # L: where it authenticated ("" for the size fingerprint)
    client_ip: str          # who talked to V just before
    user: str = ""          # V's machine account as it authenticated
    domain: str = ""
    protocol: str = ""      # of the back-authentication: "smb1", "smb2", "http"
    delay: float = 0.0      # seconds from the inbound session's last activity to the authentication
    call_event_ids: tuple[str, ...] = ()   # RpcCallEvent ids of the coercion call(s)
    confidence: float = 1.0
    day_count: int = 0      # PROBABLE: distinct days the (V, L) pair was seen, this one included
    detail: str = ""
    technique: str = ""     # of the call: "DFSCoerce", "PetitPotam", ... ("" when no call was seen)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["call_event_ids"] = list(self.call_event_ids)
        return record

    def to_json(self) -> str:
        return json_line(self.to_dict())
