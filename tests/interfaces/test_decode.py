"""NDR argument decoding: stubs made by the catalog's NDRCALLs (impacket's encoder) and,
for big endian, by hand from C706 14.3.4.2."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st
from impacket.dcerpc.v5.ndr import NULL

from sensor.interfaces import dfsnm
from sensor.interfaces.catalog import default_catalog
from sensor.interfaces.rows import dfsnm as dfsnm_row
from sensor.interfaces.decode import MAX_STRING_CHARS, DecodedCall, NdrDecodeError, decode_request, looks_like

NETDFS = default_catalog().interface(dfsnm_row.UUID)
OP = NETDFS.operation


def wire(call_type, **args) -> bytes:
    call = call_type()
    for name, value in args.items():
        call[name] = value
    return call.getData()


def be_wstr(text: str, pad: bool = True) -> bytes:
    """A big-endian conformant varying string; ``pad``: then aligned to 4 for a 4-byte next field."""
    units = (text + "\x00").encode("utf-16-be")
    n = len(units) // 2
    data = struct.pack(">III", n, 0, n) + units
    return data + b"\x00" * (-len(data) % 4 if pad else 0)


REMOVE = wire(dfsnm.NetrDfsRemoveStdRoot, ServerName="10.0.0.66\x00", RootShare="test\x00", ApiFlags=1)


def test_remove_std_root():
    assert decode_request(OP(13), REMOVE, True) == DecodedCall({"ServerName": "10.0.0.66", "RootShare": "test"}, {"ApiFlags": "1"})


def test_add_std_root_and_forced_and_initialize():
    stub = wire(dfsnm.NetrDfsAddStdRoot, ServerName="attacker\x00", RootShare="r\x00", Comment="\x00", ApiFlags=0)
    assert decode_request(OP(12), stub, True) == DecodedCall(
        {"ServerName": "attacker", "RootShare": "r", "Comment": ""}, {"ApiFlags": "0"})
    stub = wire(dfsnm.NetrDfsAddStdRootForced, ServerName="a\x00", RootShare="b\x00", Comment="c\x00", Share="d\x00")
    assert decode_request(OP(15), stub, True).strings == {"ServerName": "a", "RootShare": "b", "Comment": "c", "Share": "d"}
    stub = wire(dfsnm.NetrDfsManagerInitialize, ServerName="10.1.1.1\x00", Flags=0)
    assert decode_request(OP(14), stub, True) == DecodedCall({"ServerName": "10.1.1.1"}, {"Flags": "0"})


def test_unique_pointers_null_are_omitted():
    stub = wire(dfsnm.NetrDfsRemove2, DfsEntryPath="\\\\dc\\r\x00", DcName="dc\x00", ServerName=NULL,
                ShareName="s\x00", ppRootList=NULL)
    assert decode_request(OP(20), stub, True).strings == {"DfsEntryPath": "\\\\dc\\r", "DcName": "dc", "ShareName": "s"}
    stub = wire(dfsnm.NetrDfsAddRootTarget, pDfsPath="\\\\10.0.0.66\\x\x00", pTargetPath=NULL, MajorVersion=2,
                pComment=NULL, NewNamespace=1, Flags=7)
    assert decode_request(OP(23), stub, True) == DecodedCall(
        {"pDfsPath": "\\\\10.0.0.66\\x"}, {"MajorVersion": "2", "NewNamespace": "1", "Flags": "7"})


def test_big_endian_stub_decodes_like_little_endian():
    be = be_wstr("10.0.0.66") + be_wstr("test") + struct.pack(">I", 1)
    assert decode_request(OP(13), be, False) == decode_request(OP(13), REMOVE, True)
    assert looks_like(OP(13), be, False) and not looks_like(OP(13), be, True)


def test_big_endian_unique_pointers_and_boolean_alignment():
    be = (struct.pack(">I", 0x20000) + be_wstr("\\\\evil\\s") + struct.pack(">I", 0) + struct.pack(">I", 2)
          + struct.pack(">I", 0x20004) + be_wstr("hi", pad=False) + b"\x01\x00" + struct.pack(">I", 0x01020304))
    assert len(be) == 72   # BOOLEAN right after the string (offset 66), Flags aligned to 68
    assert decode_request(OP(23), be, False) == DecodedCall(
        {"pDfsPath": "\\\\evil\\s", "pComment": "hi"},
        {"MajorVersion": "2", "NewNamespace": "1", "Flags": str(0x01020304)})


def wire64(call_type, **args) -> bytes:
    """The same call in NDR64 (MS-RPCE 2.2.5), by impacket's NDR64 encoder."""
    call = call_type(isNDR64=True)
    for name, value in args.items():
        call[name] = value
    return call.getData()


def be_wstr64(text: str) -> bytes:
    """A big-endian NDR64 conformant varying string: three uint64 counts (MS-RPCE 2.2.5.3.4.1)."""
    units = (text + "\x00").encode("utf-16-be")
    n = len(units) // 2
    return struct.pack(">QQQ", n, 0, n) + units


