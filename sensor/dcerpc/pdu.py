"""Connection-oriented DCE/RPC v5 PDUs (C706 chapter 12, MS-RPCE 2.2.2): parsing by offset.

Pure functions over bytes/memoryview. Every integer in a PDU, the common header included,
is in the byte order its data representation label announces (C706 12.6.3.1: drep[0] bit
0x10 set = little endian), so each parser takes ``little`` and picks a precompiled Struct.
"""
from __future__ import annotations

import struct
import uuid
from typing import NamedTuple

# C706 12.6.3.1 packet types (connection-oriented) and MS-RPCE 2.2.2.3 auth3.
PTYPE_REQUEST = 0
PTYPE_RESPONSE = 2
PTYPE_FAULT = 3
PTYPE_BIND = 11
PTYPE_BIND_ACK = 12
PTYPE_BIND_NAK = 13
PTYPE_ALTER_CONTEXT = 14
PTYPE_ALTER_CONTEXT_RESP = 15
PTYPE_AUTH3 = 16
PTYPE_SHUTDOWN = 17
PTYPE_CO_CANCEL = 18
PTYPE_ORPHANED = 19
CO_PTYPES = frozenset({
    PTYPE_REQUEST, PTYPE_RESPONSE, PTYPE_FAULT, PTYPE_BIND, PTYPE_BIND_ACK, PTYPE_BIND_NAK,
    PTYPE_ALTER_CONTEXT, PTYPE_ALTER_CONTEXT_RESP, PTYPE_AUTH3, PTYPE_SHUTDOWN,
    PTYPE_CO_CANCEL, PTYPE_ORPHANED,
})
# Who sends which (C706 12.6.4): a PDU of the other side's types is out of place.
CLIENT_PTYPES = frozenset({PTYPE_REQUEST, PTYPE_BIND, PTYPE_ALTER_CONTEXT, PTYPE_AUTH3, PTYPE_CO_CANCEL,
                           PTYPE_ORPHANED})
SERVER_PTYPES = frozenset({PTYPE_RESPONSE, PTYPE_FAULT, PTYPE_BIND_ACK, PTYPE_BIND_NAK, PTYPE_ALTER_CONTEXT_RESP,
                           PTYPE_SHUTDOWN})

# C706 12.6.3.1 pfc_flags.
PFC_FIRST_FRAG = 0x01
PFC_LAST_FRAG = 0x02
PFC_OBJECT_UUID = 0x80

# C706 12.6.3.1: drep[0] high nibble 1 = little-endian integers.
DREP_LITTLE_ENDIAN = 0x10

RPC_VERS = 5
RPC_VERS_MINORS = (0, 1)   # 5.0 and 5.1 are both on the wire (C706 12.6.3.1; Windows sends 5.0)

COMMON_HEADER_LEN = 16
SEC_TRAILER_LEN = 8          # C706 13.2.6.1 auth_verifier_co_t header: type, level, pad, reserved, context id
REQUEST_HEADER_LEN = 24      # common header + alloc_hint, p_cont_id, opnum
RESPONSE_HEADER_LEN = 24     # common header + alloc_hint, p_cont_id, cancel_count, reserved
FAULT_HEADER_LEN = 28        # response header + status
BIND_HEADER_LEN = 28         # common header + max_xmit, max_recv, assoc_group, n_context_elem, 3 reserved
BIND_ACK_MIN_LEN = 26        # common header + max_xmit, max_recv, assoc_group, sec_addr length
OBJECT_UUID_LEN = 16
CONTEXT_ELEM_HEAD_LEN = 24   # p_cont_id, n_transfer_syn, reserved, abstract syntax (uuid + version)
SYNTAX_ID_LEN = 20           # uuid + uint32 version (C706 12.6.3.3 p_syntax_id_t)
RESULT_LEN = 24              # result, reason, transfer syntax (C706 12.6.3.4 p_result_t)

AUTH_LEVEL_INTEGRITY = 5     # PKT_INTEGRITY: stub in clear, verifier signs it
AUTH_LEVEL_PRIVACY = 6       # PKT_PRIVACY: stub sealed

RESULT_ACCEPTANCE = 0        # C706 12.6.3.4 p_cont_def_result_t

NDR20_SYNTAX = "8a885d04-1ceb-11c9-9fe8-08002b104860"
NDR64_SYNTAX = "71710533-beba-4937-8319-b5dbef9ccc36"   # MS-RPCE 2.2.5.1.1

