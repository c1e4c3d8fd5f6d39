"""MS-FSRVP (FssagentRpc, ShadowCoerce): the catalog row. IsPathSupported (8) and
IsPathShadowCopied (9) take a UNC share path; one naming another host makes the agent contact
it as its machine account. Request types: sensor/interfaces/fsrvp.py (impacket has no fsrvp
module)."""
from __future__ import annotations

from sensor.interfaces.catalog import Interface, Operation, operations

UUID = "a8e0653c-2744-4389-a61d-7373df8b2292"
VERSION = (1, 0)
NDR = "sensor.interfaces.fsrvp."

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
        Operation(8, "IsPathSupported", NDR + "IsPathSupported", ("ShareName",)),
        Operation(9, "IsPathShadowCopied", NDR + "IsPathShadowCopied", ("ShareName",)),
        Operation(10, "GetShareMapping"),
        Operation(11, "DeleteShareMapping"),
        Operation(12, "PrepareShadowCopySet"),
    ),
)]
