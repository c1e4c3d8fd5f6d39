"""MS-FSRVP (FssagentRpc, ShadowCoerce): the request types of the two calls that take a share
path (the catalog row is sensor/interfaces/rows/fsrvp.py).

impacket has no fsrvp module; written from MS-FSRVP 3.1.4.9 and 3.1.4.10:
IsPathSupported([in] handle_t, [in, string] LPWSTR ShareName, ...) and IsPathShadowCopied
(same [in] parameters). ShareName is a UNC share path; one naming another host makes the
agent contact it as its machine account.
"""
from __future__ import annotations

from impacket.dcerpc.v5.dtypes import WSTR
from impacket.dcerpc.v5.ndr import NDRCALL


class IsPathSupported(NDRCALL):
    opnum = 8
    structure = (("ShareName", WSTR),)


class IsPathShadowCopied(NDRCALL):
    opnum = 9
    structure = (("ShareName", WSTR),)
