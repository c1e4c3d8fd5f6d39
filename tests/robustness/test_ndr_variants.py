"""NDR encodings the rules allow besides the one impacket writes (C706 14.2.2 alignment,
14.3.4.2 conformant varying strings, 14.3.12.1 unique pointers): the decoder gives the same
arguments. Encodings a Windows server rejects (RPC_X_INVALID_BOUND: actual_count beyond
max_count, a non-zero string offset) are decoded too -- the sensor reports what was sent and
the call's fault code says it failed -- but are never taken for the interface when inferring it
from a stub (looks_like)."""
from __future__ import annotations

import struct

import pytest

from sensor.dcerpc.events import RpcCall
from sensor.event_builder import decode_arguments
from sensor.interfaces import dfsnm
from sensor.interfaces.catalog import default_catalog
from sensor.interfaces.decode import looks_like

NETDFS = "4fc742e0-4a10-11cf-8273-00aa004ae673"
IFACE = default_catalog().interface(NETDFS)
ADD_STD_ROOT, ADD_ROOT_TARGET = 12, 23
# Odd lengths (with the NUL) so that every string is followed by 2 bytes of alignment padding.
ARGS = ({"ServerName": "10.0.0.6", "RootShare": "share2", "Comment": "cc"}, {"ApiFlags": "0"}, "")
TARGET_ARGS = ({"pDfsPath": "\\\\10.0.0.6\\x", "pTargetPath": "\\\\dc\\y", "pComment": "c"},
               {"MajorVersion": "2", "NewNamespace": "1", "Flags": "0"}, "")


def wstr(text: str, max_count: int | None = None, offset: int = 0, pad: bytes = b"\x00") -> bytes:
    """A [string] wchar_t* conformant varying array, padded to 4 with ``pad`` bytes."""
    data = (text + "\x00").encode("utf-16-le")
    n = len(data) // 2
    body = struct.pack("<III", n if max_count is None else max_count, offset, n) + data
    return body + pad * (-len(body) % 4)


def add_std_root(**kw) -> bytes:
    return wstr("10.0.0.6", **kw) + wstr("share2", **kw) + wstr("cc", **kw) + struct.pack("<I", 0)


def add_root_target(referent: int, pad: bytes = b"\x00") -> bytes:
    def unique(text):
        return struct.pack("<I", referent) + wstr(text, pad=pad)
    return (unique("\\\\10.0.0.6\\x") + unique("\\\\dc\\y") + struct.pack("<I", 2) + unique("c")
            + struct.pack("<B", 1) + pad * 3 + struct.pack("<I", 0))


def decoded(opnum: int, stub: bytes):
    call = RpcCall(0.0, 0, 1, 0, opnum, NETDFS, (3, 0), stub, True, None, None, False)
    return decode_arguments(IFACE.operation(opnum), call)


def test_the_reference_encoding_is_impacket_s():
    call = dfsnm.NetrDfsAddStdRoot()
    call["ServerName"], call["RootShare"], call["Comment"], call["ApiFlags"] = "10.0.0.6\x00", "share2\x00", "cc\x00", 0
    theirs, ours = call.getData(), add_std_root()
    # impacket fills alignment gaps with 0xab/0xbf, not zeros: the tools attackers use already
    # send non-zero padding. Everything else is byte for byte the same.
    differ = [i for i in range(len(ours)) if ours[i] != theirs[i]]
    assert len(theirs) == len(ours) and len(differ) == 6 and not any(ours[i] for i in differ)
    assert decoded(ADD_STD_ROOT, ours) == decoded(ADD_STD_ROOT, theirs) == ARGS


@pytest.mark.parametrize("pad", [b"\xcc", b"\xff", b"A"])
def test_non_zero_alignment_padding_is_ignored(pad):
    """C706 14.2.2: alignment gaps carry no meaning; Windows' NDR engine skips them unread."""
    stub = add_std_root(pad=pad)
    assert stub != add_std_root()
    assert decoded(ADD_STD_ROOT, stub) == ARGS
    assert looks_like(IFACE.operation(ADD_STD_ROOT), stub, True)
    assert decoded(ADD_ROOT_TARGET, add_root_target(0x20000, pad)) == TARGET_ARGS


@pytest.mark.parametrize("referent", [0x00020000, 1, 0xDEADBEEF, 0xFFFFFFFF])
def test_unique_pointers_with_any_non_zero_referent_id(referent):
    """C706 14.3.12.1: a unique pointer's referent id only has to be non-zero."""
    stub = add_root_target(referent)
    assert decoded(ADD_ROOT_TARGET, stub) == TARGET_ARGS
    assert looks_like(IFACE.operation(ADD_ROOT_TARGET), stub, True)


def test_max_count_beyond_actual_count_decodes_the_same():
    """C706 14.3.4.2: max_count only has to cover actual_count; the server allocates more."""
    assert decoded(ADD_STD_ROOT, add_std_root(max_count=500)) == ARGS


def test_max_count_beyond_actual_count_is_still_inferred_from_the_stub():
    assert looks_like(IFACE.operation(ADD_STD_ROOT), add_std_root(max_count=500), True)


@pytest.mark.parametrize("variant", [{"max_count": 3}, {"offset": 2}])
def test_counts_the_server_rejects_are_decoded_but_never_inferred(variant):
    stub = add_std_root(**variant)
    assert decoded(ADD_STD_ROOT, stub) == ARGS
    assert not looks_like(IFACE.operation(ADD_STD_ROOT), stub, True)
