"""The one format of the differential tests' expectation files (tests/**/*_expectations.json):
what the native engine and an independent oracle (tshark, Zeek) disagree on, and why.

    {"oracle": "tshark",                        (or "zeek": whose output the native engine is held to)
     "counted": "what one key counts",
     "differences": {
       "<capture>": {"cause": "<verdict>: <evidence naming frames>",
                     "native_vs_oracle": {"<key>": [<native count>, <oracle count>], ...}}}}

A test counts the same keys both ways for every capture it compares (difference()) and asserts
that the result equals the file's: a new difference fails until it is recorded with its cause,
and a recorded one that went away fails until it is removed, so no entry goes stale.
tests/test_expectations.py checks every file's form and causes.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

FIELDS = {"oracle", "counted", "differences"}
ENTRY_FIELDS = {"cause", "native_vs_oracle"}
ORACLES = ("tshark", "zeek")
# A cause starts with whose fault the difference is, then gives the evidence in frames.
VAGUE = re.compile(r"not yet analysed|unexplained|unknown cause|suspected|likely|\?", re.IGNORECASE)
FRAME_REFERENCE = re.compile(r"\bframes? \d+")
UNEXPLAINED = "UNEXPLAINED"        # what write() puts on a new entry, for a person to replace


def verdicts(oracle: str) -> tuple[str, ...]:
    return ("native bug:", f"{oracle} limitation:", "corpus mapping error:", "ambiguous traffic:")


@dataclass(frozen=True)
class Expectations:
    path: Path
    oracle: str
    counted: str
    causes: dict[str, str]                               # capture -> cause
    differences: dict[str, dict[str, list[int]]]         # capture -> key -> [native, oracle]


def load(path: Path) -> Expectations:
    """The file, its form checked (ValueError naming the file and the problem)."""
    data = json.loads(path.read_text())
    if set(data) != FIELDS:
        raise ValueError(f"{path}: fields {sorted(data)}, expected {sorted(FIELDS)}")
    if data["oracle"] not in ORACLES:
        raise ValueError(f"{path}: oracle {data['oracle']!r} is not one of {ORACLES}")
    for capture, entry in data["differences"].items():
        if set(entry) != ENTRY_FIELDS:
            raise ValueError(f"{path}: {capture}: fields {sorted(entry)}, expected {sorted(ENTRY_FIELDS)}")
        counts = entry["native_vs_oracle"]
        if not counts or not all(isinstance(v, list) and len(v) == 2 and v[0] != v[1]
                                 and all(isinstance(n, int) and n >= 0 for n in v) for v in counts.values()):
            raise ValueError(f"{path}: {capture}: native_vs_oracle must map keys to two different counts")
    return Expectations(path, data["oracle"], data["counted"],
                        {c: e["cause"] for c, e in data["differences"].items()},
                        {c: e["native_vs_oracle"] for c, e in data["differences"].items()})


def cause_problems(cause: str, oracle: str) -> list[str]:
    problems = []
    if not cause.startswith(verdicts(oracle)):
        problems.append(f"does not start with one of {verdicts(oracle)}")
    if VAGUE.search(cause):
        problems.append("is vague: " + VAGUE.search(cause).group(0))
    if not FRAME_REFERENCE.search(cause):
        problems.append("names no frame")
    return problems


def difference(native: Counter, oracle: Counter) -> dict[str, list[int]]:
    """The keys whose counts differ: key -> [native, oracle]."""
    return {k: [native[k], oracle[k]] for k in sorted(set(native) | set(oracle)) if native[k] != oracle[k]}


def write(path: Path, observed: dict[str, dict[str, list[int]]]) -> None:
    """Record ``observed`` (capture -> difference()) in ``path``, keeping the causes of the
    captures already there; a new capture gets UNEXPLAINED, which the checks refuse."""
    old = load(path)
    path.write_text(json.dumps({
        "oracle": old.oracle, "counted": old.counted,
        "differences": {capture: {"cause": old.causes.get(capture, UNEXPLAINED), "native_vs_oracle": counts}
                        for capture, counts in sorted(observed.items())},
    }, indent=1) + "\n")
