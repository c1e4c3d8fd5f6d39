"""The family's rule files (sensor/rules/family/*.xql) on the family captures: each capture
raises exactly the rarity rules its manifest's ``expected_alerts`` lists.

Runs the per-event stages of each rule through the XQL engine (issue 12); skipped where the
engine is not on the branch yet (it lands from the "xql" branch)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sensor.events import RpcCallEvent
from tests.conftest import PCAPS, decode_capture

xql_rules = pytest.importorskip("sensor.xql.rules", reason="the XQL engine (issue 12) is not on this branch yet")

RULES = sorted((Path(__file__).resolve().parents[2] / "sensor" / "rules" / "family").glob("*.xql"))
MANIFEST = json.loads((PCAPS / "family" / "manifest.json").read_text())["captures"]
# raised by the correlator and the transform-size fingerprint, not by the rule files
CORRELATOR_RULES = {"coercion-confirmed", "probable-coercion", "probable-dfscoerce-encrypted"}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_each_capture_raises_the_rules_its_manifest_lists(name):
    plans = [xql_rules.rarity_plan(xql_rules.load_rule(p)) for p in RULES]
    records, _ = decode_capture(PCAPS / "family" / name)
    raised = set()
    for event in (r for r in records if isinstance(r, RpcCallEvent)):
        row = event.to_dict() | {"_time": event.event_timestamp}
        raised |= {plan.rule.meta.id for plan in plans if plan.event_row(row) is not None}
    assert raised == set(MANIFEST[name]["expected_alerts"]) - CORRELATOR_RULES


def test_every_dfsnm_coercion_opnum_beyond_the_root_calls_alerts():
    """pcaps/dfsnm-other-coercion.pcap (impacket: 14, 15, 20, 23, 24), which raised nothing
    before: each of its calls passes dfscoerce-rare-dfsnm-other-call."""
    [plan] = [xql_rules.rarity_plan(xql_rules.load_rule(p)) for p in RULES if p.stem == "dfsnm-other"]
    records, _ = decode_capture(PCAPS / "dfsnm-other-coercion.pcap")
    events = [r for r in records if isinstance(r, RpcCallEvent)]
    passed = [e.action_rpc_func_opnum for e in events
              if plan.event_row(e.to_dict() | {"_time": e.event_timestamp}) is not None]
    assert passed == [14, 15, 20, 23, 24]
