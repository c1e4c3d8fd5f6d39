"""MS-EVEN (eventlog, CheeseOunce): ElfrOpenBELW's request type as the IDL has it (the catalog
row is sensor/interfaces/rows/even.py, which names impacket's even types for the rest).

UNCServerName (MS-EVEN 2.2.7: ``typedef [handle] wchar_t* EVENTLOG_HANDLE_W``, a unique
pointer to a single wchar_t, which the server ignores) is a conformant string in impacket
(``EVENTLOG_HANDLE_W = LPWSTR``); Windows and Wireshark's dissector use the IDL's one
character. The request here follows the IDL, impacket's form is the alternate. Both are the
same 4 bytes when the pointer is NULL, as the public tools send it.
"""
from __future__ import annotations

from impacket.dcerpc.v5.dtypes import RPC_UNICODE_STRING, ULONG
from impacket.dcerpc.v5.ndr import NDRCALL, NDRPOINTER, NDRSHORT


class EVENTLOG_HANDLE_W(NDRPOINTER):
    referent = (("Data", NDRSHORT),)


class ElfrOpenBELW(NDRCALL):
    """MS-EVEN 3.1.4.8."""
    opnum = 9
    structure = (("UNCServerName", EVENTLOG_HANDLE_W), ("BackupFileName", RPC_UNICODE_STRING),
                 ("MajorVersion", ULONG), ("MinorVersion", ULONG))
