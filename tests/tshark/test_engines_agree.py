"""Both engines over every lab capture in pcaps/: the same events, field by field.

They must agree on interface, opnum, function, arguments, addresses, ports, sealing, call id,
event id (same instant, same stub bytes) and exception code. Where they cannot, the events that
differ are listed with the cause in engine_expectations.json (the format of
tests/expectations.py), and the test fails when they differ otherwise or no longer differ.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from sensor.events import RpcCallEvent
from tests import expectations
from tests.conftest import PCAPS, decode_capture, requires_tshark
from tests.tshark.test_engine import tshark_events

EXPECTATIONS = expectations.load(Path(__file__).with_name("engine_expectations.json"))
CAPTURES = sorted(p.name for p in PCAPS.glob("*.pcap*"))
COMPARED = ("action_rpc_interface_uuid", "action_rpc_interface_name", "action_rpc_func_opnum",
            "action_rpc_func_name", "action_rpc_func_str_call_fields", "action_rpc_func_int_call_fields",
            "action_rpc_func_exception_code", "actor_type", "actor_remote_ip", "actor_remote_port",
            "actor_remote_pipe_name", "agent_ip", "agent_port", "net_rpc_call_id", "net_stub_sealed",
            "event_id", "net_capture_frame")


def rows(events) -> list[str]:
    """One key per event: its compared fields, joined by |."""
    return ["|".join(str(getattr(e, f)) for f in COMPARED) for e in events]


@requires_tshark
@pytest.mark.parametrize("name", CAPTURES)
def test_engines_agree(name):
    native, _ = decode_capture(PCAPS / name)
    native = [r for r in native if isinstance(r, RpcCallEvent)]
    theirs, _ = tshark_events(PCAPS / name)
    native_rows, tshark_rows = rows(native), rows(theirs)
    assert expectations.difference(Counter(native_rows), Counter(tshark_rows)) == EXPECTATIONS.differences.get(name, {})
    if name not in EXPECTATIONS.differences:
        assert native_rows == tshark_rows          # in the same order too


def test_expectations_name_lab_captures():
    # A listed capture that is not compared would never be found stale.
    assert set(EXPECTATIONS.differences) <= set(CAPTURES)
