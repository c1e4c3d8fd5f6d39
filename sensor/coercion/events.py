"""What the coercion stages raise: alerts that link an inbound session to its effect."""
from __future__ import annotations

from dataclasses import dataclass

from sensor.alerts import FORCED_AUTHENTICATION, AlertEnvelope, Flow, RuleMeta
from sensor.net.stream import FlowKey
from sensor.xql.functions import utc_date


CONFIRMED = "coercion-confirmed"            # decoded call named L, then V's machine account -> L
PROBABLE = "probable-coercion"              # encrypted inbound session, then V's machine account -> L
ENCRYPTED_NETDFS = "probable-dfscoerce-encrypted"   # transform-header sizes of a netdfs root call

RULES = {
    CONFIRMED: RuleMeta(CONFIRMED, "Coercion confirmed: a call named a host, then the server's "
                        "machine account authenticated to it", 1, "high", FORCED_AUTHENTICATION),
    PROBABLE: RuleMeta(PROBABLE, "Probable coercion: encrypted inbound session, then the server's "
                       "machine account authenticated to a rare host", 1, "medium", FORCED_AUTHENTICATION),
    # The id keeps its name (a stable key for users); the name says what the sizes can tell:
    # inside encryption a six-letter pipe's sizes cannot say netdfs from efsrpc or lsarpc, and
    # PetitPotam's EfsRpcEncryptFileSrv has the root call's shape (efsr-efsrpc-smb3-encrypted-fingerprint).
    ENCRYPTED_NETDFS: RuleMeta(ENCRYPTED_NETDFS, "Probable coercion inside SMB3 encryption "
                               "(transform-header sizes of impacket's netdfs root call: DFSCoerce, "
                               "or PetitPotam on a six-letter pipe)", 1, "medium",
                               FORCED_AUTHENTICATION),
}


@dataclass(frozen=True, slots=True)
class CoercionAlert:
    """An inbound session to V linked to its effect: V's machine account authenticating to L."""
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
    inbound_flow: FlowKey | None = None   # client -> V: the session that carried (or hid) the call
    auth_flow: FlowKey | None = None      # V -> L: the back-authentication
    victim_name: str = ""                 # V's name as its machine account gave it (its machine account without the $)
    listener_name: str = ""               # L's name from its NTLMSSP CHALLENGE (Kerberos: the ticket's service host)
    client_name: str = ""                 # the client's workstation name from its SMB session

    @property
    def key(self) -> list[str]:
        """What one alert is per rule and UTC day."""
        return [self.victim_ip, self.listener_ip, self.client_ip]

    @property
    def day(self) -> str:
        return utc_date(int(self.ts * 1000))

    def envelope(self, sensor: str) -> AlertEnvelope:
        flows = tuple(Flow(f.client_ip, f.client_port, f.server_ip, f.server_port)
                      for f in (self.inbound_flow, self.auth_flow) if f is not None)
        fields = {
            "victim_ip": self.victim_ip, "victim_name": self.victim_name,
            "listener_ip": self.listener_ip, "listener_name": self.listener_name,
            "client_ip": self.client_ip, "client_name": self.client_name,
            "user": self.user, "domain": self.domain, "protocol": self.protocol, "technique": self.technique,
            "delay": self.delay if self.auth_flow is not None else None,
            "call_event_ids": list(self.call_event_ids), "confidence": self.confidence,
            "day": self.day, "day_count": self.day_count or None, "detail": self.detail,
        }
        return AlertEnvelope(RULES[self.rule], self.ts, self.key, self.day, flows, sensor, fields)
