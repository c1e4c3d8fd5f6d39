"""NTLMSSP messages (MS-NLMP 2.2.1) found inside SMB SESSION_SETUP security blobs.

Only what names the peers is read: from CHALLENGE the server's names in its AV pairs, from
AUTHENTICATE the client's user, domain and workstation and the NTLM version. The blob may be
raw NTLMSSP or wrapped in SPNEGO/GSS-API; rather than decoding the ASN.1 we look for the
"NTLMSSP\\0" signature, which the DER wrapping never alters (the token is an OCTET STRING).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

SIGNATURE = b"NTLMSSP\x00"
NEGOTIATE = 1
CHALLENGE = 2
AUTHENTICATE = 3

# MS-NLMP 2.2.2.5: strings are UTF-16LE when NTLMSSP_NEGOTIATE_UNICODE is set, else OEM.
NEGOTIATE_UNICODE = 0x00000001
# MS-NLMP 2.2.2.1 AvId values we report.
AV_EOL = 0
AV_NB_COMPUTER_NAME = 1
AV_NB_DOMAIN_NAME = 2
AV_DNS_COMPUTER_NAME = 3
# MS-NLMP 3.3.1: an NTLMv1 NtChallengeResponse is exactly 24 bytes; v2 responses are longer.
NTLMV1_RESPONSE_LENGTH = 24
# A TargetInfo list has a handful of pairs; more than this is not a real server's.
AV_PAIRS_LIMIT = 64

_u16 = struct.Struct("<H")
_u32 = struct.Struct("<I")
_field = struct.Struct("<HHI")   # Len, MaxLen, BufferOffset (MS-NLMP 2.2.1: *Fields)
_av = struct.Struct("<HH")


class NtlmsspError(ValueError):
    """The message is cut short or its fields point outside it."""


@dataclass(frozen=True, slots=True)
class NtlmNegotiate:
    """NTLMSSP NEGOTIATE_MESSAGE (MS-NLMP 2.2.1.1): its flags."""
    flags: int


@dataclass(frozen=True, slots=True)
class NtlmChallenge:
    """NTLMSSP CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2): flags and the server's names."""
    flags: int
    nb_computer_name: str = ""
    dns_computer_name: str = ""
    nb_domain_name: str = ""


@dataclass(frozen=True, slots=True)
class NtlmAuthenticate:
    """NTLMSSP AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3): who authenticated, from where."""
    flags: int
    user: str
    domain: str
    workstation: str
    ntlm_version: str   # "NTLMv1", "NTLMv2", "" (anonymous: empty NT response)


NtlmMessage = NtlmNegotiate | NtlmChallenge | NtlmAuthenticate


def find_ntlmssp(blob: bytes | memoryview) -> NtlmMessage | None:
    """The NTLMSSP message inside a security blob, or None when there is none (e.g. Kerberos).

    Raises NtlmsspError when the signature is there but the message is malformed."""
    blob = bytes(blob)
    start = blob.find(SIGNATURE)
    if start < 0:
        return None
    return parse_ntlmssp(memoryview(blob)[start:])


def parse_ntlmssp(msg: memoryview) -> NtlmMessage | None:
    if len(msg) < 12 or bytes(msg[:8]) != SIGNATURE:
        raise NtlmsspError("short or unsigned NTLMSSP message")
    kind = _u32.unpack_from(msg, 8)[0]
    if kind == NEGOTIATE:
        _need(msg, 16)
        return NtlmNegotiate(_u32.unpack_from(msg, 12)[0])
    if kind == CHALLENGE:
        return _challenge(msg)
    if kind == AUTHENTICATE:
        return _authenticate(msg)
    raise NtlmsspError(f"message type {kind}")


def _challenge(msg: memoryview) -> NtlmChallenge:
    _need(msg, 48)
    flags = _u32.unpack_from(msg, 20)[0]
    info = _payload(msg, 40)
    names = {AV_NB_COMPUTER_NAME: "", AV_NB_DOMAIN_NAME: "", AV_DNS_COMPUTER_NAME: ""}
    pos = 0
    for _ in range(AV_PAIRS_LIMIT):
        if pos + 4 > len(info):
            break
        av_id, av_len = _av.unpack_from(info, pos)
        if av_id == AV_EOL:
            break
        value = info[pos + 4:pos + 4 + av_len]
        if len(value) != av_len:
            raise NtlmsspError("AV pair runs past TargetInfo")
        if av_id in names:
            names[av_id] = _text(value, True)
        pos += 4 + av_len
    return NtlmChallenge(flags, names[AV_NB_COMPUTER_NAME], names[AV_DNS_COMPUTER_NAME],
                         names[AV_NB_DOMAIN_NAME])


def _authenticate(msg: memoryview) -> NtlmAuthenticate:
    _need(msg, 64)
    flags = _u32.unpack_from(msg, 60)[0]
    unicode = bool(flags & NEGOTIATE_UNICODE)
    nt_length = _field.unpack_from(msg, 20)[0]
    if nt_length == 0:
        version = ""
    elif nt_length == NTLMV1_RESPONSE_LENGTH:
        version = "NTLMv1"
    else:
        version = "NTLMv2"
    return NtlmAuthenticate(
        flags,
        user=_text(_payload(msg, 36), unicode),
        domain=_text(_payload(msg, 28), unicode),
        workstation=_text(_payload(msg, 44), unicode),
        ntlm_version=version,
    )


def _need(msg: memoryview, length: int) -> None:
    if len(msg) < length:
        raise NtlmsspError(f"{len(msg)} bytes, need {length}")


def _payload(msg: memoryview, at: int) -> memoryview:
    length, _max, offset = _field.unpack_from(msg, at)
    if length == 0:
        return msg[0:0]
    if offset + length > len(msg):
        raise NtlmsspError(f"field at {at} points past the message")
    return msg[offset:offset + length]


def _text(raw: memoryview, unicode: bool) -> str:
    # Names are reported, never trusted: undecodable units are replaced, not fatal.
    return bytes(raw).decode("utf-16-le" if unicode else "latin-1", errors="replace")