_HEADER_LE = struct.Struct("<BBBB4sHHI")
_HEADER_BE = struct.Struct(">BBBB4sHHI")
_U16 = (struct.Struct(">H"), struct.Struct("<H"))
_U32 = (struct.Struct(">I"), struct.Struct("<I"))
_REQUEST = (struct.Struct(">IHH"), struct.Struct("<IHH"))          # alloc_hint, p_cont_id, opnum
_SEC_TRAILER = (struct.Struct(">BBBBI"), struct.Struct("<BBBBI"))   # type, level, pad, reserved, ctx id
_CTX_HEAD = (struct.Struct(">HBB"), struct.Struct("<HBB"))          # p_cont_id, n_transfer_syn, reserved
_VERSION = (struct.Struct(">HH"), struct.Struct("<HH"))             # major, minor
_RESULT = (struct.Struct(">HH"), struct.Struct("<HH"))              # result, reason


class PduError(ValueError):
    """The PDU contradicts its own lengths or counts."""


class Header(NamedTuple):
    ptype: int
    flags: int
    little: bool
    frag_length: int
    auth_length: int
    call_id: int


class Context(NamedTuple):
    ctx_id: int
    interface_uuid: str
    interface_version: tuple[int, int]
    transfer_syntaxes: tuple[str, ...]


class AckResult(NamedTuple):
    result: int
    transfer_syntax: str


class Auth(NamedTuple):
    auth_type: int
    auth_level: int
    pad_length: int


class Request(NamedTuple):
    ctx_id: int
    opnum: int
    object_uuid: str | None
    stub_start: int   # offsets into the PDU
    stub_end: int
    auth: Auth | None


def parse_header(buf: bytes | bytearray | memoryview, off: int = 0) -> Header | None:
    """The common header at ``off``, or None when it is not a plausible CO header:
    version 5.0/5.1, a known CO ptype, and a frag_length that holds its own auth_length."""
    if len(buf) - off < COMMON_HEADER_LEN:
        return None
    little = bool(buf[off + 4] & DREP_LITTLE_ENDIAN)
    vers, minor, ptype, flags, _drep, frag_length, auth_length, call_id = (
        _HEADER_LE if little else _HEADER_BE).unpack_from(buf, off)
    if vers != RPC_VERS or minor not in RPC_VERS_MINORS:
        return None
    if frag_length < COMMON_HEADER_LEN + (SEC_TRAILER_LEN + auth_length if auth_length else 0):
        return None
    return Header(ptype, flags, little, frag_length, auth_length, call_id)


def plausible_header(buf: bytes | bytearray | memoryview, off: int, max_frag: int) -> bool:
    """Strict test used to resynchronise after a gap or garbage: a known CO ptype, a defined
    drep, a sane size, and PFC_FIRST_FRAG. Requiring the first-fragment flag costs nothing
    (a later fragment of a call whose start was lost cannot be used) and rejects the
    commonest false match in NDR stubs: uint32 5 then zeros, read as a big-endian header."""
    hdr = parse_header(buf, off)
    if hdr is None or hdr.ptype not in CO_PTYPES or hdr.frag_length > max_frag:
        return False
    if not hdr.flags & PFC_FIRST_FRAG:
        return False
    # C706 12.6.3.1 / 14.1: drep[0] low nibble is the character set (0 ASCII, 1 EBCDIC);
    # byte 1 the float format (0-3); bytes 2-3 reserved, zero in every stack seen.
    if buf[off + 4] & 0xEE or buf[off + 5] > 3 or buf[off + 6] or buf[off + 7]:
        return False
    # When the next PDU's header is already here, it must parse as well.
    following = off + hdr.frag_length
    return len(buf) - following < COMMON_HEADER_LEN or parse_header(buf, following) is not None


def parse_uuid(buf: bytes | bytearray | memoryview, off: int, little: bool) -> str:
    raw = bytes(buf[off:off + 16])
    return str(uuid.UUID(bytes_le=raw) if little else uuid.UUID(bytes=raw))


def parse_sec_trailer(pdu: bytes | bytearray | memoryview, hdr: Header) -> Auth:
    """C706 13.2.6.1: the sec_trailer sits right before the auth_length bytes of verifier."""
    off = hdr.frag_length - hdr.auth_length - SEC_TRAILER_LEN
    auth_type, auth_level, pad_length, _reserved, _ctx = _SEC_TRAILER[hdr.little].unpack_from(pdu, off)
    return Auth(auth_type, auth_level, pad_length)


