"""The server side of NTLMSSP for the lab's listeners and RPC server (MS-NLMP): the CHALLENGE
(2.2.1.2), and, from the client's AUTHENTICATE and the lab's password, the NTLMv2 session keys
that seal and sign (3.3.2, 3.4.5); impacket.ntlm supplies the structures and primitives.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Callable

from Cryptodome.Cipher import ARC4
from impacket import ntlm

CHALLENGE_FIXED = 48 + 8           # MS-NLMP 2.2.1.2: 48 bytes of fixed fields, then the 8-byte VERSION
VERSION = b"\x0a\x00\x63\x45\x00\x00\x00\x0f"   # Windows 10.0.17763, NTLM revision 15 (2.2.2.10)
NT_PROOF_LEN = 16                  # MS-NLMP 3.3.2: NTProofStr, the head of the NTLMv2 response
SIGNATURE_LEN = 16                 # MS-NLMP 2.2.2.9.1: Version, Checksum, SeqNum
# The flags a server echoes when the client asks for them (MS-NLMP 3.2.5.1.1).
ECHOED_FLAGS = (ntlm.NTLMSSP_NEGOTIATE_UNICODE | ntlm.NTLMSSP_NEGOTIATE_NTLM
                | ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY | ntlm.NTLMSSP_NEGOTIATE_128
                | ntlm.NTLMSSP_NEGOTIATE_56 | ntlm.NTLMSSP_NEGOTIATE_ALWAYS_SIGN | ntlm.NTLMSSP_NEGOTIATE_SIGN
                | ntlm.NTLMSSP_NEGOTIATE_SEAL | ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH)


def negotiate_flags(negotiate: bytes) -> int:
    return struct.unpack_from("<I", negotiate, 12)[0]


DNS_DOMAIN = "lab.example"


def challenge(flags: int, netbios_name: str, domain: str, server_challenge: bytes | None = None) -> bytes:
    """A CHALLENGE answering a NEGOTIATE with ``flags``; its target info names the server as
    Windows does (MS-NLMP 2.2.2.1: NetBIOS and DNS names; impacket's client needs the DNS one)."""
    av = ntlm.AV_PAIRS()
    av[ntlm.NTLMSSP_AV_HOSTNAME] = netbios_name.encode("utf-16le")
    av[ntlm.NTLMSSP_AV_DOMAINNAME] = domain.encode("utf-16le")
    av[ntlm.NTLMSSP_AV_DNS_HOSTNAME] = f"{netbios_name.lower()}.{DNS_DOMAIN}".encode("utf-16le")
    av[ntlm.NTLMSSP_AV_DNS_DOMAINNAME] = DNS_DOMAIN.encode("utf-16le")
    message = ntlm.NTLMAuthChallenge()
    message["flags"] = (flags & ECHOED_FLAGS) | ntlm.NTLMSSP_NEGOTIATE_TARGET_INFO \
        | ntlm.NTLMSSP_TARGET_TYPE_DOMAIN | ntlm.NTLMSSP_REQUEST_TARGET | ntlm.NTLMSSP_NEGOTIATE_VERSION
    message["domain_len"] = message["domain_max_len"] = len(domain) * 2
    message["domain_offset"] = CHALLENGE_FIXED
    message["challenge"] = server_challenge or os.urandom(8)
    message["domain_name"] = domain.encode("utf-16le")
    message["TargetInfoFields_len"] = message["TargetInfoFields_max_len"] = len(av.getData())
    message["TargetInfoFields"] = av.getData()
    message["TargetInfoFields_offset"] = CHALLENGE_FIXED + len(domain) * 2
    message["Version"] = VERSION
    message["VersionLen"] = len(VERSION)
    return message.getData()


@dataclass
class Direction:
    """One direction's signing key and RC4 sealing state (MS-NLMP 3.4.5.2/3: the stream runs on
    from message to message, the signature's checksum encrypted by the same stream)."""
    sign_key: bytes
    rc4: Callable[[bytes], bytes]

    @classmethod
    def of(cls, flags: int, session_key: bytes, mode: str) -> "Direction":
        return cls(ntlm.SIGNKEY(flags, session_key, mode), ARC4.new(ntlm.SEALKEY(flags, session_key, mode)).encrypt)

    def checksum(self, seq: int, message: bytes) -> bytes:
        return ntlm.hmac_md5(self.sign_key, struct.pack("<I", seq) + message)[:8]


class AuthenticationFailed(Exception):
    pass


class ServerSession:
    """What the server knows after the AUTHENTICATE (NTLMv2 with extended session security,
    what impacket and Windows send): both directions' keys."""

    def __init__(self, authenticate: bytes, server_challenge: bytes, challenge_flags: int, password: str):
        auth = ntlm.NTLMAuthChallengeResponse()
        auth.fromString(authenticate)
        user = auth["user_name"].decode("utf-16le")
        domain = auth["domain_name"].decode("utf-16le")
        self.flags = auth["flags"] & challenge_flags
        self.user = f"{domain}\\{user}"
        response_key = ntlm.NTOWFv2(user, password, domain)
        nt_proof = auth["ntlm"][:NT_PROOF_LEN]
        if ntlm.hmac_md5(response_key, server_challenge + auth["ntlm"][NT_PROOF_LEN:]) != nt_proof:
            raise AuthenticationFailed(f"NTLMv2 response of {self.user} does not match the lab password")
        key = ntlm.hmac_md5(response_key, nt_proof)      # SessionBaseKey = KeyExchangeKey (NTLMv2)
        if self.flags & ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH:
            key = ARC4.new(key).decrypt(auth["session_key"])   # the client's ExportedSessionKey
        self.client = Direction.of(self.flags, key, "Client")
        self.server = Direction.of(self.flags, key, "Server")
        self.server_seq = 0

    def unseal(self, sealed: bytes, message_to_sign, signature: bytes) -> tuple[bytes, bool]:
        """Decrypt a client's sealed stub; ``message_to_sign(plain)`` gives the bytes its
        signature covers. Returns (plain, signature valid)."""
        plain = self.client.rc4(sealed)
        return plain, self.verify(message_to_sign(plain), signature)

    def verify(self, message: bytes, signature: bytes) -> bool:
        checksum, seq = signature[4:12], struct.unpack_from("<I", signature, 12)[0]
        if self.flags & ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH:
            checksum = self.client.rc4(checksum)
        return checksum == self.client.checksum(seq, message)

    def seal(self, plain: bytes) -> bytes:
        return self.server.rc4(plain)

    def sign(self, message: bytes) -> bytes:
        checksum = self.server.checksum(self.server_seq, message)
        if self.flags & ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH:
            checksum = self.server.rc4(checksum)
        signature = struct.pack("<I", 1) + checksum + struct.pack("<I", self.server_seq)
        self.server_seq += 1
        return signature
