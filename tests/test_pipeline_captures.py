"""The whole native pipeline on every recorded capture in pcaps/, against its ground truth.

The manifest is written by the capture lab from what the impacket client actually sent, and
is itself checked against tshark by tests/test_pcaps_manifest.py.
"""
from __future__ import annotations

import json

import pytest

from sensor.events import RpcCallEvent
from tests.conftest import PCAPS, decode_capture, load_manifest

MANIFEST = load_manifest()
CATALOGUED = {"4fc742e0-4a10-11cf-8273-00aa004ae673"}
COERCION_OPNUMS = {12, 13, 14, 15, 20, 23, 24}


def test_manifest_lists_every_committed_capture():
    on_disk = {p.name for p in PCAPS.glob("*.pcap*")}
    assert on_disk, "no captures committed under pcaps/"
    assert on_disk == set(MANIFEST)


def _visible_calls(entry: dict) -> list[dict]:
    """The manifest's calls that a passive decoder can see: none inside SMB3 encryption."""
    if entry["encrypted"]:
        return []
    return [c for c in entry["calls"] if c["interface_uuid"].lower() in CATALOGUED]


def _expected(entry: dict) -> list[tuple]:
    rows = []
    for call in _visible_calls(entry):
        strings = {k: v for k, v in call["args"].items() if isinstance(v, str)} if call["decodable"] else {}
        rows.append((call["opnum"], call["function"], strings, call["client_ip"], call["client_port"],
                     call["server_ip"], call["server_port"]))
    return rows


def _seen(events: list[RpcCallEvent]) -> list[tuple]:
    return [(e.action_rpc_func_opnum, e.action_rpc_func_name, json.loads(e.action_rpc_func_str_call_fields),
             e.actor_remote_ip, e.actor_remote_port, e.agent_ip, e.agent_port) for e in events]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_events_equal_ground_truth(name):
    entry = MANIFEST[name]
    records, stats = decode_capture(PCAPS / name)
    events = [r for r in records if isinstance(r, RpcCallEvent)]
    if not entry.get("observed_requests"):   # benign captures: see test_benign_requests_are_all_seen
        assert _seen(events) == _expected(entry)
    for event, call in zip(events, _visible_calls(entry)):
        ints = {k: str(v) for k, v in call["args"].items() if not isinstance(v, str)} if call["decodable"] else {}
        assert json.loads(event.action_rpc_func_int_call_fields) == ints
        assert event.net_stub_sealed == call["sealed"]
        assert event.action_rpc_interface_uuid == "{4FC742E0-4A10-11CF-8273-00AA004AE673}"
        if entry.get("agent_hostname") and event.net_interface_inferred != "stub":
            assert event.agent_hostname == entry["agent_hostname"]
    # Replaying the same capture gives the same event ids: the store can never double-count.
    again, _ = decode_capture(PCAPS / name)
    assert [e.event_id for e in events] == [r.event_id for r in again if isinstance(r, RpcCallEvent)]
    if entry["encrypted"]:
        assert stats["smb_encrypted_sessions"] >= 1 and stats["smb_encrypted_messages"] > 0
    if not entry["should_alert"]:
        assert not [e for e in events if e.action_rpc_func_opnum in COERCION_OPNUMS]


@pytest.mark.parametrize("name", sorted(n for n, e in MANIFEST.items() if e.get("observed_requests")))
def test_benign_requests_are_all_seen(name):
    """Benign captures: the lab lists what tshark saw (it cannot name the interface of Samba
    rpcclient's calls); the sensor names them netdfs from the bind, none of them coercion."""
    records, _ = decode_capture(PCAPS / name)
    events = [r for r in records if isinstance(r, RpcCallEvent)]
    observed = MANIFEST[name]["observed_requests"]
    expected = [(o["opnum"], o["client_port"], o["frame"]) for o in observed
                if o["interface_uuid"] is None or o["interface_uuid"] in CATALOGUED]
    assert [(e.action_rpc_func_opnum, e.actor_remote_port, e.net_capture_frame) for e in events] == expected
    assert {e.action_rpc_interface_name for e in events} <= {"netdfs"}
    assert not [e for e in events if e.net_interface_inferred]
