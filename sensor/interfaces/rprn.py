"""MS-RPRN (spoolss, PrinterBug / SpoolSample): the catalog row on impacket's rprn types.

RpcRemoteFindFirstPrinterChangeNotification(Ex) (62, 65) make the print server open a
notification channel back to ``pszLocalMachine`` ("\\\\host"): the coercion. RpcOpenPrinter(Ex)
(1, 69) name the printer or server opened (the victim, "\\\\DC01") and precede every
PrinterBug, so they are decoded too. impacket's rprn defines 1, 65 and 69; it lacks 62, which
is written here from MS-RPRN 3.1.4.10.3. Its 65 is written here too: impacket's
RPC_V2_NOTIFY_OPTIONS makes pTypes a pointer to one RPC_V2_NOTIFY_OPTIONS_TYPE where the IDL
(2.2.1.13.1) has ``[size_is(Count), unique]``, an array, so the registration a print client
sends (with notify options) is misread; Samba's NDR engine marshals the array
(tests/interfaces/test_decode_nested.py).
"""
from __future__ import annotations

from impacket.dcerpc.v5 import rprn
from impacket.dcerpc.v5.dtypes import DWORD, LPWSTR
from impacket.dcerpc.v5.ndr import NDRCALL, NDRPOINTER, NDRSTRUCT, NDRUniConformantArray

from sensor.interfaces.catalog import Interface, Operation, operations

UUID = "12345678-1234-abcd-ef00-0123456789ab"
VERSION = (1, 0)


class BYTE_ARRAY(NDRUniConformantArray):
    item = "c"


class PBYTE_ARRAY(NDRPOINTER):
    referent = (("Data", BYTE_ARRAY),)


class RpcRemoteFindFirstPrinterChangeNotification(NDRCALL):
    """MS-RPRN 3.1.4.10.3: [in, string, unique] wchar_t* pszLocalMachine; [in, out, unique,
    size_is(cbBuffer)] BYTE* pBuffer."""
    opnum = 62
    structure = (("hPrinter", rprn.PRINTER_HANDLE), ("fdwFlags", DWORD), ("fdwOptions", DWORD),
                 ("pszLocalMachine", LPWSTR), ("dwPrinterLocal", DWORD), ("cbBuffer", DWORD),
                 ("pBuffer", PBYTE_ARRAY))


class RPC_V2_NOTIFY_OPTIONS_TYPE_ARRAY(NDRUniConformantArray):
    item = rprn.RPC_V2_NOTIFY_OPTIONS_TYPE


class PRPC_V2_NOTIFY_OPTIONS_TYPE_ARRAY(NDRPOINTER):
    referent = (("Data", RPC_V2_NOTIFY_OPTIONS_TYPE_ARRAY),)


class RPC_V2_NOTIFY_OPTIONS(NDRSTRUCT):
    """MS-RPRN 2.2.1.13.1: [size_is(Count), unique] PRPC_V2_NOTIFY_OPTIONS_TYPE pTypes."""
    structure = (("Version", DWORD), ("Reserved", DWORD), ("Count", DWORD),
                 ("pTypes", PRPC_V2_NOTIFY_OPTIONS_TYPE_ARRAY))


class PRPC_V2_NOTIFY_OPTIONS(NDRPOINTER):
    referent = (("Data", RPC_V2_NOTIFY_OPTIONS),)


class RpcRemoteFindFirstPrinterChangeNotificationEx(NDRCALL):
    """MS-RPRN 3.1.4.10.4: [in, string, unique] wchar_t* pszLocalMachine; [in, unique]
    RPC_V2_NOTIFY_OPTIONS* pOptions."""
    opnum = 65
    structure = (("hPrinter", rprn.PRINTER_HANDLE), ("fdwFlags", DWORD), ("fdwOptions", DWORD),
                 ("pszLocalMachine", LPWSTR), ("dwPrinterLocal", DWORD), ("pOptions", PRPC_V2_NOTIFY_OPTIONS))


INTERFACES = [Interface(
    uuid=UUID, version=VERSION, name="spoolss", technique="PrinterBug", protocol="MS-RPRN",
    pipes=frozenset({"spoolss"}),
    operations=operations(
        Operation(0, "RpcEnumPrinters", rprn.RpcEnumPrinters),
        Operation(1, "RpcOpenPrinter", rprn.RpcOpenPrinter),
        Operation(29, "RpcClosePrinter"),
        Operation(62, "RpcRemoteFindFirstPrinterChangeNotification", RpcRemoteFindFirstPrinterChangeNotification,
                  ("pszLocalMachine",)),
        Operation(65, "RpcRemoteFindFirstPrinterChangeNotificationEx",
                  RpcRemoteFindFirstPrinterChangeNotificationEx, ("pszLocalMachine",)),
        Operation(69, "RpcOpenPrinterEx", rprn.RpcOpenPrinterEx),
    ),
)]
