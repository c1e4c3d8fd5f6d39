"""Builders of connection-oriented DCE/RPC PDUs for the tests, on impacket's own encoders
(little endian) and by hand from C706 12.6 where impacket cannot (big endian, several
transfer syntaxes per context)."""
from __future__ import annotations

import struct
import uuid

from impacket.dcerpc.v5 import rpcrt
from impacket.uuid import uuidtup_to_bin

from sensor.net.stream import FlowKey

NDR20 = "8a885d04-1ceb-11c9-9fe8-08002b104860"
NDR64 = "71710533-beba-4937-8319-b5dbef9ccc36"
BIND_TIME_FEATURES = "6cb71c2c-9812-4540-0300-000000000000"
NETDFS = "4fc742e0-4a10-11cf-8273-00aa004ae673"
SRVSVC = "4b324fc8-1670-01d3-1278-5a47bf6ee188"
LSARPC = "12345778-1234-abcd-ef00-0123456789ab"

PFC_FIRST_LAST = rpcrt.PFC_FIRST_FRAG | rpcrt.PFC_LAST_FRAG
# The flow an association under test serves (its anomalies name it).
FLOW = FlowKey("10.0.0.66", 40000, "10.0.0.10", 445)


def syntax(uid: str, version: tuple[int, int] = (1, 0)) -> bytes:
    return uuidtup_to_bin((uid, f"{version[0]}.{version[1]}"))


def bind(call_id: int, contexts: list[tuple[int, str, tuple[int, int], str]], alter: bool = False) -> bytes:
    """A bind (or alter_context) with one transfer syntax per context, by impacket."""
    body = rpcrt.MSRPCBind()
    body["ctx_num"] = len(contexts)
    for ctx_id, iface, version, transfer in contexts:
        item = rpcrt.CtxItem()
        item["ContextID"] = ctx_id
        item["TransItems"] = 1
        item["AbstractSyntax"] = syntax(iface, version)
        item["TransferSyntax"] = syntax(transfer, (2, 0) if transfer == NDR20 else (1, 0))
        body.addCtxItem(item)
    hdr = rpcrt.MSRPCHeader()
    hdr["type"] = rpcrt.MSRPC_ALTERCTX if alter else rpcrt.MSRPC_BIND
    hdr["call_id"] = call_id
    hdr["pduData"] = body.getData()
    return hdr.getData()


def bind_ack(call_id: int, results: list[tuple[int, str]], alter: bool = False) -> bytes:
    """bind_ack (or alter_context_resp) with (result, transfer syntax) per context. The
    results are impacket's CtxItemResult; the header is by hand (C706 12.6.4.4), since
    MSRPCBindAck's 'z' secondary address cannot be empty, as alter_context_resp sends it."""
    sec_addr = b"" if alter else b"\\PIPE\\netdfs\x00"
    body = struct.pack("<HHIH", 4280, 4280, 0x1234, len(sec_addr)) + sec_addr
    body += b"\x00" * (-(16 + len(body)) % 4)
    body += struct.pack("<B3x", len(results))
    for result, transfer in results:
        res = rpcrt.CtxItemResult()
        res["Result"] = result
        res["Reason"] = 0 if result == 0 else 2
        res["TransferSyntax"] = syntax(transfer, (2, 0) if transfer == NDR20 else (1, 0))
        body += res.getData()
    ptype = rpcrt.MSRPC_ALTERCTX_R if alter else rpcrt.MSRPC_BINDACK
    return struct.pack("<BBBBIHHI", 5, 0, ptype, PFC_FIRST_LAST, 0x10, 16 + len(body), 0, call_id) + body


