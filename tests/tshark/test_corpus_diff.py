"""scripts/corpus-diff over ../shared/corpus: every difference between the engines' binds and
requests (per connection and pipe) is listed in corpus_expectations.json with its cause; the
test fails on an unlisted difference and on a listed one that went away. Slow (~1 min: one
tshark run per capture); regenerate with scripts/corpus-diff --write tests/tshark/corpus_expectations.json.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import CORPUS, ROOT, requires_tshark

EXPECTATIONS = Path(__file__).with_name("corpus_expectations.json")


def _script():
    loader = importlib.machinery.SourceFileLoader("corpus_diff", str(ROOT / "scripts" / "corpus-diff"))
    spec = importlib.util.spec_from_loader("corpus_diff", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@requires_tshark
@pytest.mark.skipif(not (CORPUS / "manifest.json").exists(), reason="../shared/corpus is not beside this checkout")
def test_corpus_differences_are_listed_with_causes():
    script = _script()
    listed = json.loads(EXPECTATIONS.read_text())
    observed = {name: diff for name in script.captures() if (diff := script.differences(name))}
    assert observed == {name: entry["native_vs_tshark"] for name, entry in listed.items()}
    assert not [name for name, entry in listed.items() if entry["cause"] == "UNEXPLAINED"]
