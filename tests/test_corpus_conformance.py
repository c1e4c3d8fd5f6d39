"""Conformance on public captures from Zeek's and Suricata's test suites (../shared/corpus).

For every capture with DCE/RPC requests, the sensor's decoded requests, counted per
(interface uuid, opnum), must equal what tshark 4.0.17 dissected (the manifest's top_ops,
first fragments, "unknown" where the bind is not in the capture). Every difference is listed
in tests/corpus_expectations.json (the format of tests/expectations.py) with its cause; the test
fails on a difference that is not listed, and on a listed one that has gone away.

Record the observed differences after a change with
    DFS_SENSOR_WRITE_EXPECTATIONS=1 .venv/bin/python -m pytest tests/test_corpus_conformance.py
and then write the cause of each new entry by hand (tests/test_expectations.py refuses UNEXPLAINED).
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from sensor.dcerpc.events import RpcCall
from sensor.pipeline import PipelineSettings
from tests import expectations
from tests.conftest import corpus_manifest, decode_capture

EXPECTATIONS_FILE = Path(__file__).with_name("corpus_expectations.json")
UDP_ONLY = "udp"   # connectionless DCE/RPC (ncadg) is out of scope: the sensor reads connection-oriented only


ENTRIES = [c for c in corpus_manifest() if c["requests"]]


def sensor_ops(path: Path) -> Counter:
    seen: Counter = Counter()

    def observe(flow, pipe, ev):
        if isinstance(ev, RpcCall):
            seen[f"{ev.interface_uuid or 'unknown'}:{ev.opnum}"] += 1

    decode_capture(path, PipelineSettings(rpc_observer=observe))
    return seen


def test_corpus_requests_match_tshark_or_are_explained(corpus):
    observed = {}
    for entry in ENTRIES:
        if all(t.startswith(UDP_ONLY) for t in entry["transport_summary"]):
            continue
        diff = expectations.difference(sensor_ops(corpus / entry["local_file"]), Counter(entry["top_ops"]))
        if diff:
            observed[entry["local_file"]] = diff
    if os.environ.get("DFS_SENSOR_WRITE_EXPECTATIONS"):
        expectations.write(EXPECTATIONS_FILE, observed)
    assert observed == expectations.load(EXPECTATIONS_FILE).differences
