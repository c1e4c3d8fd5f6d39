"""The tshark engine over the coercion family's captures (pcaps/family/): Wireshark's own
argument fields (efs, eventlog, fsrvp, spoolss; sensor/tshark/arguments.py) must give the
same events as the native NDR decoding, field by field. Where tshark dissects an argument the
engine takes tshark's value, so any disagreement with the native decoder shows here."""
from __future__ import annotations

import json

import pytest

from sensor.events import RpcCallEvent
from tests.conftest import PCAPS, decode_capture, requires_tshark
from tests.interfaces.test_family_captures import tshark_arguments
from tests.tshark.test_engine import tshark_events
from tests.tshark.test_engines_agree import rows

FAMILY = PCAPS / "family"
MANIFEST = json.loads((FAMILY / "manifest.json").read_text())["captures"]


@requires_tshark
@pytest.mark.parametrize("name", sorted(n for n, e in MANIFEST.items() if not e["encrypted"]))
def test_tshark_fields_agree_with_native_decoding(name):
    native, _ = decode_capture(FAMILY / name)
    native = [r for r in native if isinstance(r, RpcCallEvent)]
    theirs, stats = tshark_events(FAMILY / name)
    assert rows(theirs) == rows(native)
    # the server's name: an SMB session's NTLMSSP CHALLENGE, or an authenticated bind's over TCP
    assert [e.agent_hostname for e in theirs] == [e.agent_hostname for e in native]
    # every call whose listener argument tshark dissects took its arguments from tshark's fields
    assert stats["tshark.arguments_from_fields"] == len(tshark_arguments(name))