def request(call_id: int, opnum: int, stub: bytes, ctx_id: int = 0, flags: int = PFC_FIRST_LAST,
            object_uuid: str | None = None, auth: tuple[int, int, bytes] | None = None) -> bytes:
    """A request by impacket; ``auth`` = (auth_type, auth_level, verifier): the stub is padded
    to 16 bytes before the sec_trailer and auth_pad_length says how much (MS-RPCE 2.2.2.11)."""
    hdr = rpcrt.MSRPCRequestHeader()
    hdr["flags"] = flags | (rpcrt.PFC_OBJECT_UUID if object_uuid else 0)
    hdr["call_id"] = call_id
    hdr["ctx_id"] = ctx_id
    hdr["op_num"] = opnum
    hdr["alloc_hint"] = len(stub)
    if object_uuid:
        hdr["uuid"] = uuid.UUID(object_uuid).bytes_le
    hdr["pduData"] = stub
    if auth:
        auth_type, auth_level, verifier = auth
        pad = (16 - len(stub) % 16) % 16
        trailer = rpcrt.SEC_TRAILER()
        trailer["auth_type"] = auth_type
        trailer["auth_level"] = auth_level
        trailer["auth_pad_len"] = pad
        trailer["auth_ctx_id"] = 79231
        hdr["pad"] = b"\xbb" * pad
        hdr["sec_trailer"] = trailer
        hdr["auth_data"] = verifier
        # impacket's MSRPCHeader starts auth_len at 0; the lengths are set as rpcrt does when it signs.
        hdr["auth_len"] = len(verifier)
        hdr["frag_len"] = 24 + len(hdr["uuid"]) + len(stub) + pad + 8 + len(verifier)
    return hdr.getData()


def response(call_id: int, stub: bytes, flags: int = PFC_FIRST_LAST) -> bytes:
    hdr = rpcrt.MSRPCRespHeader()
    hdr["flags"] = flags
    hdr["call_id"] = call_id
    hdr["alloc_hint"] = len(stub)
    hdr["pduData"] = stub
    return hdr.getData()


def fault(call_id: int, status: int) -> bytes:
    hdr = rpcrt.MSRPCRespHeader()
    hdr["type"] = rpcrt.MSRPC_FAULT
    hdr["flags"] = PFC_FIRST_LAST
    hdr["call_id"] = call_id
    hdr["pduData"] = struct.pack("<LL", status, 0)
    return hdr.getData()


def fragments(call_id: int, opnum: int, stub: bytes, size: int, ctx_id: int = 0) -> list[bytes]:
    """The request split into fragments of ``size`` stub bytes, FIRST/LAST flags set right."""
    chunks = [stub[i:i + size] for i in range(0, len(stub), size)]
    out = []
    for i, chunk in enumerate(chunks):
        flags = (rpcrt.PFC_FIRST_FRAG if i == 0 else 0) | (rpcrt.PFC_LAST_FRAG if i == len(chunks) - 1 else 0)
        out.append(request(call_id, opnum, chunk, ctx_id, flags))
    return out


def big_endian_request(call_id: int, opnum: int, stub: bytes, ctx_id: int = 0) -> bytes:
    """C706 12.6.4.9 by hand with drep 00 00 00 00: every header integer big endian."""
    frag_length = 24 + len(stub)
    return struct.pack(">BBBB4sHHIIHH", 5, 0, 0, PFC_FIRST_LAST, b"\x00\x00\x00\x00", frag_length, 0,
                       call_id, len(stub), ctx_id, opnum) + stub


def big_endian_bind(call_id: int, ctx_id: int, iface: str, version: tuple[int, int]) -> bytes:
    body = struct.pack(">HHIB3x", 4280, 4280, 0, 1)
    body += struct.pack(">HBB", ctx_id, 1, 0) + uuid.UUID(iface).bytes + struct.pack(">HH", *version)
    body += uuid.UUID(NDR20).bytes + struct.pack(">I", 2)
    return struct.pack(">BBBB4sHHI", 5, 0, 11, PFC_FIRST_LAST, b"\x00\x00\x00\x00", 16 + len(body), 0, call_id) + body


def big_endian_bind_ack(call_id: int) -> bytes:
    body = struct.pack(">HHIH", 4280, 4280, 0x99, 0) + b"\x00\x00"  # empty sec_addr, pad to 4
    body += struct.pack(">B3x", 1) + struct.pack(">HH", 0, 0) + uuid.UUID(NDR20).bytes + struct.pack(">I", 2)
    return struct.pack(">BBBB4sHHI", 5, 0, 12, PFC_FIRST_LAST, b"\x00\x00\x00\x00", 16 + len(body), 0, call_id) + body
