"""MS-EFSR (efsrpc, PetitPotam): the NDR request types of every call that takes a path (the
catalog rows are sensor/interfaces/rows/efsr.py).

impacket 0.13 has no efsr module, so the [in] parameters are written here from the MIDL
syntax of MS-EFSR 3.1.4.2 and appendix A (checked against the MIDL-generated header). Every
``[in, string] wchar_t* FileName`` is a top-level ref pointer: a bare conformant varying
string (WSTR). The two interfaces (lsarpc's c681d488 and efsrpc's df1941c5) share them.
"""
from __future__ import annotations

from impacket.dcerpc.v5.dtypes import BOOL, DWORD, LPWSTR, PRPC_SID, ULONG, WSTR
from impacket.dcerpc.v5.ndr import NDRCALL, NDRPOINTER, NDRSTRUCT, NDRUniConformantArray


# -- types (MS-EFSR 2.2) ----------------------------------------------------------------------
class BYTE_ARRAY(NDRUniConformantArray):
    item = "c"


class PBYTE_ARRAY(NDRPOINTER):
    referent = (("Data", BYTE_ARRAY),)


class EFS_RPC_BLOB(NDRSTRUCT):                  # 2.2.2: [size_is(cbData)] unsigned char* bData
    structure = (("cbData", DWORD), ("bData", PBYTE_ARRAY))


class PEFS_RPC_BLOB(NDRPOINTER):
    referent = (("Data", EFS_RPC_BLOB),)


class EFS_HASH_BLOB(NDRSTRUCT):                 # 2.2.10
    structure = (("cbData", DWORD), ("bData", PBYTE_ARRAY))


class PEFS_HASH_BLOB(NDRPOINTER):
    referent = (("Data", EFS_HASH_BLOB),)


class ENCRYPTION_CERTIFICATE_HASH(NDRSTRUCT):   # 2.2.11
    structure = (("cbTotalLength", DWORD), ("UserSid", PRPC_SID), ("Hash", PEFS_HASH_BLOB),
                 ("lpDisplayInformation", LPWSTR))


class PENCRYPTION_CERTIFICATE_HASH(NDRPOINTER):
    referent = (("Data", ENCRYPTION_CERTIFICATE_HASH),)


class ENCRYPTION_CERTIFICATE_HASH_ARRAY(NDRUniConformantArray):
    item = PENCRYPTION_CERTIFICATE_HASH


class PENCRYPTION_CERTIFICATE_HASH_ARRAY(NDRPOINTER):
    referent = (("Data", ENCRYPTION_CERTIFICATE_HASH_ARRAY),)


class ENCRYPTION_CERTIFICATE_HASH_LIST(NDRSTRUCT):   # 2.2.12: [size_is(nCert_Hash,)] ** Users
    structure = (("nCert_Hash", DWORD), ("Users", PENCRYPTION_CERTIFICATE_HASH_ARRAY))


class EFS_CERTIFICATE_BLOB(NDRSTRUCT):          # 2.2.3
    structure = (("dwCertEncodingType", DWORD), ("cbData", DWORD), ("bData", PBYTE_ARRAY))


class PEFS_CERTIFICATE_BLOB(NDRPOINTER):
    referent = (("Data", EFS_CERTIFICATE_BLOB),)


class ENCRYPTION_CERTIFICATE(NDRSTRUCT):        # 2.2.8
    structure = (("cbTotalLength", DWORD), ("UserSid", PRPC_SID), ("CertBlob", PEFS_CERTIFICATE_BLOB))


class PENCRYPTION_CERTIFICATE(NDRPOINTER):
    referent = (("Data", ENCRYPTION_CERTIFICATE),)


class ENCRYPTION_CERTIFICATE_ARRAY(NDRUniConformantArray):
    item = PENCRYPTION_CERTIFICATE


class PENCRYPTION_CERTIFICATE_ARRAY(NDRPOINTER):
    referent = (("Data", ENCRYPTION_CERTIFICATE_ARRAY),)


