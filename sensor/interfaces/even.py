"""MS-EVEN (eventlog, CheeseOunce): the catalog row on impacket's even types.

ElfrOpenBELW (9) opens a backup log file by path: a UNC BackupFileName ("\\\\L\\x\\y.evt")
makes the server open it as its machine account. Reading or clearing a log is not coercion.

UNCServerName (MS-EVEN 2.2.7: ``typedef [handle] wchar_t* EVENTLOG_HANDLE_W``, a unique
pointer to a single wchar_t, which the server ignores) is a conformant string in impacket
(``EVENTLOG_HANDLE_W = LPWSTR``); Windows and Wireshark's dissector use the IDL's one
character. The request here follows the IDL, impacket's form is the alternate. Both are the
same 4 bytes when the pointer is NULL, as the public tools send it.
"""
from __future__ import annotations

from impacket.dcerpc.v5 import even
from impacket.dcerpc.v5.dtypes import RPC_UNICODE_STRING, ULONG
from impacket.dcerpc.v5.ndr import NDRCALL, NDRPOINTER, NDRSHORT

from sensor.interfaces.catalog import Interface, Operation, operations

UUID = "82273fdc-e32a-18c3-3f78-827929dc23ea"
VERSION = (0, 0)


class EVENTLOG_HANDLE_W(NDRPOINTER):
    referent = (("Data", NDRSHORT),)


class ElfrOpenBELW(NDRCALL):
    """MS-EVEN 3.1.4.8."""
    opnum = 9
    structure = (("UNCServerName", EVENTLOG_HANDLE_W), ("BackupFileName", RPC_UNICODE_STRING),
                 ("MajorVersion", ULONG), ("MinorVersion", ULONG))


INTERFACES = [Interface(
    uuid=UUID, version=VERSION, name="eventlog", technique="CheeseOunce", protocol="MS-EVEN",
    pipes=frozenset({"eventlog"}),
    operations=operations(
        Operation(0, "ElfrClearELFW", even.ElfrClearELFW),
        Operation(1, "ElfrBackupELFW", even.ElfrBackupELFW),
        Operation(2, "ElfrCloseEL"),
        Operation(3, "ElfrDeregisterEventSource"),
        Operation(4, "ElfrNumberOfRecords"),
        Operation(5, "ElfrOldestRecord"),
        Operation(6, "ElfrChangeNotify"),
        Operation(7, "ElfrOpenELW"),
        Operation(8, "ElfrRegisterEventSourceW"),
        Operation(9, "ElfrOpenBELW", ElfrOpenBELW, ("BackupFileName",), alternates=(even.ElfrOpenBELW,)),
        Operation(10, "ElfrReadELW"),
        Operation(11, "ElfrReportEventW"),
    ),
)]
