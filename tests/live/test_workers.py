"""`dfs-sensor live --workers N`: AF_PACKET fanout into N processes sharing one SQLite store.

The alerts of two workers must equal those of one `dfs-sensor replay` of the same captures:
every flow whole in one worker (flow-symmetric hash), every alert key raised once per day
although two processes judge events against the same store."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from sensor.detect.rarity import RULE as RARE_RULE
from tests.conftest import PCAPS, ROOT
from tests.live.test_service import (ATTACKS, BENIGN, TIMEOUT, LiveSensor, comparable, store_is_clean)

# Captures of the same two alert keys (NetrDfsAddStdRoot and NetrDfsRemoveStdRoot from the
# lab attacker for \\10.0.0.66\share) over different SMB dialects and framings.
SAME_KEYS = ["dfscoerce-smb21.pcap", "dfscoerce-smb202.pcap", "dfscoerce-smb311-clear.pcap",
             "dfscoerce-split-writes.pcap"]


def _replay(tmp: Path, captures: list[Path]) -> tuple[list[dict], list[dict]]:
    """Alerts and events of one `dfs-sensor replay` of ``captures`` into a fresh store."""
    alerts, events = tmp / "replay-alerts.jsonl", tmp / "replay-events.jsonl"
    subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(tmp / "replay.db"),
                    "--alerts", str(alerts), "--events", str(events), *map(str, captures)],
                   cwd=ROOT, check=True, capture_output=True, timeout=TIMEOUT)
    return ([json.loads(line) for line in alerts.read_text().splitlines()],
            [json.loads(line) for line in events.read_text().splitlines()])


def _rare(alerts: list[dict]) -> list[dict]:
    """The DFSCoerce rule's alerts (the coercion correlator's pair a call with the victim's
    back-authentication on another flow, which the fanout hash may give another worker)."""
    return [a for a in alerts if a["rule"]["id"] == RARE_RULE]


# What an alert takes from the first hit of its key: the context, and the envelope's flow
# (client port, community id).
FIRST_HIT_FIELDS = ("context", "src_port", "community_id")


def _without_context(alert: dict) -> dict:
    return {k: v for k, v in comparable(alert).items() if k not in FIRST_HIT_FIELDS}


def _calls(events: list[dict]) -> Counter:
    """What a call was, without when it was captured (live and replay timestamps differ)."""
    return Counter((e["action_rpc_func_name"], e["actor_remote_ip"], e["agent_ip"],
                    e["action_rpc_func_str_call_fields"]) for e in events)


@pytest.mark.skipif(not all((PCAPS / name).exists() for name in SAME_KEYS), reason="lab captures missing")
def test_concurrent_writers_raise_each_key_once(tmp_path):
    """Four processes store events of the same two keys into one database at once: the
    BEGIN IMMEDIATE around store + detector makes the check-then-insert atomic."""
    db = tmp_path / "shared.db"
    procs = [subprocess.Popen([sys.executable, "-m", "sensor.cli", "replay", "--db", str(db),
                               "--alerts", str(tmp_path / f"alerts{i}.jsonl"), str(PCAPS / name)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i, name in enumerate(SAME_KEYS)]
    for proc in procs:
        assert proc.wait(TIMEOUT) == 0, proc.stderr.read()
    alerts = [json.loads(line) for i in range(len(SAME_KEYS))
              for line in (tmp_path / f"alerts{i}.jsonl").read_text().splitlines()]
    names = sorted(a["action_rpc_func_name"] for a in alerts)
    assert names == ["NetrDfsAddStdRoot", "NetrDfsRemoveStdRoot"]
    store_is_clean(db)


@pytest.mark.root
def test_two_workers_alert_as_one_replay_with_no_duplicates(veth, tmp_path):
    sensor = LiveSensor(tmp_path, veth.host, "--workers", "2")
    sensor.wait_for(lambda: sum("capturing on" in line for line in sensor.stderr) == 2, "both workers")
    for pcap in ATTACKS + BENIGN:
        veth.replay(pcap)
    time.sleep(1.0)     # what the last replay raises is in before the stop
    assert sensor.stop() == 0
    live_alerts, live_events = sensor.lines(sensor.alerts), sensor.lines(sensor.events)
    (tmp_path / "replay").mkdir()
    replay_alerts, replay_events = _replay(tmp_path / "replay", ATTACKS + BENIGN)
    assert _rare(replay_alerts)
    # Two workers store in parallel, so which of several hits of one key came first (and gave
    # the alert its context: client port, community id) is a race; the alerts themselves are not.
    assert sorted(json.dumps(_without_context(a)) for a in _rare(live_alerts)) == \
        sorted(json.dumps(_without_context(a)) for a in _rare(replay_alerts))
    assert _calls(live_events) == _calls(replay_events)
    finals = {s["worker"]: s for s in sensor.stats() if s.get("final")}
    assert sorted(finals) == [1, 2]
    assert all(s["kernel_drops"] == 0 for s in finals.values())
    # The kernel split the traffic: both workers decoded some, and together all of it once.
    assert all(s["packets"] > 0 for s in finals.values())
    assert sum(s["packets"] for s in finals.values()) == sum(s["kernel_packets"] for s in finals.values())
    store_is_clean(sensor.db)
