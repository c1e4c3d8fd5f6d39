"""What the SMB stage hands on: named-pipe I/O and what the session tells about its peers.

A pipe is named by ``PipeId``: unique within one TCP flow for the life of the handle.
"""
from __future__ import annotations

from dataclasses import dataclass

from sensor.net.stream import FlowKey

# (smb version 1 or 2, session id / SMB1 uid, tree id, file id: SMB2 16-byte FileId or SMB1 FID)
PipeId = tuple[int, int, int, bytes | int]


@dataclass(frozen=True, slots=True)
class SmbSession:
    """Emitted when a session's authentication completes (or changes what we know of it)."""

    flow: FlowKey
    ts: float
    session_id: int            # SMB2 SessionId; SMB1 UID
    dialect: str               # "SMB1", "2.0.2", "2.1", "3.0", "3.0.2", "3.1.1", "" if unseen
    user: str = ""             # NTLMSSP AUTHENTICATE
    domain: str = ""
    workstation: str = ""
    ntlm_version: str = ""     # "NTLMv1", "NTLMv2", "" (anonymous/unknown)
    server_netbios_name: str = ""   # NTLMSSP CHALLENGE AV pairs (MsvAvNbComputerName)
    server_dns_name: str = ""       # MsvAvDnsComputerName
    server_netbios_domain: str = ""
    encrypted: bool = False    # the session encrypts (transform headers seen or required)


@dataclass(frozen=True, slots=True)
class NtlmAuthentication:
    """An NTLMSSP AUTHENTICATE went by (SMB SESSION_SETUP request, HTTP Authorization header).

    Emitted at the request, whatever the server answers: a coerced server's back-authentication
    to an attacker's listener is the signal even when the listener denies it or hangs up."""

    flow: FlowKey
    ts: float
    frame: int
    protocol: str              # "smb1", "smb2", "http"
    user: str
    domain: str
    workstation: str
    ntlm_version: str          # "NTLMv1", "NTLMv2", "" (anonymous)
    server_netbios_name: str = ""   # from the CHALLENGE before it, when seen
    server_dns_name: str = ""

    @property
    def is_machine_account(self) -> bool:
        # MS-ADTS 6.1.1.2.2: a computer account's sAMAccountName ends with "$".
        return self.user.endswith("$")


@dataclass(frozen=True, slots=True)
class KerberosAuthentication:
    """A Kerberos AP-REQ went by (SMB SESSION_SETUP request, HTTP Negotiate): the ticket's
    realm and service principal (cifs/L, HTTP/L) are in the clear; the client principal (is it
    a machine account?) is encrypted in the ticket and the authenticator (RFC 4120 5.3)."""

    flow: FlowKey
    ts: float
    frame: int
    protocol: str              # "smb1", "smb2", "http"
    realm: str
    sname: tuple[str, ...]     # e.g. ("cifs", "listener.lab.example")

    @property
    def service_host(self) -> str:
        return self.sname[1].split(":", 1)[0].lower() if len(self.sname) >= 2 else ""


@dataclass(frozen=True, slots=True)
class PipeOpened:
    """A CREATE of a named pipe answered with a handle (SMB2 CREATE, SMB1 NT_CREATE_ANDX)."""
    flow: FlowKey
    ts: float
    frame: int
    pipe: PipeId
    name: str          # as opened, normalised: lower case, no leading "\\", "pipe\\" stripped: "netdfs"
    tree: str          # tree connect path as sent, e.g. "\\\\10.0.0.10\\IPC$"; "" if unseen


@dataclass(frozen=True, slots=True)
class PipeData:
    """Bytes written to (from_client) or read from the pipe, in order per pipe and direction."""

    flow: FlowKey
    ts: float
    frame: int
    pipe: PipeId
    from_client: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class PipeClosed:
    """A named pipe's handle closed."""
    flow: FlowKey
    ts: float
    pipe: PipeId


@dataclass(frozen=True, slots=True)
class EncryptedMessage:
    """An SMB3 TRANSFORM_HEADER went by: counted, never decrypted."""

    flow: FlowKey
    ts: float
    frame: int
    from_client: bool
    session_id: int
    original_size: int   # OriginalMessageSize, in clear in the transform header
    wire_size: int       # bytes of the whole NetBIOS message


SmbEvent = SmbSession | NtlmAuthentication | PipeOpened | PipeData | PipeClosed | EncryptedMessage
