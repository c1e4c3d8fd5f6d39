"""MS-EVEN (eventlog, CheeseOunce): the catalog row. ElfrOpenBELW (9) opens a backup log file
by path: a UNC BackupFileName ("\\\\L\\x\\y.evt") makes the server open it as its machine
account. Reading or clearing a log is not coercion. Request types: impacket's even module, and
ElfrOpenBELW as the IDL has it in sensor/interfaces/even.py (impacket's form is the alternate).
"""
from __future__ import annotations

from sensor.interfaces.catalog import Interface, Operation, operations

UUID = "82273fdc-e32a-18c3-3f78-827929dc23ea"
VERSION = (0, 0)
IMPACKET = "impacket.dcerpc.v5.even."

INTERFACES = [Interface(
    uuid=UUID, version=VERSION, name="eventlog", technique="CheeseOunce", protocol="MS-EVEN",
    pipes=frozenset({"eventlog"}),
    operations=operations(
        Operation(0, "ElfrClearELFW", IMPACKET + "ElfrClearELFW"),
        Operation(1, "ElfrBackupELFW", IMPACKET + "ElfrBackupELFW"),
        Operation(2, "ElfrCloseEL"),
        Operation(3, "ElfrDeregisterEventSource"),
        Operation(4, "ElfrNumberOfRecords"),
        Operation(5, "ElfrOldestRecord"),
        Operation(6, "ElfrChangeNotify"),
        Operation(7, "ElfrOpenELW"),
        Operation(8, "ElfrRegisterEventSourceW"),
        Operation(9, "ElfrOpenBELW", "sensor.interfaces.even.ElfrOpenBELW", ("BackupFileName",),
                  alternate_paths=(IMPACKET + "ElfrOpenBELW",)),
        Operation(10, "ElfrReadELW"),
        Operation(11, "ElfrReportEventW"),
    ),
)]
