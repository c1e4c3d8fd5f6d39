"""MS-RPRN (spoolss, PrinterBug / SpoolSample): the catalog row.

RpcRemoteFindFirstPrinterChangeNotification(Ex) (62, 65) make the print server open a
notification channel back to ``pszLocalMachine`` ("\\\\host"): the coercion. RpcOpenPrinter(Ex)
(1, 69) name the printer or server opened (the victim, "\\\\DC01") and precede every
PrinterBug, so they are decoded too. Request types: impacket's rprn module for 0, 1 and 69;
62 and 65 in sensor/interfaces/rprn.py (why: there).
"""
from __future__ import annotations

from sensor.interfaces.catalog import Interface, Operation, operations

UUID = "12345678-1234-abcd-ef00-0123456789ab"
VERSION = (1, 0)
NDR = "sensor.interfaces.rprn."
IMPACKET = "impacket.dcerpc.v5.rprn."

INTERFACES = [Interface(
    uuid=UUID, version=VERSION, name="spoolss", technique="PrinterBug", protocol="MS-RPRN",
    pipes=frozenset({"spoolss"}),
    operations=operations(
        Operation(0, "RpcEnumPrinters", IMPACKET + "RpcEnumPrinters"),
        Operation(1, "RpcOpenPrinter", IMPACKET + "RpcOpenPrinter"),
        Operation(29, "RpcClosePrinter"),
        Operation(62, "RpcRemoteFindFirstPrinterChangeNotification",
                  NDR + "RpcRemoteFindFirstPrinterChangeNotification", ("pszLocalMachine",)),
        Operation(65, "RpcRemoteFindFirstPrinterChangeNotificationEx",
                  NDR + "RpcRemoteFindFirstPrinterChangeNotificationEx", ("pszLocalMachine",)),
        Operation(69, "RpcOpenPrinterEx", IMPACKET + "RpcOpenPrinterEx"),
    ),
)]
