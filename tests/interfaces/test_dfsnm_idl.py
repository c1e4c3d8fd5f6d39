"""MS-DFSNM request types against stubs marshalled by hand from the IDL (MS-DFSNM 3.1.4), not
by the sensor's own types."""
from __future__ import annotations

import struct

import pytest

from sensor.interfaces.catalog import default_catalog
from sensor.interfaces.decode import decode_request

NETDFS = default_catalog().interface("4fc742e0-4a10-11cf-8273-00aa004ae673")


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def wstr(text: str) -> bytes:
    units = (text + "\x00").encode("utf-16-le")
    data = u32(len(units) // 2) + u32(0) + u32(len(units) // 2) + units
    return data + b"\x00" * (-len(data) % 4)


def unique(text: str | None, ref: int = 0x20000) -> bytes:
    return u32(0) if text is None else u32(ref) + wstr(text)


ENTRY, SERVER = "\\\\10.0.0.66\\share\\link", "10.0.0.66"


@pytest.mark.parametrize("dc_name, nullable, root_list", [
    ("DC01", False, u32(0)),                     # the MIDL syntax: DcName [in, string]; ppRootList NULL
    ("DC01", False, u32(0x20008) + u32(0)),      # ppRootList -> NULL DFSM_ROOT_LIST* (a MIDL client's &list)
    (None, True, u32(0x20008) + u32(0)),         # DcName [unique] NULL: the spec text's "MAY be NULL" (136-byte case)
    ("DC01", True, u32(0)),                      # DcName [unique] non-NULL
])
def test_remove2_from_the_idl(dc_name, nullable, root_list):
    dc = unique(dc_name, 0x20010) if nullable else wstr(dc_name)
    stub = wstr(ENTRY) + dc + unique(SERVER) + unique("share", 0x20004) + root_list
    decoded = decode_request(NETDFS.operation(20), stub, True)
    expected = {"DfsEntryPath": ENTRY, "ServerName": SERVER, "ShareName": "share"}
    if dc_name:
        expected["DcName"] = dc_name
    assert decoded.strings == expected


@pytest.mark.parametrize("opnum, stub, strings, ints", [
    (12, wstr(SERVER) + wstr("share") + wstr("") + u32(0), {"ServerName": SERVER, "RootShare": "share", "Comment": ""}, {"ApiFlags": "0"}),
    (13, wstr(SERVER) + wstr("share") + u32(1), {"ServerName": SERVER, "RootShare": "share"}, {"ApiFlags": "1"}),
    (14, wstr(SERVER) + u32(0), {"ServerName": SERVER}, {"Flags": "0"}),
    (15, wstr(SERVER) + wstr("share") + wstr("c") + wstr("share"),
     {"ServerName": SERVER, "RootShare": "share", "Comment": "c", "Share": "share"}, {}),
    # 23: [unique,string] pDfsPath, pTargetPath; ULONG MajorVersion; [unique,string] pComment; BOOLEAN; ULONG
    (23, unique(ENTRY) + unique(None) + u32(1) + unique(None) + b"\x01\x00\x00\x00" + u32(0),
     {"pDfsPath": ENTRY}, {"MajorVersion": "1", "NewNamespace": "1", "Flags": "0"}),
    (24, unique(ENTRY) + unique(ENTRY, 0x20004) + u32(0), {"pDfsPath": ENTRY, "pTargetPath": ENTRY}, {"Flags": "0"}),
])
def test_every_coercion_call_from_the_idl(opnum, stub, strings, ints):
    decoded = decode_request(NETDFS.operation(opnum), stub, True)
    assert (decoded.strings, decoded.ints) == (strings, ints)
