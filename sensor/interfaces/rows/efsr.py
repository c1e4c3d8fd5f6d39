"""MS-EFSR (efsrpc, PetitPotam): two catalog rows. Every call that takes a path
(``FileName``...) makes the server open it as its machine account when it names another host
("\\\\10.0.0.66\\share\\x"): that is the coercion (MS-EFSR 3.1.4.2, "EFSRPC identifier").

Two interfaces share the methods (MS-EFSR 3.1.4.2): c681d488 on \\PIPE\\lsarpc (reached too
through samr, netlogon and lsass, which end in the same lsass endpoint, so their pipe names say
nothing by themselves) and df1941c5 on \\PIPE\\efsrpc; both also over ncacn_ip_tcp. The request
types are in sensor/interfaces/efsr.py (impacket 0.13 has no efsr module).
"""
from __future__ import annotations

from sensor.interfaces.catalog import NCACN_IP_TCP, NCACN_NP, Interface, Operation, operations

LSARPC_UUID = "c681d488-d850-11d0-8c52-00c04fd90f7e"
EFSRPC_UUID = "df1941c5-fe89-4e79-bf10-463657acf44d"
VERSION = (1, 0)
NDR = "sensor.interfaces.efsr."

FILE = ("FileName",)
OPERATIONS = operations(
    Operation(0, "EfsRpcOpenFileRaw", NDR + "EfsRpcOpenFileRaw", FILE),
    Operation(1, "EfsRpcReadFileRaw"),
    Operation(2, "EfsRpcWriteFileRaw"),
    Operation(3, "EfsRpcCloseRaw"),
    Operation(4, "EfsRpcEncryptFileSrv", NDR + "EfsRpcEncryptFileSrv", FILE),
    Operation(5, "EfsRpcDecryptFileSrv", NDR + "EfsRpcDecryptFileSrv", FILE),
    Operation(6, "EfsRpcQueryUsersOnFile", NDR + "EfsRpcQueryUsersOnFile", FILE),
    Operation(7, "EfsRpcQueryRecoveryAgents", NDR + "EfsRpcQueryRecoveryAgents", FILE),
    Operation(8, "EfsRpcRemoveUsersFromFile", NDR + "EfsRpcRemoveUsersFromFile", FILE),
    Operation(9, "EfsRpcAddUsersToFile", NDR + "EfsRpcAddUsersToFile", FILE),
    Operation(10, "Opnum10NotUsedOnWire"),
    Operation(11, "EfsRpcNotSupported"),
    Operation(12, "EfsRpcFileKeyInfo", NDR + "EfsRpcFileKeyInfo", FILE),
    Operation(13, "EfsRpcDuplicateEncryptionInfoFile", NDR + "EfsRpcDuplicateEncryptionInfoFile",
              ("SrcFileName", "DestFileName")),
    Operation(14, "Opnum14NotUsedOnWire"),
    Operation(15, "EfsRpcAddUsersToFileEx", NDR + "EfsRpcAddUsersToFileEx", FILE),
    Operation(16, "EfsRpcFileKeyInfoEx", NDR + "EfsRpcFileKeyInfoEx", FILE),
    Operation(17, "Opnum17NotUsedOnWire"),
    Operation(18, "EfsRpcGetEncryptedFileMetadata", NDR + "EfsRpcGetEncryptedFileMetadata", FILE),
    Operation(19, "EfsRpcSetEncryptedFileMetadata", NDR + "EfsRpcSetEncryptedFileMetadata", FILE),
    Operation(20, "EfsRpcFlushEfsCache"),
    Operation(21, "EfsRpcEncryptFileExSrv", NDR + "EfsRpcEncryptFileExSrv", FILE),
    Operation(22, "EfsRpcQueryProtectors"),
)

INTERFACES = [
    Interface(uuid=LSARPC_UUID, version=VERSION, name="efsrpc", technique="PetitPotam", protocol="MS-EFSR",
              pipes=frozenset(),
              # LSA (lsarpc), SAMR, Netlogon and the lsass endpoint answer on these too.
              shared_pipes=frozenset({"lsarpc", "samr", "netlogon", "lsass"}),
              operations=OPERATIONS, transports=frozenset({NCACN_NP, NCACN_IP_TCP})),
    Interface(uuid=EFSRPC_UUID, version=VERSION, name="efsrpc", technique="PetitPotam", protocol="MS-EFSR",
              pipes=frozenset({"efsrpc"}), operations=OPERATIONS,
              transports=frozenset({NCACN_NP, NCACN_IP_TCP})),
]
