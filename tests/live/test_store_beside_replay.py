"""Issue 18 item 1, the common case: `dfs-sensor replay` into the store of a running live
sensor. Both finish (exit 0) and the store holds every event of each, once, with the
alerts each would have raised alone."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import PCAPS, ROOT
from tests.live.test_service import LiveSensor, store_is_clean
from tests.store.workload import repeated

pytestmark = pytest.mark.root

# Different detector keys (IPv4 vs IPv6 client), so the live sensor's and the replay's
# alerts do not depend on which stored first.
LIVE_CAPTURE, REPLAY_CAPTURE = PCAPS / "dfscoerce-ipv6.pcap", PCAPS / "dfscoerce-smb21.pcap"
LIVE_LOOPS = 150          # 300 calls at 2,000 frames/s: about 3 s of traffic
REPLAY_COPIES = 1000      # 2,000 events over 2 days


def alerts_of(db, client: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT rule, key, day, record FROM alerts WHERE actor_remote_ip = ? "
                        "ORDER BY 1, 2, 3", (client,)).fetchall()
    conn.close()
    return rows


def test_a_replay_beside_a_live_sensor_stores_everything_of_both(veth, tmp_path):
    capture = repeated(REPLAY_CAPTURE, tmp_path / "replay.pcap", REPLAY_COPIES, days=2)
    oracle = tmp_path / "oracle.db"
    subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(oracle), "--alerts",
                    "/dev/null", str(capture)], cwd=ROOT, check=True, capture_output=True, timeout=300)

    sensor = LiveSensor(tmp_path, veth.host)
    sender = subprocess.Popen(["ip", "netns", "exec", veth.namespace, "tcpreplay", "-q", "--pps=2000",
                               f"--loop={LIVE_LOOPS}", "-i", veth.peer, str(LIVE_CAPTURE)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    replay = subprocess.Popen([sys.executable, "-m", "sensor.cli", "replay", "--db", str(sensor.db),
                               "--alerts", "/dev/null", str(capture)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, replay_err = replay.communicate(timeout=300)
        assert sender.wait(120) == 0
        sensor.wait_for(lambda: len(sensor.lines(sensor.events)) >= 2 * LIVE_LOOPS, "the live events")
    finally:
        sender.kill()
        replay.kill()
    assert replay.returncode == 0, replay_err
    assert sensor.stop() == 0, sensor.stderr
    final = sensor.stats()[-1]
    assert final["final"] is True and final["kernel_drops"] == 0

    live_ids = [e["event_id"] for e in sensor.lines(sensor.events)]
    conn = sqlite3.connect(oracle)
    replay_ids = [r[0] for r in conn.execute("SELECT event_id FROM events")]
    conn.close()
    conn = sqlite3.connect(sensor.db)
    stored = [r[0] for r in conn.execute("SELECT event_id FROM events")]
    conn.close()
    assert len(live_ids) == 2 * LIVE_LOOPS and len(replay_ids) == 2 * REPLAY_COPIES
    assert sorted(stored) == sorted(live_ids + replay_ids)          # every event, once
    # The replay's alerts are those of the replay alone; the live sensor's: one per opnum
    # for today, counting every call it saw.
    assert alerts_of(sensor.db, "10.0.0.66") == alerts_of(oracle, "10.0.0.66")
    live_alerts = [json.loads(r[3]) for r in alerts_of(sensor.db, "fd00::66")]
    assert sorted((a["action_rpc_func_opnum"], a["hits"]) for a in live_alerts) == \
        [(12, LIVE_LOOPS), (13, LIVE_LOOPS)]
    store_is_clean(sensor.db)
