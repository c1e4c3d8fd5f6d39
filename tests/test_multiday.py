"""A real DFSCoerce capture replayed as if it happened on nine consecutive days (editcap -t):
each key alerts on its first six distinct days and never from the seventh, across a restart."""
from __future__ import annotations

import calendar
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = ROOT / "pcaps" / "dfscoerce-smb21.pcap"
DAY = 86400

pytestmark = [pytest.mark.skipif(not CAPTURE.exists(), reason="lab capture not built"),
              pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (wireshark-common) missing")]


def shifted(base: Path, out_dir: Path, days: range) -> list[Path]:
    """Copies of the capture moved forward by whole days."""
    copies = []
    for d in days:
        out = out_dir / f"day{d:03d}.pcap"
        subprocess.run(["editcap", "-t", str(d * DAY), str(base), str(out)], check=True)
        copies.append(out)
    return copies


def replay(db: Path, *captures: Path, extra: tuple[str, ...] = ()) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(db), *extra,
                           *map(str, captures)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def key(alert: dict) -> tuple:
    return tuple(alert[f] for f in ("actor_type", "action_rpc_func_name", "action_rpc_func_opnum",
                                    "agent_hostname", "agent_id", "actor_remote_ip",
                                    "dfs_relay_server", "dfs_root_share"))


def test_first_six_days_alert_seventh_does_not_and_a_restart_keeps_the_count(tmp_path):
    days = shifted(CAPTURE, tmp_path, range(9))
    db = tmp_path / "s.db"
    before_restart = replay(db, *days[:4])
    after_restart = replay(db, *days[4:])          # a new process: state comes from the store
    alerts = before_restart + after_restart
    keys = {key(a) for a in alerts}
    assert {k[2] for k in keys} == {12, 13}        # the capture's two calls are two keys
    first_day = alerts[0]["day"]
    for k in keys:
        mine = [a for a in alerts if key(a) == k]
        assert [a["day_count"] for a in mine] == [1, 2, 3, 4, 5, 6]
        assert len({a["day"] for a in mine}) == 6 and mine[0]["day"] == first_day
    assert replay(db, days[2]) == []               # replaying a day again adds nothing
    hunt = subprocess.run([sys.executable, "-m", "sensor.cli", "hunt", "--db", str(db), "--format", "json",
                           "--threshold", "10"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert sorted(json.loads(line)["day_count"] for line in hunt.stdout.splitlines()) == [9, 9]


def test_day_of_month_mode_counts_a_month_later_as_the_same_day(tmp_path):
    """XQL's extract_time(_time, "DAY"): the same date a month later is the same day number,
    so in day-of-month mode it does not add a day to the count; in utc-date mode it does."""
    base_day = replay(tmp_path / "probe.db", CAPTURE)[0]["day"]
    month_days = calendar.monthrange(int(base_day[:4]), int(base_day[5:7]))[1]   # same day number next month
    copies = [shifted(CAPTURE, tmp_path, range(d, d + 1))[0] for d in (0, month_days)]
    by_dom = replay(tmp_path / "dom.db", *copies, extra=("--day-mode", "day-of-month", "--lookback-days", "60"))
    by_date = replay(tmp_path / "date.db", *copies, extra=("--lookback-days", "60"))
    assert sorted(a["day_count"] for a in by_dom) == [1, 1, 1, 1]
    assert sorted(a["day_count"] for a in by_date) == [1, 1, 2, 2]
