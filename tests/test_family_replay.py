"""`dfs-sensor replay` with its embedded defaults on the coercion family's lab captures: each
raises exactly the rules its manifest lists (each at least once) (the family's rarity rules run beside DFSCoerce's,
with the correlator), and the benign look-alikes raise only what the manifest says."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PCAPS, ROOT

FAMILY = PCAPS / "family"
MANIFEST = json.loads((FAMILY / "manifest.json").read_text())["captures"]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_replay_raises_the_manifests_alerts(name, tmp_path: Path):
    run = subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(tmp_path / "s.db"),
                          str(FAMILY / name)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    # A rarity rule raises one alert per key (function, opnum, listener...): the rules, as a set.
    raised = {json.loads(line)["rule"]["id"] for line in run.stdout.splitlines()}
    assert raised == set(MANIFEST[name]["expected_alerts"])
