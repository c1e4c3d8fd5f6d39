"""The tshark engine on the lab captures (pcaps/) against their ground truth, and its
refusal of a missing or too-old tshark."""
from __future__ import annotations

import json
import stat

import pytest

from sensor.events import RpcCallEvent
from sensor.tshark.version import TsharkUnavailable, require_tshark
from tests.conftest import PCAPS, load_manifest, requires_tshark

MANIFEST = load_manifest()
NETDFS = "4fc742e0-4a10-11cf-8273-00aa004ae673"
COERCION_OPNUMS = {12, 13, 14, 15, 20, 23, 24}


def tshark_events(path) -> tuple[list[RpcCallEvent], object]:
    from sensor.tshark.engine import TsharkEngine

    engine = TsharkEngine()
    events = [e for e in engine.run_file(path) if isinstance(e, RpcCallEvent)]
    return events, engine.stats


def _fake_tshark(tmp_path, banner: str):
    exe = tmp_path / "tshark"
    exe.write_text(f"#!/bin/sh\necho '{banner}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def test_missing_tshark_is_a_clear_error(tmp_path):
    with pytest.raises(TsharkUnavailable, match="not installed|failed"):
        require_tshark(str(tmp_path / "no-such-tshark"))


def test_old_tshark_is_refused(tmp_path):
    with pytest.raises(TsharkUnavailable, match="3.6.2 is too old"):
        require_tshark(_fake_tshark(tmp_path, "TShark (Wireshark) 3.6.2 (Git v3.6.2)"))
    assert require_tshark(_fake_tshark(tmp_path, "TShark (Wireshark) 4.0.17 (Git)"))[1] == (4, 0, 17)


@requires_tshark
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_tshark_events_equal_ground_truth(name):
    entry = MANIFEST[name]
    events, stats = tshark_events(PCAPS / name)
    calls = [c for c in entry["calls"] if c["interface_uuid"].lower() == NETDFS]
    if entry["encrypted"]:
        # tshark cannot decrypt without keys: nothing to see, and it must not invent calls
        assert events == [] and stats["smb_encrypted_messages"] > 0
        return
    if not entry["should_alert"]:
        # benign traffic (Samba's rpcclient): the lab records no per-call truth, only that no
        # coercion method is called
        assert not [e for e in events if e.action_rpc_func_opnum in COERCION_OPNUMS]
        return
    assert [(e.action_rpc_func_opnum, e.action_rpc_func_name, e.actor_remote_ip, e.actor_remote_port,
             e.agent_ip, e.agent_port, e.net_stub_sealed) for e in events] == \
        [(c["opnum"], c["function"], c["client_ip"], c["client_port"], c["server_ip"], c["server_port"],
          c["sealed"]) for c in calls]
    for event, call in zip(events, calls):
        if call["decodable"]:
            assert json.loads(event.action_rpc_func_str_call_fields) == \
                {k: v for k, v in call["args"].items() if isinstance(v, str)}
            assert json.loads(event.action_rpc_func_int_call_fields) == \
                {k: str(v) for k, v in call["args"].items() if not isinstance(v, str)}
        assert event.action_rpc_interface_uuid == "{4FC742E0-4A10-11CF-8273-00AA004AE673}"
        assert event.net_capture_frame == call["frame"]
        if entry.get("agent_hostname") and event.net_interface_inferred != "stub":
            assert event.agent_hostname == entry["agent_hostname"]
