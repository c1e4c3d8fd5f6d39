"""MS-RPRN (spoolss, PrinterBug / SpoolSample): the request types impacket's rprn lacks or
misreads (the catalog row is sensor/interfaces/rows/rprn.py, which names impacket's types for
the rest).

impacket's rprn defines 1, 65 and 69; it lacks 62, which is written here from MS-RPRN
3.1.4.10.3. Its 65 is written here too: impacket's RPC_V2_NOTIFY_OPTIONS makes pTypes a
pointer to one RPC_V2_NOTIFY_OPTIONS_TYPE where the IDL (2.2.1.13.1) has ``[size_is(Count),
unique]``, an array, so the registration a print client sends (with notify options) is
misread; Samba's NDR engine marshals the array
(tests/interfaces/test_decode_nested.py).
"""
from __future__ import annotations

from impacket.dcerpc.v5 import rprn
from impacket.dcerpc.v5.dtypes import DWORD, LPWSTR
from impacket.dcerpc.v5.ndr import NDRCALL, NDRPOINTER, NDRSTRUCT, NDRUniConformantArray


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
