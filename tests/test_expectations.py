"""Every differential test's expectation file (tests/**/*_expectations.json) has the one format
of tests/expectations.py, and every recorded difference a precise cause: whose fault, and the
frames that show it."""
from __future__ import annotations

import json

import pytest

from tests import expectations
from tests.conftest import ROOT

FILES = sorted((ROOT / "tests").rglob("*_expectations.json"))


def test_the_four_oracle_files_are_found():
    assert [str(p.relative_to(ROOT / "tests")) for p in FILES] == [
        "corpus_expectations.json", "tshark/corpus_expectations.json", "tshark/engine_expectations.json",
        "tshark/zeek_expectations.json"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT / "tests")))
def test_every_recorded_difference_has_a_precise_cause(path):
    recorded = expectations.load(path)
    assert {capture: expectations.cause_problems(cause, recorded.oracle)
            for capture, cause in recorded.causes.items()
            if expectations.cause_problems(cause, recorded.oracle)} == {}


@pytest.mark.parametrize("cause", [
    "", expectations.UNEXPLAINED, "not yet analysed (tshark engine side suspected)",
    "tshark limitation: likely something", "native bug: misses a call", "zeek limitation: frame 3 differs",
])
def test_vague_causes_are_refused(cause):
    assert expectations.cause_problems(cause, "tshark")


def test_a_precise_cause_is_accepted():
    assert expectations.cause_problems("tshark limitation: frame 23 echoes the request", "tshark") == []


@pytest.mark.parametrize("broken", [
    {"oracle": "tshark", "counted": "x"},                                             # no differences
    {"oracle": "wireshark", "counted": "x", "differences": {}},                       # unknown oracle
    {"oracle": "tshark", "counted": "x", "differences": {"a.pcap": {"reason": "r", "ops": {"k": [1, 2]}}}},
    {"oracle": "tshark", "counted": "x", "differences": {"a.pcap": {"cause": "c", "native_vs_oracle": {"k": [2, 2]}}}},
    {"oracle": "tshark", "counted": "x", "differences": {"a.pcap": {"cause": "c", "native_vs_oracle": {}}}},
])
def test_other_forms_are_refused(tmp_path, broken):
    path = tmp_path / "x_expectations.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="x_expectations.json"):
        expectations.load(path)


def test_write_keeps_causes_and_marks_new_differences_unexplained(tmp_path):
    path = tmp_path / "x_expectations.json"
    path.write_text(json.dumps({"oracle": "zeek", "counted": "calls", "differences": {
        "kept.pcap": {"cause": "zeek limitation: frame 4", "native_vs_oracle": {"k": [1, 0]}},
        "gone.pcap": {"cause": "zeek limitation: frame 9", "native_vs_oracle": {"k": [1, 0]}}}}))
    expectations.write(path, {"kept.pcap": {"k": [2, 0]}, "new.pcap": {"j": [0, 1]}})
    written = expectations.load(path)
    assert written.causes == {"kept.pcap": "zeek limitation: frame 4", "new.pcap": expectations.UNEXPLAINED}
    assert written.differences == {"kept.pcap": {"k": [2, 0]}, "new.pcap": {"j": [0, 1]}}