def auth_value(pdu: bytes | bytearray | memoryview, hdr: Header) -> memoryview:
    """C706 13.2.6.1: the auth_length bytes after the sec_trailer (an NTLMSSP or SPNEGO token)."""
    return memoryview(pdu)[hdr.frag_length - hdr.auth_length:hdr.frag_length]


def parse_request(pdu: bytes | bytearray | memoryview, hdr: Header) -> Request:
    """C706 12.6.4.9 request: alloc_hint, p_cont_id, opnum, [object uuid], stub, [auth]."""
    end = hdr.frag_length
    if end < REQUEST_HEADER_LEN:
        raise PduError("request shorter than its header")
    _alloc_hint, ctx_id, opnum = _REQUEST[hdr.little].unpack_from(pdu, COMMON_HEADER_LEN)
    start = REQUEST_HEADER_LEN
    object_uuid = None
    if hdr.flags & PFC_OBJECT_UUID:
        if end < start + OBJECT_UUID_LEN:
            raise PduError("object uuid flag set but no room for it")
        object_uuid = parse_uuid(pdu, start, hdr.little)
        start += OBJECT_UUID_LEN
    auth = None
    if hdr.auth_length:
        trailer = end - hdr.auth_length - SEC_TRAILER_LEN
        if trailer < start:
            raise PduError("auth trailer overlaps the request header")
        auth = parse_sec_trailer(pdu, hdr)
        # C706 13.2.6.1: auth_pad_length bytes pad the stub to the trailer's alignment.
        end = trailer - auth.pad_length
        if end < start:
            raise PduError("auth_pad_length larger than the stub")
    return Request(ctx_id, opnum, object_uuid, start, end, auth)


def parse_bind(pdu: bytes | bytearray | memoryview, hdr: Header) -> list[Context]:
    """C706 12.6.4.3 bind / 12.6.4.1 alter_context: the presentation context list."""
    end = hdr.frag_length - (hdr.auth_length + SEC_TRAILER_LEN if hdr.auth_length else 0)
    if end < BIND_HEADER_LEN:
        raise PduError("bind shorter than its header")
    count = pdu[24]
    off = BIND_HEADER_LEN
    contexts = []
    ctx_head, version = _CTX_HEAD[hdr.little], _VERSION[hdr.little]
    for _ in range(count):
        if off + CONTEXT_ELEM_HEAD_LEN > end:
            raise PduError("context list runs past the PDU")
        ctx_id, n_syntaxes, _reserved = ctx_head.unpack_from(pdu, off)
        iface = parse_uuid(pdu, off + 4, hdr.little)
        major, minor = version.unpack_from(pdu, off + 20)
        off += CONTEXT_ELEM_HEAD_LEN
        if off + n_syntaxes * SYNTAX_ID_LEN > end:
            raise PduError("transfer syntaxes run past the PDU")
        syntaxes = tuple(parse_uuid(pdu, off + i * SYNTAX_ID_LEN, hdr.little) for i in range(n_syntaxes))
        off += n_syntaxes * SYNTAX_ID_LEN
        contexts.append(Context(ctx_id, iface, (major, minor), syntaxes))
    return contexts


def parse_bind_ack(pdu: bytes | bytearray | memoryview, hdr: Header) -> list[AckResult]:
    """C706 12.6.4.4 bind_ack / 12.6.4.2 alter_context_resp: the result list, in the
    order of the request's contexts, after the secondary address padded to 4."""
    end = hdr.frag_length - (hdr.auth_length + SEC_TRAILER_LEN if hdr.auth_length else 0)
    if end < BIND_ACK_MIN_LEN:
        raise PduError("bind_ack shorter than its header")
    sec_addr_len = _U16[hdr.little].unpack_from(pdu, 24)[0]
    off = BIND_ACK_MIN_LEN + sec_addr_len
    off += -off & 3
    if off + 4 > end:
        raise PduError("bind_ack result list runs past the PDU")
    count = pdu[off]
    off += 4
    if off + count * RESULT_LEN > end:
        raise PduError("bind_ack results run past the PDU")
    results = []
    for i in range(count):
        result, _reason = _RESULT[hdr.little].unpack_from(pdu, off + i * RESULT_LEN)
        results.append(AckResult(result, parse_uuid(pdu, off + i * RESULT_LEN + 4, hdr.little)))
    return results


def fault_status(pdu: bytes | bytearray | memoryview, hdr: Header) -> int:
    """C706 12.6.4.7 fault: the status after the response-like header."""
    if hdr.frag_length < FAULT_HEADER_LEN:
        raise PduError("fault shorter than its header")
    return _U32[hdr.little].unpack_from(pdu, 24)[0]
