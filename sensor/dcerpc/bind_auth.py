"""The server's own name, read from the authentication of a bind exchange (MS-RPCE 3.3.1.5.2):
what ncacn_ip_tcp, which has no SMB session, gives of the server's DNS name.

- NTLM: the server's CHALLENGE in the bind_ack (or alter_context_resp) carries
  MsvAvDnsComputerName, else MsvAvNbComputerName (MS-NLMP 2.2.2.1). The server writes it:
  a client cannot choose it.
- Kerberos: the client's AP-REQ in the bind names the service principal (RFC 4120 5.3,
  ``host/ps1.corp.example``, ``RPCSS/...``). The client chooses it, so it counts only once the
  server has accepted the bind with an authentication answer of its own (its AP-REP): a ticket
  for another host's SPN is encrypted with that host's key and this server cannot accept it
  (the bind is refused with bind_nak).

Both engines use these on the token: the native one cuts it from the PDU (``auth_value``),
the tshark one reads it from ``dcerpc.auth_credentials``.
"""
from __future__ import annotations

from sensor.dcerpc import pdu
from sensor.smb.kerberos import KerberosError, find_ap_request
from sensor.smb.ntlmssp import NtlmChallenge, NtlmsspError, find_ntlmssp

# Service principal name components: service class, then the host, optionally with a port
# (MS-ADTS SPN syntax "class/host:port/service").
SPN_HOST_INDEX = 1


class AuthTokenError(ValueError):
    """An authentication token is there but malformed (the bind's or its ack's)."""


def auth_value(data: memoryview, hdr: pdu.Header) -> memoryview:
    """C706 13.2.6.1: the auth_length octets of credentials ending the PDU."""
    return data[hdr.frag_length - hdr.auth_length:hdr.frag_length]


def service_host(token: bytes | memoryview) -> str:
    """The host of the Kerberos service principal a bind's AP-REQ names; "" without one."""
    try:
        ap = find_ap_request(token)
    except KerberosError as exc:
        raise AuthTokenError(f"kerberos: {exc}") from None
    if ap is None or len(ap.sname) <= SPN_HOST_INDEX:
        return ""
    return ap.sname[SPN_HOST_INDEX].split(":", 1)[0]


def challenge_name(token: bytes | memoryview) -> str:
    """The DNS (else NetBIOS) computer name an ack's NTLM CHALLENGE gives; "" without one."""
    try:
        message = find_ntlmssp(token)
    except NtlmsspError as exc:
        raise AuthTokenError(f"ntlmssp: {exc}") from None
    if not isinstance(message, NtlmChallenge):
        return ""
    return message.dns_computer_name or message.nb_computer_name