def test_ndr64_stubs_decode_like_ndr20():
    stub = wire64(dfsnm.NetrDfsRemoveStdRoot, ServerName="10.0.0.66\x00", RootShare="test\x00", ApiFlags=1)
    assert stub != REMOVE and len(stub) == 88
    assert decode_request(OP(13), stub, True, ndr64=True) == decode_request(OP(13), REMOVE, True)
    stub = wire64(dfsnm.NetrDfsRemove2, DfsEntryPath="\\\\dc\\r\x00", DcName="dc\x00", ServerName=NULL,
                  ShareName="s\x00", ppRootList=NULL)
    assert decode_request(OP(20), stub, True, ndr64=True).strings == {"DfsEntryPath": "\\\\dc\\r", "DcName": "dc", "ShareName": "s"}
    # Read as NDR20, the uint64 counts misread: the transfer syntax must be honoured.
    stub = wire64(dfsnm.NetrDfsRemoveStdRoot, ServerName="10.0.0.66\x00", RootShare="test\x00", ApiFlags=1)
    try:
        misread = decode_request(OP(13), stub, True).strings
    except NdrDecodeError:
        misread = None
    assert misread != {"ServerName": "10.0.0.66", "RootShare": "test"}


def test_ndr64_looks_like():
    stub = wire64(dfsnm.NetrDfsAddStdRoot, ServerName="attacker\x00", RootShare="r\x00", Comment="\x00", ApiFlags=0)
    assert looks_like(OP(12), stub, True, ndr64=True)
    assert not looks_like(OP(12), stub, True)
    assert not looks_like(OP(12), REMOVE, True, ndr64=True)


def test_big_endian_ndr64_stub():
    server, share = be_wstr64("10.0.0.66"), be_wstr64("test")
    stub = server + b"\x00" * (-len(server) % 8) + share
    stub += b"\x00" * (-len(stub) % 4) + struct.pack(">I", 1)
    assert decode_request(OP(13), stub, False, ndr64=True) == decode_request(OP(13), REMOVE, True)


def test_string_cut_at_embedded_nul():
    stub = wire(dfsnm.NetrDfsRemoveStdRoot, ServerName="10.0.0.66\x00decoy\x00", RootShare="t\x00", ApiFlags=1)
    assert decode_request(OP(13), stub, True).strings["ServerName"] == "10.0.0.66"


def test_invalid_utf16_is_replaced():
    stub = bytearray(REMOVE)
    stub[12:14] = b"\x00\xd8"   # a lone high surrogate as the first character
    assert decode_request(OP(13), bytes(stub), True).strings["ServerName"] == "\ufffd0.0.0.66"


def test_long_string_truncated_and_flagged():
    stub = wire(dfsnm.NetrDfsRemoveStdRoot, ServerName="A" * 5000 + "\x00", RootShare="t\x00", ApiFlags=1)
    decoded = decode_request(OP(13), stub, True)
    assert decoded.strings["ServerName"] == "A" * MAX_STRING_CHARS and decoded.truncated == ("ServerName",)


def test_short_stub_raises_decode_error():
    for cut in (0, 5, 20, len(REMOVE) - 4):
        with pytest.raises(NdrDecodeError):
            decode_request(OP(13), REMOVE[:cut], True)
    with pytest.raises(NdrDecodeError):
        decode_request(OP(13), (be_wstr("10.0.0.66") + be_wstr("test"))[:-3], False)


def test_operation_without_decoder_raises():
    with pytest.raises(NdrDecodeError):
        decode_request(OP(0), b"", True)


def test_trailing_bytes_tolerated_by_decode_but_not_by_looks_like():
    assert decode_request(OP(13), REMOVE + b"\x00" * 64, True).strings["ServerName"] == "10.0.0.66"
    assert looks_like(OP(13), REMOVE, True)
    assert looks_like(OP(13), REMOVE + b"\x00" * 4, True)
    assert not looks_like(OP(13), REMOVE + b"\x00" * 64, True)


def test_looks_like_rejects_inconsistent_counts_and_other_calls():
    bad_max = bytearray(REMOVE)
    bad_max[0] = 9                      # MaximumCount < ActualCount: the server rejects it
    bad_offset = bytearray(REMOVE)
    bad_offset[4] = 1                   # Offset != 0
    no_nul = wire(dfsnm.NetrDfsRemoveStdRoot, ServerName="10.0.0.66", RootShare="test\x00", ApiFlags=1)
    assert not looks_like(OP(13), bytes(bad_max), True)
    assert not looks_like(OP(13), bytes(bad_offset), True)
    assert not looks_like(OP(13), no_nul, True)
    assert not looks_like(OP(12), REMOVE, True)   # one string short
    assert not looks_like(OP(0), REMOVE, True)    # no decoder: never inferred


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([12, 13, 14, 15, 20, 23, 24]), st.booleans())
def test_random_stubs_raise_only_decode_errors(stub, opnum, little):
    try:
        decoded = decode_request(OP(opnum), stub, little)
    except NdrDecodeError:
        pass
    else:
        assert all(isinstance(v, str) for v in (*decoded.strings.values(), *decoded.ints.values()))
    looks_like(OP(opnum), stub, little)
