"""Family calls made by Windows clients, from the public corpus (../shared/corpus): bytes no lab
tool and none of the sensor's types produced."""
from __future__ import annotations

import json

from sensor.events import RpcCallEvent
from tests.conftest import decode_capture

PRINTNIGHTMARE = "suricata-verify/tests/truncate-applayer-test-01/input.pcap"     # in the corpus


def test_windows_ms_par_open_printer_decodes(corpus):
    """A Windows print client over ncacn_ip_tcp: every RpcAsyncOpenPrinter (MS-PAR 0) decodes
    with impacket's par type, naming printers on its print server."""
    records, _ = decode_capture(corpus / PRINTNIGHTMARE)
    opens = [r for r in records if isinstance(r, RpcCallEvent) and r.action_rpc_func_name == "RpcAsyncOpenPrinter"]
    assert len(opens) == 8
    for event in opens:
        assert event.net_decode_error == "" and event.action_rpc_interface_name == "IRemoteWinspool"
        printer = json.loads(event.action_rpc_func_str_call_fields)["pPrinterName"]
        assert printer.lower().startswith("\\\\deerlm99ps1srv.ww005.siemens.net\\")
