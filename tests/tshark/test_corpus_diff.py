"""scripts/corpus-diff over ../shared/corpus: every difference between the engines' binds and
requests (per connection and pipe) is listed in corpus_expectations.json with a precise cause;
the test fails on an unlisted difference, on a listed one that went away, and on a cause that
does not say whose fault it is and where. Slow (~1 min, one tshark run per capture, shared
through the corpus_differences fixture); regenerate with
scripts/corpus-diff --write tests/tshark/corpus_expectations.json.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import requires_tshark

EXPECTATIONS = json.loads(Path(__file__).with_name("corpus_expectations.json").read_text())
# Every cause is one of the three verdicts, then the evidence.
VERDICTS = ("native bug:", "tshark limitation:", "ambiguous traffic:")
VAGUE = re.compile(r"not yet analysed|unexplained|unknown cause|suspected|likely|\?", re.IGNORECASE)
FRAME_REFERENCE = re.compile(r"\bframes? \d+")


def cause_problems(cause: str, verdicts: tuple[str, ...] = VERDICTS) -> list[str]:
    problems = []
    if not cause.startswith(verdicts):
        problems.append(f"does not start with one of {verdicts}")
    if VAGUE.search(cause):
        problems.append("is vague: " + VAGUE.search(cause).group(0))
    if not FRAME_REFERENCE.search(cause):
        problems.append("names no frame")
    return problems


@pytest.mark.parametrize("cause", [
    "", "UNEXPLAINED", "not yet analysed (tshark engine side suspected)",
    "tshark limitation: likely something", "native bug: misses a call",
])
def test_vague_causes_are_refused(cause):
    assert cause_problems(cause)


def test_every_listed_difference_has_a_precise_cause():
    assert {name: cause_problems(entry["cause"]) for name, entry in EXPECTATIONS.items()
            if cause_problems(entry["cause"])} == {}


@requires_tshark
@pytest.mark.slow
def test_corpus_differences_are_the_listed_ones(corpus_differences):
    assert corpus_differences == {name: entry["native_vs_tshark"] for name, entry in EXPECTATIONS.items()}
