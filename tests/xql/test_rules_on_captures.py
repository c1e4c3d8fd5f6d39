"""The rule files on real captures.

1. Streaming: the alerts `replay` prints with the shipped DFSCoerce rule files are what the
   detector before issue 12 printed (tests/rarity_oracle.py, over the events the replay
   logged). Every shipped capture alone, and every attack capture shifted over 10 days with editcap.
2. Batch: `hunt --xql <the seed file>` over the shifted store returns the rows of the
   independent SQL translation of the query (tests/test_hunt_equals_query.py), for both
   day expressions, and the rows of the built-in `hunt`.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from sensor.cli import main
from sensor.detect.rarity import RaritySettings
from sensor.store.sqlite import Store
from tests.conftest import load_manifest
from rarity_oracle import KEY, THRESHOLD, comparable, expected_alerts
from test_hunt_equals_query import query_rows

ROOT = Path(__file__).resolve().parents[2]
PCAPS = ROOT / "pcaps"
SEED = ROOT / "sensor" / "rules" / "dfscoerce" / "seed-exact.xql"
MODES = [("opnum-12-13", "utc-date"), ("seed-exact", "day-of-month"), ("seed-exact", "utc-date"),
         ("opnum-12-13", "day-of-month")]
SHIFT_DAYS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 35)
# Every shipped capture the lab marks as an attack (pcaps/manifest.json should_alert).
ATTACKS = sorted(name for name, entry in load_manifest().items() if entry.get("should_alert"))
CAPTURES = sorted(PCAPS.glob("*.pcap"))

pytestmark = pytest.mark.skipif(not CAPTURES, reason="lab captures not built")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def replay(db: Path, captures, match: str, day_mode: str, events: Path) -> list[dict]:
    result = invoke("replay", "--db", db, "--events", events, "--match", match, "--day-mode", day_mode, *captures)
    assert result.exit_code == 0, result.stderr
    return [a for a in map(json.loads, result.stdout.splitlines()) if a["rule"]["id"] == "dfscoerce-rare-dfsnm-root-call"]


def logged_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("match, day_mode", MODES)
def test_streaming_alerts_equal_the_detector_before_rules_on_every_capture(tmp_path, match, day_mode):
    alerting = 0
    for n, capture in enumerate(CAPTURES):
        events = tmp_path / f"{n}.jsonl"
        alerts = replay(tmp_path / f"{n}.db", [capture], match, day_mode, events)
        assert [comparable(a) for a in alerts] == expected_alerts(logged_events(events), match, day_mode), capture
        assert all(a["rule_file"] == f"sensor/rules/dfscoerce/{match}.xql" and a["rule_version"] == 1 for a in alerts)
        alerting += bool(alerts)
    assert alerting >= 10        # most attack captures alert: the comparison is not over empty lists


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    if shutil.which("editcap") is None:
        pytest.skip("editcap (wireshark-common) missing")
    out = tmp_path_factory.mktemp("shifted")
    copies = []
    for d in SHIFT_DAYS:
        for name in ATTACKS:
            copy = out / f"{Path(name).stem}-{d:03d}.pcap"
            subprocess.run(["editcap", "-t", str(d * 86400), str(PCAPS / name), str(copy)], check=True)
            copies.append(copy)
    return copies


@pytest.mark.parametrize("match, day_mode", MODES)
def test_streaming_alerts_over_shifted_days_equal_the_detector_before_rules(tmp_path, shifted, match, day_mode):
    events = tmp_path / "events.jsonl"
    alerts = replay(tmp_path / "s.db", shifted, match, day_mode, events)
    expected = expected_alerts(logged_events(events), match, day_mode)
    assert [comparable(a) for a in alerts] == expected
    assert max(a["day_count"] for a in alerts) == THRESHOLD - 1      # the seventh day was reached


@pytest.mark.parametrize("day_mode", ["day-of-month", "utc-date"])
def test_hunt_xql_seed_file_equals_the_query_and_the_builtin_hunt(tmp_path, shifted, day_mode):
    db = tmp_path / "s.db"
    replay(db, shifted, "seed-exact", day_mode, tmp_path / "events.jsonl")
    extra = ("--day-mode", "utc-date") if day_mode == "utc-date" else ()
    result = invoke("hunt", "--db", db, "--xql", SEED, *extra, "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = sorted((tuple(r.values()) for r in map(json.loads, result.stdout.splitlines())), key=repr)
    store = Store(str(db))
    oracle = query_rows(store, store.newest_event_ms(), RaritySettings(day_mode=day_mode, match="seed-exact"))
    store.close()
    builtin = invoke("hunt", "--db", db, "--match", "seed-exact", "--day-mode", day_mode, "--format", "json")
    builtin_rows = sorted((tuple(r[k] for k in (*KEY, "day_count"))
                           for r in map(json.loads, builtin.stdout.splitlines())), key=repr)
    assert rows == oracle == builtin_rows
    assert rows        # the shifted attacks leave rare keys in the 30-day window
