"""The corpus-wide engine differences, computed once per test session (one tshark run per
capture, ~1 min) and shared by every test that reads them."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json

import pytest

from tests.conftest import ROOT


def corpus_diff_script():
    """scripts/corpus-diff as a module (it has no .py suffix: it is a command)."""
    loader = importlib.machinery.SourceFileLoader("corpus_diff", str(ROOT / "scripts" / "corpus-diff"))
    spec = importlib.util.spec_from_loader("corpus_diff", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def corpus_differences(tmp_path_factory, corpus) -> dict[str, dict[str, list[int]]]:
    cache = tmp_path_factory.getbasetemp() / "corpus_engine_differences.json"
    if not cache.exists():
        script = corpus_diff_script()
        cache.write_text(json.dumps(
            {name: diff for name in script.captures() if (diff := script.differences(name))}))
    return json.loads(cache.read_text())
