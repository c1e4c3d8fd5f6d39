"""MS-DFSNM (netdfs): the NDR request types of the coercion methods (the catalog row is
sensor/interfaces/rows/dfsnm.py).

impacket has no dfsnm module, so the [in] parameters are defined here on its NDRCALL
types, each checked against the MIDL syntax of MS-DFSNM 3.1.4 (and appendix A). The lab's
DFSCoerce client sends with these classes; NetrDfsRemove2 is also checked with stubs
marshalled by hand from the IDL (tests/interfaces/test_dfsnm_idl.py), not by these types.

NDR (MS-RPCE 2.2.5 / C706 14.3.10): a top-level ``[string] WCHAR*`` is a ref pointer, so it
is marshalled as a bare conformant varying string (WSTR); ``[unique,string]`` adds a
referent id (LPWSTR).
"""
from __future__ import annotations

from impacket.dcerpc.v5.dtypes import BOOLEAN, DWORD, LPWSTR, ULONG, WSTR
from impacket.dcerpc.v5.ndr import NDRCALL, NDRPOINTER, NDRSTRUCT, NDRUniConformantArray


# MS-DFSNM 2.2.3.1 DFSM_ROOT_LIST_ENTRY / 2.2.3.2 DFSM_ROOT_LIST
class DFSM_ROOT_LIST_ENTRY(NDRSTRUCT):
    structure = (("ServerShare", LPWSTR),)


class DFSM_ROOT_LIST_ENTRY_ARRAY(NDRUniConformantArray):
    item = DFSM_ROOT_LIST_ENTRY


class DFSM_ROOT_LIST(NDRSTRUCT):
    structure = (("cEntries", DWORD), ("Entry", DFSM_ROOT_LIST_ENTRY_ARRAY))


class PDFSM_ROOT_LIST(NDRPOINTER):
    referent = (("Data", DFSM_ROOT_LIST),)


class PPDFSM_ROOT_LIST(NDRPOINTER):
    referent = (("Data", PDFSM_ROOT_LIST),)


# MS-DFSNM 3.1.4.1.x, [in] parameters only (appendix A IDL).
class NetrDfsAddStdRoot(NDRCALL):
    opnum = 12
    structure = (("ServerName", WSTR), ("RootShare", WSTR), ("Comment", WSTR), ("ApiFlags", DWORD))


class NetrDfsRemoveStdRoot(NDRCALL):
    opnum = 13
    structure = (("ServerName", WSTR), ("RootShare", WSTR), ("ApiFlags", DWORD))


class NetrDfsManagerInitialize(NDRCALL):
    opnum = 14
    structure = (("ServerName", WSTR), ("Flags", DWORD))


class NetrDfsAddStdRootForced(NDRCALL):
    opnum = 15
    structure = (("ServerName", WSTR), ("RootShare", WSTR), ("Comment", WSTR), ("Share", WSTR))


class NetrDfsRemove2(NDRCALL):
    opnum = 20
    structure = (
        ("DfsEntryPath", WSTR),
        ("DcName", WSTR),
        ("ServerName", LPWSTR),
        ("ShareName", LPWSTR),
        ("ppRootList", PPDFSM_ROOT_LIST),
    )


class NetrDfsRemove2NullableDcName(NDRCALL):
    """NetrDfsRemove2 with DcName marshalled as ``[in, string, unique]``: the MIDL syntax in
    MS-DFSNM 3.1.4.2.2 (and appendix A) declares DcName ``[in, string]``, a ref pointer, but
    its text says it "MAY be a NULL pointer", and clients written from that text send a
    referent id (0 for NULL, 4 bytes) before it. The IDL form is tried first."""
    opnum = 20
    structure = (
        ("DfsEntryPath", WSTR),
        ("DcName", LPWSTR),
        ("ServerName", LPWSTR),
        ("ShareName", LPWSTR),
        ("ppRootList", PPDFSM_ROOT_LIST),
    )


class NetrDfsAddRootTarget(NDRCALL):
    opnum = 23
    structure = (
        ("pDfsPath", LPWSTR),
        ("pTargetPath", LPWSTR),
        ("MajorVersion", ULONG),
        ("pComment", LPWSTR),
        ("NewNamespace", BOOLEAN),
        ("Flags", ULONG),
    )


class NetrDfsRemoveRootTarget(NDRCALL):
    opnum = 24
    structure = (("pDfsPath", LPWSTR), ("pTargetPath", LPWSTR), ("Flags", ULONG))
