"""MS-PAR (IRemoteWinspool, asynchronous printing) over ncacn_ip_tcp: the catalog row on
impacket's par types.

MS-PAR has no notification channel to a named host (its notifications ride the client's own
calls, 3.1.4.9), so the one place it carries a listener is the printer name of
RpcAsyncOpenPrinter (0): "\\\\L\\printer" makes the spooler open a connection to print
server L as its machine account, as RpcOpenPrinter does in MS-RPRN. Requests carry the object
uuid 9940ca8e-512f-4c58-88a9-61098d6896bd (MS-PAR 2.1); the interface uuid decides here.
"""
from __future__ import annotations

from sensor.interfaces.catalog import NCACN_IP_TCP, Interface, Operation, operations

UUID = "76f03f96-cdfd-44fc-a22c-64950a001209"
VERSION = (1, 0)
IMPACKET = "impacket.dcerpc.v5.par."

INTERFACES = [Interface(
    uuid=UUID, version=VERSION, name="IRemoteWinspool", technique="PrinterBug (MS-PAR)", protocol="MS-PAR",
    pipes=frozenset(), transports=frozenset({NCACN_IP_TCP}),
    operations=operations(
        Operation(0, "RpcAsyncOpenPrinter", IMPACKET + "RpcAsyncOpenPrinter", ("pPrinterName",)),
        Operation(20, "RpcAsyncClosePrinter"),
        Operation(38, "RpcAsyncEnumPrinters", IMPACKET + "RpcAsyncEnumPrinters"),
    ),
)]
