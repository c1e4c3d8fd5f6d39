"""``replay --jobs N``: files decoded in parallel processes give the store and alerts of a serial
replay. Real lab captures moved over nine days with editcap (so the rarity detector alerts on
the first six and then stops), with coercion and encrypted-session captures between them."""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
DAY = 86400
# Per day: an attack, a coerced back-authentication in clear and one inside SMB3 encryption,
# benign traffic.
DAILY = ["dfscoerce-smb21.pcap", "coerced-auth-clear.pcap", "dfscoerce-smb3-encrypted.pcap",
         "benign-smb-filecopy.pcap", "benign-encrypted-rpc.pcap"]

pytestmark = pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (wireshark-common) missing")


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> list[Path]:
    out_dir = tmp_path_factory.mktemp("days")
    copies = []
    for d in range(9):
        for name in DAILY:
            out = out_dir / f"day{d}-{name}"
            subprocess.run(["editcap", "-t", str(d * DAY), str(PCAPS / name), str(out)], check=True)
            copies.append(out)
    return copies


def replay(db: Path, captures: list[Path], *extra: str) -> tuple[list[str], str]:
    done = subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(db), *extra,
                           *map(str, captures)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines(), done.stderr


def store_rows(db: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(db) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"'))) for t in tables}


def counts(summary: str) -> str:
    """The summary's counts (files, packets, bytes, flows, events, alerts), not its timing."""
    return re.sub(r" in [\d.]+ s \([\d.]+ MB/s\)", "", summary)


@pytest.mark.parametrize("jobs", [2, 3])
def test_jobs_store_and_alerts_equal_a_serial_replay(days, tmp_path, jobs):
    serial_alerts, serial_summary = replay(tmp_path / "serial.db", days)
    parallel_alerts, parallel_summary = replay(tmp_path / "parallel.db", days, "--jobs", str(jobs))
    assert parallel_alerts == serial_alerts
    rare = [a for a in serial_alerts if '"dfscoerce-rare-dfsnm-root-call"' in a]
    assert len(rare) == 2 * 6          # two keys, alerting on their first six days only
    assert {"coercion-confirmed", "probable-coercion"} & {json.loads(a)["rule"]["id"] for a in serial_alerts}
    rows = store_rows(tmp_path / "serial.db")
    assert rows["events"] and rows == store_rows(tmp_path / "parallel.db")
    assert counts(parallel_summary) == counts(serial_summary)


def test_jobs_is_for_the_native_engine(days, tmp_path):
    done = subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(tmp_path / "s.db"),
                           "--engine", "tshark", "--jobs", "2", str(days[0])], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "dfs-sensor: error: --jobs is for the native engine; tshark decodes each file in its own process already"]


def test_jobs_refuses_a_pipe_among_several_captures_and_reads_one_alone(days, tmp_path):
    """A pipe or - is read once, in order, by the process that checked it: workers cannot share
    it, so with several captures --jobs refuses it (usage, exit 2, nothing stored); alone it is
    replayed as without --jobs."""
    command = [sys.executable, "-m", "sensor.cli", "replay", "--jobs", "2"]
    with open(days[0], "rb") as stdin:
        done = subprocess.run([*command, "--db", str(tmp_path / "refused.db"), "-", str(days[1])], cwd=ROOT,
                              stdin=stdin, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "dfs-sensor: error: --jobs decodes files in worker processes: a pipe or - is read once, in order; "
        "replay it without --jobs"]
    assert not (tmp_path / "refused.db").exists()
    with open(days[0], "rb") as stdin:
        done = subprocess.run([*command, "--db", str(tmp_path / "piped.db"), "-"], cwd=ROOT, stdin=stdin,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    alerts, summary = replay(tmp_path / "file.db", [days[0]])
    assert alerts and calls(done.stdout.splitlines()) == calls(alerts)    # (the capture's name differs)
    assert counts(done.stderr) == counts(summary)


def calls(alerts: list[str]) -> list[tuple]:
    """What each alert says was called, by whom (not which file it was read from)."""
    return [(a["rule"], a["action_rpc_func_opnum"], a["actor_remote_ip"]) for a in map(json.loads, alerts)]
