"""Request stubs marshalled by Samba's NDR engine (librpc, pidl-generated), not by impacket
nor by the sensor: run with the system interpreter that has python3-samba, prints JSON.

Each call is packed four ways with ``samba.ndr.ndr_pack_in``: little and big endian
(LIBNDR_FLAG_BIGENDIAN, the drep a big-endian client sends, C706 14.2.5), NDR20 and NDR64.
"""
from __future__ import annotations

import json

from samba import ndr
from samba.dcerpc import misc, spoolss, winspool

PRINTER = "\\\\10.0.0.10"
LISTENER = "\\\\10.0.0.66"


def user_level_ctr() -> spoolss.UserLevelCtr:
    """MS-RPRN 2.2.1.7.1 SPLCLIENT_CONTAINER level 1: a union arm holding two embedded strings."""
    info = spoolss.UserLevel1()
    info.size = 28
    info.client = "\\\\CLIENT01"
    info.user = "alice"
    info.build = 7601
    info.major = 6
    info.minor = 1
    # 0 (x86): Samba's IDL makes this a 16-bit enum, which its NDR64 marshals in 4 octets
    # (ndr_push_enum_uint1632), where MS-RPRN 2.2.1.7.1 has ``unsigned short``; a non-zero
    # value would sit in different octets of the big-endian NDR64 stub for that reason alone.
    info.processor = 0
    ctr = spoolss.UserLevelCtr()
    ctr.level = 1
    ctr.user_info = info
    return ctr


def devmode_ctr() -> spoolss.DevmodeContainer:
    return spoolss.DevmodeContainer()     # NULL devmode, as print clients send


def notify_options() -> spoolss.NotifyOption:
    """MS-RPRN 2.2.1.13.1 RPC_V2_NOTIFY_OPTIONS: a pointer to an array of structures, each
    with a pointer to an array of uint16 fields: referents nested two deep."""
    printer = spoolss.NotifyOptionType()
    printer.type = spoolss.PRINTER_NOTIFY_TYPE
    printer.count = 3
    printer.fields = [spoolss.PRINTER_NOTIFY_FIELD_SERVER_NAME, spoolss.PRINTER_NOTIFY_FIELD_PRINTER_NAME,
                      spoolss.PRINTER_NOTIFY_FIELD_STATUS]
    job = spoolss.NotifyOptionType()
    job.type = spoolss.JOB_NOTIFY_TYPE
    job.count = 2
    job.fields = [spoolss.JOB_NOTIFY_FIELD_DOCUMENT, spoolss.JOB_NOTIFY_FIELD_STATUS]
    options = spoolss.NotifyOption()
    options.version = 2
    options.flags = 0
    options.count = 2
    options.types = [printer, job]
    return options


def open_printer():
    call = spoolss.OpenPrinter()
    call.in_printername = PRINTER
    call.in_datatype = "RAW"
    call.in_devmode_ctr = devmode_ctr()
    call.in_access_mask = 0x00020002
    return call, {"pPrinterName": PRINTER, "pDatatype": "RAW"}, {"AccessRequired": "131074"}


def open_printer_ex():
    call = spoolss.OpenPrinterEx()
    call.in_printername = PRINTER
    call.in_datatype = None
    call.in_devmode_ctr = devmode_ctr()
    call.in_access_mask = 0x00020002
    call.in_userlevel_ctr = user_level_ctr()
    return call, {"pPrinterName": PRINTER}, {"AccessRequired": "131074"}


def find_first_ex():
    call = spoolss.RemoteFindFirstPrinterChangeNotifyEx()
    call.in_handle = misc.policy_handle()
    call.in_handle.uuid = misc.GUID("0b5d6c5e-1a2b-4c3d-8e9f-a0b1c2d3e4f5")
    call.in_handle.handle_type = 0
    call.in_flags = 0x100
    call.in_options = 0
    call.in_local_machine = LISTENER
    call.in_printer_local = 123
    call.in_notify_options = notify_options()
    return call, {"pszLocalMachine": LISTENER}, {"fdwFlags": "256", "fdwOptions": "0", "dwPrinterLocal": "123"}


def enum_printers():
    call = spoolss.EnumPrinters()
    call.in_flags = 2
    call.in_server = PRINTER
    call.in_level = 1
    call.in_buffer = None
    call.in_offered = 0
    return call, {"Name": PRINTER}, {"Flags": "2", "Level": "1", "cbBuf": "0"}


def async_open_printer():
    call = winspool.AsyncOpenPrinter()
    call.in_pPrinterName = LISTENER + "\\printer"
    call.in_pDatatype = None
    call.in_pDevModeContainer = devmode_ctr()
    call.in_AccessRequired = 0x00020000
    call.in_pClientInfo = user_level_ctr()
    return call, {"pPrinterName": LISTENER + "\\printer"}, {"AccessRequired": "131072"}


def async_enum_printers():
    call = winspool.AsyncEnumPrinters()
    call.in_Flags = 2
    call.in_pName = PRINTER
    call.in_Level = 2
    call.in_pPrinterEnum = None
    call.in_cbBuf = 0
    return call, {"Name": PRINTER}, {"Flags": "2", "Level": "2", "cbBuf": "0"}


CALLS = {
    ("12345678-1234-abcd-ef00-0123456789ab", 1): open_printer,
    ("12345678-1234-abcd-ef00-0123456789ab", 69): open_printer_ex,
    ("12345678-1234-abcd-ef00-0123456789ab", 65): find_first_ex,
    ("12345678-1234-abcd-ef00-0123456789ab", 0): enum_printers,
    ("76f03f96-cdfd-44fc-a22c-64950a001209", 0): async_open_printer,
    ("76f03f96-cdfd-44fc-a22c-64950a001209", 38): async_enum_printers,
}


def main() -> None:
    out = []
    for (uuid, opnum), make in CALLS.items():
        call, strings, ints = make()
        stubs = {f"{'be' if big else 'le'}{'64' if n64 else ''}": ndr.ndr_pack_in(call, bigendian=big, ndr64=n64).hex()
                 for big in (False, True) for n64 in (False, True)}
        out.append({"uuid": uuid, "opnum": opnum, "function": make.__name__, "strings": strings, "ints": ints,
                    "stubs": stubs})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
