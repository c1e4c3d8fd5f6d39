"""SIGKILL a replay midway, run it again: the store ends exactly as after one clean run
(no duplicate, no missing event or alert), and no alert was lost from the output."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from test_multiday import CAPTURE, ROOT, shifted

COPIES = 120
# Every copy is its own rare day: a window and threshold wide enough that every key alerts.
DETECTOR = ("--lookback-days", "400", "--threshold", "1000")
ALERTS_BEFORE_KILL = 5

pytestmark = [pytest.mark.skipif(not CAPTURE.exists(), reason="lab capture not built"),
              pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (wireshark-common) missing")]


def command(db: Path, captures: list[Path]) -> list[str]:
    return [sys.executable, "-m", "sensor.cli", "replay", "--db", str(db), *DETECTOR, *map(str, captures)]


def contents(db: Path) -> tuple[list, list, list]:
    conn = sqlite3.connect(db)
    events = conn.execute("SELECT event_id, record FROM events ORDER BY event_id").fetchall()
    key_days = conn.execute("SELECT * FROM key_days ORDER BY 1, 2, 3").fetchall()
    alerts = conn.execute("SELECT rule, key, day, record FROM alerts ORDER BY rule, key, day").fetchall()
    conn.close()
    return events, key_days, alerts


def alert_ids(lines: str) -> list[tuple]:
    return [(a["rule"]["id"], a["action_rpc_func_opnum"], a["day"]) for a in map(json.loads, lines.splitlines())]


def test_sigkill_midway_then_rerun_equals_one_clean_run(tmp_path):
    captures = shifted(CAPTURE, tmp_path, range(COPIES))

    clean_db = tmp_path / "clean.db"
    clean = subprocess.run(command(clean_db, captures), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    clean_alerts = alert_ids(clean.stdout)
    assert len(clean_alerts) == 2 * COPIES

    db = tmp_path / "killed.db"
    victim = subprocess.Popen(command(db, captures), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    before_kill = [victim.stdout.readline() for _ in range(ALERTS_BEFORE_KILL)]
    os.kill(victim.pid, signal.SIGKILL)
    before_kill += victim.stdout.readlines()       # whatever it flushed before dying
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    killed_events = contents(db)[0]
    assert 0 < len(killed_events) < len(contents(clean_db)[0]), "the kill did not land midway"

    rerun = subprocess.run(command(db, captures), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert contents(db) == contents(clean_db)
    # Alerts are written before their commit: a killed run may repeat one, never lose one.
    emitted = alert_ids("".join(before_kill)) + alert_ids(rerun.stdout)
    assert set(emitted) == set(clean_alerts)
    assert len(emitted) - len(clean_alerts) <= 2   # at most the uncommitted file's alerts repeat
