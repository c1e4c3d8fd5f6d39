"""Issue 18 item 12: a live sensor that drops to --user and then cannot create its store
says which path, which user and why, with the error: prefix, and exits 1."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.live.test_service import TIMEOUT

pytestmark = pytest.mark.root


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_unwritable_state_directory_names_the_path_and_the_user(veth, workers):
    state = Path(tempfile.mkdtemp(prefix="dfs-sensor-state-"))     # root's, 0755: not nobody's
    state.chmod(0o755)
    try:
        done = subprocess.run([sys.executable, "-m", "sensor.cli", "live", "-i", veth.host, "--user", "nobody",
                               "--db", str(state / "sensor.db"), "--alerts", "-", "--workers", workers],
                              cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    finally:
        shutil.rmtree(state)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [f"dfs-sensor: error: {state}/sensor.db: cannot open the store as user nobody "
                      f"(uid 65534): directory {state} is not writable (the store needs it for its "
                      f"-wal and -shm files)"], done.stderr
