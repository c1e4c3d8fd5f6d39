"""`dfs-sensor live --engine tshark` end to end: dumpcap + tshark on a veth, the lab's attack
captures replayed into it with tcpreplay, stopped with SIGTERM; the alerts must be those
`dfs-sensor replay --engine tshark` raises on the same captures (the engines' own
differences are corpus-diff's business, tests/tshark/test_corpus_diff.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, requires_tshark
from tests.live.conftest import _missing_requirement, make_veth, remove_veth
from tests.live.test_service import ATTACKS, BENIGN, LiveSensor, comparable, store_is_clean

pytestmark = [requires_tshark, pytest.mark.skipif(_missing_requirement() is not None,
                                                  reason=str(_missing_requirement()))]


@pytest.fixture(scope="module")
def veth():
    pair = make_veth(f"{os.getpid() % 10000}t")
    yield pair
    remove_veth(pair)


def tshark_replay(tmp: Path, captures: list[Path]) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--engine", "tshark",
                           "--db", str(tmp / "replay.db"), *map(str, captures)],
                          cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.skipif(not ATTACKS, reason="no attack capture in pcaps/manifest.json")
def test_live_tshark_alerts_equal_replay(veth, tmp_path):
    sensor = LiveSensor(tmp_path, veth.host, "--engine", "tshark")
    assert any("(tshark engine)" in line for line in sensor.stderr)
    veth.replay(ATTACKS[0])
    sensor.wait_for(lambda: sensor.lines(sensor.alerts), f"an alert from {ATTACKS[0].name}")
    for pcap in ATTACKS[1:] + BENIGN:
        veth.replay(pcap)
    sensor.wait_for(lambda: sensor.stats() and sensor.stats()[-1]["packets_decoded"] > 0, "stats")
    assert sensor.stop() == 0
    live = sensor.lines(sensor.alerts)
    replayed = tshark_replay(tmp_path, ATTACKS + BENIGN)
    assert replayed
    assert sorted(json.dumps(comparable(a)) for a in live) == sorted(json.dumps(comparable(a)) for a in replayed)
    assert sensor.stats()[-1]["final"] is True
    assert any("packets n/a" in line for line in sensor.stderr)
    store_is_clean(sensor.db)


@pytest.mark.skipif(not ATTACKS, reason="no attack capture in pcaps/manifest.json")
def test_live_tshark_metrics_file_parses_and_counts_what_tshark_saw(veth, tmp_path):
    prom = tmp_path / "dfs.prom"
    sensor = LiveSensor(tmp_path, veth.host, "--engine", "tshark", "--metrics-file", str(prom))
    veth.replay(ATTACKS[0])
    sensor.wait_for(lambda: sensor.lines(sensor.alerts), f"an alert from {ATTACKS[0].name}")
    sensor.wait_for(prom.exists, "the metrics file")
    assert sensor.stop() == 0          # the file is written once more at exit
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for family in text_string_to_metric_families(prom.read_text()) for s in family.samples}
    alerts = Counter(a["rule"]["id"] for a in sensor.lines(sensor.alerts))
    assert {labels[0][1]: value for (name, labels), value in got.items()
            if name == "dfs_sensor_alerts_total"} == alerts
    assert got[("dfs_sensor_events_total", ())] == len(sensor.lines(sensor.events))
    assert got[("dfs_sensor_decoded_frames_total", ())] == sensor.stats()[-1]["packets_decoded"] > 0
    assert got[("dfs_sensor_resident_memory_bytes", ())] > 10_000_000
    assert not {name for name, _ in got} & {"dfs_sensor_packets_total", "dfs_sensor_kernel_drops_total",
                                           "dfs_sensor_flows_total"}


def test_live_tshark_unusable_settings_are_one_line_errors(veth, tmp_path):
    # the filter is compiled before dumpcap starts: a bad one is a usage error, as with native
    for flags, code, message in ((["--user", "nobody"], 2, "cannot drop privileges"),
                                 (["--workers", "2", "--allow-root"], 2, "--workers is for the native engine"),
                                 (["--ring-mb", "64", "--allow-root"], 2, "--ring-mb is for the native engine"),
                                 (["--evidence", str(tmp_path / "ev"), "--allow-root"], 2,
                                  "--evidence is for the native engine"),
                                 (["--bpf", "tcp port nosuchport", "--allow-root"], 2,
                                  "bad capture filter 'tcp port nosuchport'")):
        proc = subprocess.run([sys.executable, "-m", "sensor.cli", "live", "-i", veth.host, "--engine", "tshark",
                               "--db", str(tmp_path / "s.db"), *flags],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == code and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
