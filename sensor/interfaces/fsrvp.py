"""MS-FSRVP (FssagentRpc, ShadowCoerce): the catalog row and the request types of the two
calls that take a share path.

impacket has no fsrvp module; written from MS-FSRVP 3.1.4.9 and 3.1.4.10:
IsPathSupported([in] handle_t, [in, string] LPWSTR ShareName, ...) and IsPathShadowCopied
(same [in] parameters). ShareName is a UNC share path; one naming another host makes the
agent contact it as its machine account.
"""
from __future__ import annotations

from impacket.dcerpc.v5.dtypes import WSTR
from impacket.dcerpc.v5.ndr import NDRCALL

from sensor.interfaces.catalog import Interface, Operation, operations

UUID = "a8e0653c-2744-4389-a61d-7373df8b2292"
VERSION = (1, 0)


class IsPathSupported(NDRCALL):
    opnum = 8
    structure = (("ShareName", WSTR),)


class IsPathShadowCopied(NDRCALL):
    opnum = 9
    structure = (("ShareName", WSTR),)


INTERFACES = [Interface(
    uuid=UUID, version=VERSION, name="FileServerVssAgent", technique="ShadowCoerce", protocol="MS-FSRVP",
    pipes=frozenset({"fssagentrpc"}),
    operations=operations(
        Operation(0, "GetSupportedVersion"),
        Operation(1, "SetContext"),
        Operation(2, "StartShadowCopySet"),
        Operation(3, "AddToShadowCopySet"),
        Operation(4, "CommitShadowCopySet"),
        Operation(5, "ExposeShadowCopySet"),
        Operation(6, "RecoveryCompleteShadowCopySet"),
        Operation(7, "AbortShadowCopySet"),
        Operation(8, "IsPathSupported", IsPathSupported, ("ShareName",)),
        Operation(9, "IsPathShadowCopied", IsPathShadowCopied, ("ShareName",)),
        Operation(10, "GetShareMapping"),
        Operation(11, "DeleteShareMapping"),
        Operation(12, "PrepareShadowCopySet"),
    ),
)]
