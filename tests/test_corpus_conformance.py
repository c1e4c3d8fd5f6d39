"""Conformance on public captures from Zeek's and Suricata's test suites (../shared/corpus).

For every capture with DCE/RPC requests, the sensor's decoded requests, counted per
(interface uuid, opnum), must equal what tshark 4.0.17 dissected (the manifest's top_ops,
first fragments, "unknown" where the bind is not in the capture). Every difference is listed
in tests/corpus_differences.json with its reason; the test fails on a difference that is not
listed, and on a listed one that has gone away (so the list stays true).

Regenerate the observed differences after a change with
    DFS_SENSOR_WRITE_CORPUS_DIFF=1 .venv/bin/python -m pytest tests/test_corpus_conformance.py
and then write a reason for each new entry by hand.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from sensor.dcerpc.events import RpcCall
from sensor.pipeline import PipelineSettings
from tests.conftest import CORPUS, corpus_manifest, decode_capture

DIFFERENCES_FILE = Path(__file__).with_name("corpus_differences.json")
UDP_ONLY = "udp"   # connectionless DCE/RPC (ncadg) is out of scope: the sensor reads connection-oriented only


ENTRIES = [c for c in corpus_manifest() if c["requests"]]


def sensor_ops(path: Path) -> Counter:
    seen: Counter = Counter()

    def observe(flow, pipe, ev):
        if isinstance(ev, RpcCall):
            seen[f"{ev.interface_uuid or 'unknown'}:{ev.opnum}"] += 1

    decode_capture(path, PipelineSettings(rpc_observer=observe))
    return seen


def differences(entry: dict) -> dict[str, list[int]]:
    ours = sensor_ops(CORPUS / entry["local_file"])
    theirs = Counter(entry["top_ops"])
    return {op: [ours[op], theirs[op]] for op in sorted(set(ours) | set(theirs)) if ours[op] != theirs[op]}


def test_corpus_requests_match_tshark_or_are_explained(corpus):
    listed = json.loads(DIFFERENCES_FILE.read_text()) if DIFFERENCES_FILE.exists() else {}
    observed = {}
    for entry in ENTRIES:
        if all(t.startswith(UDP_ONLY) for t in entry["transport_summary"]):
            continue
        diff = differences(entry)
        if diff:
            observed[entry["local_file"]] = diff
    if os.environ.get("DFS_SENSOR_WRITE_CORPUS_DIFF"):
        DIFFERENCES_FILE.write_text(json.dumps(
            {name: {"ops": ops, "reason": listed.get(name, {}).get("reason", "UNEXPLAINED")}
             for name, ops in observed.items()}, indent=1, sort_keys=True) + "\n")
    assert {n: d["ops"] for n, d in listed.items()} == observed
    assert not [n for n, d in listed.items() if d["reason"] == "UNEXPLAINED"]
