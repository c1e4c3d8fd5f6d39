"""Issue 18 item 6: one future-dated capture must not decide the retention window. The
window ends at the newest stored event but never more than store.max_clock_skew ahead of
the sensor's clock: a capture dated 2100 is stored and counted as an anomaly, and the 2026
history stays (replaying it again adds nothing). Old captures still keep their own window."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.conftest import PCAPS, ROOT
from tests.store.workload import records

CAPTURE = PCAPS / "dfscoerce-smb21.pcap"
DAY = 86_400
YEAR_2100 = datetime(2100, 11, 28, tzinfo=timezone.utc).timestamp()

pytestmark = pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (wireshark-common) missing")


def at(out: Path, when: float) -> tuple[Path, str]:
    """The capture moved (editcap -t) so that it starts at ``when``; and that UTC date."""
    first = records(CAPTURE)[1][0][0] / 1e6
    subprocess.run(["editcap", "-t", str(int(when - first)), str(CAPTURE), str(out)], check=True,
                   capture_output=True)
    return out, datetime.fromtimestamp(int(when - first) + first, timezone.utc).date().isoformat()


def today(tmp_path: Path) -> tuple[Path, str]:
    """The capture as if recorded an hour ago: the tests do not age with the calendar."""
    return at(tmp_path / "today.pcap", time.time() - 3600)


def replay(db: Path, capture: Path, *flags: str) -> tuple[list[dict], str]:
    done = subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(db), *flags,
                           str(capture)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def state(db: Path) -> tuple[list, list, list]:
    conn = sqlite3.connect(db)
    events = conn.execute("SELECT utc_date, count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall()
    key_days = conn.execute("SELECT utc_date, count(*) FROM key_days GROUP BY 1 ORDER BY 1").fetchall()
    hits = conn.execute("SELECT day, opnum, json_extract(record, '$.hits') FROM alerts ORDER BY 1, 2").fetchall()
    conn.close()
    return events, key_days, hits


def test_a_capture_dated_2100_keeps_the_history(tmp_path):
    db = tmp_path / "s.db"
    recent, day = today(tmp_path)
    future, future_day = at(tmp_path / "2100.pcap", YEAR_2100)
    first, _ = replay(db, recent)
    assert len(first) == 2
    before = state(db)

    alerts, summary = replay(db, future)
    assert len(alerts) == 2                                    # its own keys' first day
    assert "event_time_ahead_of_clock 2" in summary            # named and counted
    events, key_days, _ = state(db)
    assert events[0] == (day, 2) and key_days[0] == (day, 2)   # nothing pruned (main: all of it)

    again, summary = replay(db, recent)
    assert again == [] and "(0 new)" in summary                # replays stay idempotent
    assert state(db)[2] == before[2] + [(future_day, 12, 1), (future_day, 13, 1)]   # hits unchanged
    hunt = subprocess.run([sys.executable, "-m", "sensor.cli", "hunt", "--db", str(db), "--format", "json",
                           "--until", day], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert [json.loads(line)["day_count"] for line in hunt.stdout.splitlines()] == [1, 1]


def test_old_captures_still_prune_by_their_own_time(tmp_path):
    db = tmp_path / "s.db"
    replay(db, at(tmp_path / "old.pcap", time.time() - 100 * DAY)[0])
    recent, day = at(tmp_path / "later.pcap", time.time() - 40 * DAY)
    replay(db, recent)                                           # 60 days later, still in the past
    events, key_days, hits = state(db)
    assert events == [(day, 2)] and key_days == [(day, 2)]
    assert len(hits) == 4                                        # alerts are kept


@pytest.mark.parametrize("skew, kept", [(0, True), (60 * DAY, False)])
def test_the_skew_bounds_how_far_a_frame_moves_the_window(tmp_path, skew, kept):
    """A capture 40 days ahead: beyond a skew of 0 it is an anomaly and prunes nothing;
    within a skew of 60 days it moves the window and today's week falls out of it."""
    db = tmp_path / "s.db"
    config = tmp_path / "c.toml"
    config.write_text(f"[store]\nmax_clock_skew = {skew}\n[detector]\nlookback_days = 7\n")
    recent, day = today(tmp_path)
    replay(db, recent, "--config", str(config))
    ahead, _ = at(tmp_path / "ahead.pcap", time.time() + 40 * DAY)
    _, summary = replay(db, ahead, "--config", str(config))
    assert ("event_time_ahead_of_clock 2" in summary) == kept
    assert ((day, 2) in state(db)[0]) == kept
