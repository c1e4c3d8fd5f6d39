"""scripts/corpus-diff over the public corpus: every difference between the engines' binds and
requests (per connection and pipe) is listed in corpus_expectations.json (the format of
tests/expectations.py) with its cause; the test fails on an unlisted difference and on a listed
one that went away. Slow (~1 min, one tshark run per capture, shared through the
corpus_differences fixture); record a change with
scripts/corpus-diff --write tests/tshark/corpus_expectations.json.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests import expectations
from tests.conftest import requires_tshark

EXPECTATIONS_FILE = Path(__file__).with_name("corpus_expectations.json")


@requires_tshark
@pytest.mark.slow
def test_corpus_differences_are_the_listed_ones(corpus_differences):
    assert corpus_differences == expectations.load(EXPECTATIONS_FILE).differences
