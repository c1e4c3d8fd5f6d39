"""MS-DFSNM (netdfs, DFSCoerce): the catalog row. NetrDfsAddStdRoot (12) and
NetrDfsRemoveStdRoot (13) name a server (``ServerName``) the DC then connects to as its
machine account; 14, 15, 20, 23 and 24 take a server or a UNC path the same way. The request
types are in sensor/interfaces/dfsnm.py (impacket has no dfsnm module)."""
from __future__ import annotations

from sensor.interfaces.catalog import Interface, Operation, operations

UUID = "4fc742e0-4a10-11cf-8273-00aa004ae673"
VERSION = (3, 0)
NDR = "sensor.interfaces.dfsnm."

INTERFACE = Interface(
    uuid=UUID,
    version=VERSION,
    name="netdfs",
    technique="DFSCoerce",
    protocol="MS-DFSNM",
    pipes=frozenset({"netdfs"}),
    operations=operations(
        Operation(0, "NetrDfsManagerGetVersion"),
        Operation(1, "NetrDfsAdd"),
        Operation(2, "NetrDfsRemove"),
        Operation(3, "NetrDfsSetInfo"),
        Operation(4, "NetrDfsGetInfo"),
        Operation(5, "NetrDfsEnum"),
        Operation(6, "NetrDfsMove"),
        # 7-9: "Opnum7NotUsedOnWire" .. "Opnum9NotUsedOnWire" (MS-DFSNM 3.1.4)
        Operation(7, "Opnum7NotUsedOnWire"),
        Operation(8, "Opnum8NotUsedOnWire"),
        Operation(9, "Opnum9NotUsedOnWire"),
        Operation(10, "NetrDfsAddFtRoot"),
        Operation(11, "NetrDfsRemoveFtRoot"),
        Operation(12, "NetrDfsAddStdRoot", NDR + "NetrDfsAddStdRoot", ("ServerName",)),
        Operation(13, "NetrDfsRemoveStdRoot", NDR + "NetrDfsRemoveStdRoot", ("ServerName",)),
        Operation(14, "NetrDfsManagerInitialize", NDR + "NetrDfsManagerInitialize", ("ServerName",)),
        Operation(15, "NetrDfsAddStdRootForced", NDR + "NetrDfsAddStdRootForced", ("ServerName",)),
        Operation(16, "NetrDfsGetDcAddress"),
        Operation(17, "NetrDfsSetDcAddress"),
        Operation(18, "NetrDfsFlushFtTable"),
        Operation(19, "NetrDfsAdd2"),
        Operation(20, "NetrDfsRemove2", NDR + "NetrDfsRemove2", ("ServerName", "DfsEntryPath"),
                  alternate_paths=(NDR + "NetrDfsRemove2NullableDcName",)),
        Operation(21, "NetrDfsEnumEx"),
        Operation(22, "NetrDfsSetInfo2"),
        Operation(23, "NetrDfsAddRootTarget", NDR + "NetrDfsAddRootTarget", ("pDfsPath", "pTargetPath")),
        Operation(24, "NetrDfsRemoveRootTarget", NDR + "NetrDfsRemoveRootTarget", ("pDfsPath", "pTargetPath")),
        Operation(25, "NetrDfsGetSupportedNamespaceVersion"),
    ),
)

INTERFACES = [INTERFACE]