class ENCRYPTION_CERTIFICATE_LIST(NDRSTRUCT):   # 2.2.9
    structure = (("nUsers", DWORD), ("Users", PENCRYPTION_CERTIFICATE_ARRAY))


class PENCRYPTION_CERTIFICATE_HASH_LIST(NDRPOINTER):
    referent = (("Data", ENCRYPTION_CERTIFICATE_HASH_LIST),)


class ENCRYPTED_FILE_METADATA_SIGNATURE(NDRSTRUCT):   # 2.2.13
    structure = (("dwEfsAccessType", DWORD), ("CertificatesAdded", PENCRYPTION_CERTIFICATE_HASH_LIST),
                 ("EncryptionCertificate", PENCRYPTION_CERTIFICATE), ("EfsStreamSignature", PEFS_RPC_BLOB))


class PENCRYPTED_FILE_METADATA_SIGNATURE(NDRPOINTER):
    referent = (("Data", ENCRYPTED_FILE_METADATA_SIGNATURE),)


# -- requests ([in] parameters, MS-EFSR 3.1.4.2.x) -----------------------------------------------
class EfsRpcOpenFileRaw(NDRCALL):
    opnum = 0
    structure = (("FileName", WSTR), ("Flags", ULONG))


class EfsRpcEncryptFileSrv(NDRCALL):
    opnum = 4
    structure = (("FileName", WSTR),)


class EfsRpcDecryptFileSrv(NDRCALL):
    opnum = 5
    structure = (("FileName", WSTR), ("OpenFlag", ULONG))


class EfsRpcQueryUsersOnFile(NDRCALL):
    opnum = 6
    structure = (("FileName", WSTR),)


class EfsRpcQueryRecoveryAgents(NDRCALL):
    opnum = 7
    structure = (("FileName", WSTR),)


class EfsRpcRemoveUsersFromFile(NDRCALL):
    opnum = 8
    structure = (("FileName", WSTR), ("Users", ENCRYPTION_CERTIFICATE_HASH_LIST))


class EfsRpcAddUsersToFile(NDRCALL):
    opnum = 9
    structure = (("FileName", WSTR), ("EncryptionCertificates", ENCRYPTION_CERTIFICATE_LIST))


class EfsRpcFileKeyInfo(NDRCALL):
    opnum = 12
    structure = (("FileName", WSTR), ("InfoClass", DWORD))


class EfsRpcDuplicateEncryptionInfoFile(NDRCALL):
    opnum = 13
    structure = (("SrcFileName", WSTR), ("DestFileName", WSTR), ("dwCreationDisposition", DWORD),
                 ("dwAttributes", DWORD), ("RelativeSD", PEFS_RPC_BLOB), ("bInheritHandle", BOOL))


class EfsRpcAddUsersToFileEx(NDRCALL):
    opnum = 15
    structure = (("dwFlags", DWORD), ("Reserved", PEFS_RPC_BLOB), ("FileName", WSTR),
                 ("EncryptionCertificates", ENCRYPTION_CERTIFICATE_LIST))


class EfsRpcFileKeyInfoEx(NDRCALL):
    opnum = 16
    structure = (("dwFileKeyInfoFlags", DWORD), ("Reserved", PEFS_RPC_BLOB), ("FileName", WSTR),
                 ("InfoClass", DWORD))


class EfsRpcGetEncryptedFileMetadata(NDRCALL):
    opnum = 18
    structure = (("FileName", WSTR),)


class EfsRpcSetEncryptedFileMetadata(NDRCALL):
    opnum = 19
    structure = (("FileName", WSTR), ("OldEfsStreamBlob", PEFS_RPC_BLOB), ("NewEfsStreamBlob", EFS_RPC_BLOB),
                 ("NewEfsSignature", PENCRYPTED_FILE_METADATA_SIGNATURE))


class EfsRpcEncryptFileExSrv(NDRCALL):
    opnum = 21
    structure = (("FileName", WSTR), ("ProtectorDescriptor", LPWSTR), ("Flags", ULONG))
