"""The `corpus` fixture: an absent corpus skips a corpus test with one reason, except under
CI=true, where it fails it (CI has ../shared beside its checkout and must run them all)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

A_CORPUS_TEST = "tests/smb/test_smb2.py::test_corpus_smb3_encrypted_session"


def run_without_corpus(ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"DFS_SENSOR_CORPUS": "/nonexistent/corpus"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", A_CORPUS_TEST],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_absent_corpus_skips_with_its_reason():
    result = run_without_corpus(None)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert "public corpus absent: no /nonexistent/corpus/manifest.json" in result.stdout


def test_absent_corpus_fails_in_ci():
    result = run_without_corpus("true")
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout and "CI=true requires it" in result.stdout


def test_no_test_finds_or_skips_on_the_corpus_by_itself():
    # Only tests/conftest.py builds the corpus path; a test module that builds its own or
    # skips on it with a skipif of its own would bypass the one reason and CI=true.
    own_way = re.compile(r'"shared"|shared/corpus"|skipif\([^)]*CORPUS')
    allowed = {ROOT / "tests" / "conftest.py", Path(__file__)}
    assert [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").rglob("*.py"))
            if p not in allowed and own_way.search(p.read_text())] == []
