"""The tshark engine's pipe and interface attribution on real corpus frames (../shared/corpus),
each case a difference from the native engine that corpus-diff found and tshark's own
per-frame fields (the .tshark.tsv beside each capture) settle."""
from __future__ import annotations

from collections import Counter

import pytest

from sensor.dcerpc.events import RpcCall
from tests.conftest import CORPUS, requires_tshark

pytestmark = [requires_tshark, pytest.mark.usefixtures("corpus")]
SRVSVC = "4b324fc8-1670-01d3-1278-5a47bf6ee188"
LSARPC = "12345778-1234-abcd-ef00-0123456789ab"
SVCCTL = "367abb81-9844-35f1-ad32-98f038001003"


def observed_calls(name: str):
    """(pipe, interface, opnum) of every request the tshark engine saw, and its stats."""
    from sensor.tshark.engine import TsharkEngine

    calls: Counter = Counter()

    def observe(flow, pipe, ev):
        if isinstance(ev, RpcCall):
            calls[(pipe, ev.interface_uuid, ev.opnum)] += 1

    engine = TsharkEngine(rpc_observer=observe)
    for _ in engine.run_file(CORPUS / name):
        pass
    return calls, engine.stats


def test_smb1_pipe_transaction_takes_its_fid_from_the_setup_words():
    # raw_ntlm_in_smb.pcap frames 31/34 (\srvsvc, FID 0x4000) and 54-66 (\lsarpc, FID 0x4001):
    # the SMB_COM_TRANSACTION requests name their FID only in tshark's smb_pipe layer.
    calls, _ = observed_calls("zeek/testing/btest/Traces/smb/raw_ntlm_in_smb.pcap")
    srvsvc, lsarpc = (1, 2048, 2048, 0x4000), (1, 2048, 2050, 0x4001)    # (SMB1, UID, TID, FID)
    assert calls == Counter({
        (srvsvc, SRVSVC, 15): 1,
        (lsarpc, LSARPC, 45): 1, (lsarpc, LSARPC, 44): 1, (lsarpc, LSARPC, 14): 1, (lsarpc, LSARPC, 0): 1,
    })


def test_request_echoed_in_an_ioctl_response_is_not_a_second_call():
    # smb2.pcap frame 23: the server's FSCTL_PIPE_TRANSCEIVE response repeats frame 22's
    # NetShareGetInfo request (call_id 1) in its In Data before the answer.
    calls, stats = observed_calls("zeek/testing/btest/Traces/smb/smb2.pcap")
    assert [(iface, opnum, n) for (_, iface, opnum), n in calls.items()] == [(SRVSVC, 16, 1)]
    assert stats["tshark.echoed_client_pdus"] == 1


def test_call_on_an_unacknowledged_bind_is_named_by_the_proposal():
    # bug-8629-async-oneside: client-to-server only; the binds of frames 16 and 117 offer
    # SVCCTL and no bind_ack follows, yet tshark itself names frame 20 "OpenSCManagerW".
    calls, stats = observed_calls("suricata-verify/tests/bug-8629-async-oneside/input.pcap")
    assert {iface for _, iface, _ in calls} == {SVCCTL}
    assert sum(calls.values()) == 18 == stats["tshark.calls_on_unacknowledged_context"]


def test_ndr64_is_the_transfer_syntax_the_ack_accepted_as_in_the_native_engine():
    # truncate-applayer-test-01: the bind offers ctx 0 in NDR20 and ctx 1 in NDR64; the ack
    # rejects ctx 0 and accepts ctx 1 (NDR64), an alter_context then binds ctx 0 in NDR20.
    from sensor.pipeline import PipelineSettings
    from tests.conftest import decode_capture

    name = "suricata-verify/tests/truncate-applayer-test-01/input.pcap"
    native: list = []
    decode_capture(CORPUS / name, PipelineSettings(rpc_observer=lambda flow, pipe, ev: isinstance(ev, RpcCall)
                                                   and native.append((ev.frame, ev.ctx_id, ev.ndr64))))
    from sensor.tshark.engine import TsharkEngine

    by_tshark: list = []
    engine = TsharkEngine(rpc_observer=lambda flow, pipe, ev: isinstance(ev, RpcCall)
                          and by_tshark.append((ev.frame, ev.ctx_id, ev.ndr64)))
    for _ in engine.run_file(CORPUS / name):
        pass
    assert by_tshark == native
    assert {(ctx, ndr64) for _, ctx, ndr64 in by_tshark} == {(0, False), (1, True)}
