"""A live sensor on a veth (tcpreplay) writing to a real PostgreSQL that stops: capture goes on
(packets and events keep counting, no kernel drop), the batches wait in the store's spool,
and once the server is back every event and alert arrives, in order, none twice."""
from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.live.test_service import ATTACKS, BENIGN, LiveSensor
from tests.store.postgres_server import PostgresServer

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer.start()      # cannot start: the test fails with the reason
    yield server
    server.stop()


def decoded_events(tmp_path, captures) -> int:
    """How many events `dfs-sensor replay` decodes from the captures (into a SQLite store)."""
    tmp_path.mkdir()
    done = subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(tmp_path / "replay.db"),
                           "--alerts", "/dev/null", *map(str, captures)],
                          cwd=ROOT, check=True, capture_output=True, text=True, timeout=120)
    return int(done.stderr.split(" events (")[0].rsplit(" ", 1)[1].replace(",", ""))


def spooled_batches(prom) -> float:
    """The store spool gauge, summed over the workers' files (dfs.prom or dfs.workerN.prom)."""
    values = [sample.value for path in prom.parent.glob("dfs*.prom")
              for family in text_string_to_metric_families(path.read_text()) for sample in family.samples
              if sample.name == "dfs_sensor_store_spooled_batches"]
    assert values, "no dfs_sensor_store_spooled_batches in the metrics files"
    return sum(values)


def totals(sensor: LiveSensor, workers: int) -> dict | None:
    """The latest stats line of each decoder, summed (None until each has written one)."""
    latest = {line.get("worker"): line for line in sensor.stats()}
    if len(latest) < workers:
        return None
    return {key: sum(line[key] for line in latest.values())
            for key in ("packets", "kernel_drops", "events", "store_spooled")}


@pytest.mark.parametrize("workers", [1, 2])
def test_live_capture_goes_on_while_postgres_is_down_and_everything_arrives_after(postgres, veth, tmp_path,
                                                                                  workers):
    """With --workers 2 each decoder (and the parent's correlator) spools on its own."""
    url = postgres.create_database(f"live_outage_{workers}")
    conf = tmp_path / "sensor.toml"
    conf.write_text(f'[outputs]\nspool_dir = "{tmp_path / "spool"}"\n[store]\nretry_max_seconds = 0.5\n')
    prom = tmp_path / "dfs.prom"
    sensor = LiveSensor(tmp_path, veth.host, "--db", url, "--config", str(conf), "--metrics-file", str(prom),
                        "--workers", str(workers))
    try:
        first = decoded_events(tmp_path / "up", ATTACKS[:1])
        down_captures = ATTACKS[1:] + BENIGN
        expected = first + decoded_events(tmp_path / "down", down_captures)
        veth.replay(ATTACKS[0])
        sensor.wait_for(lambda: sensor.lines(sensor.alerts), "an alert while the database is up")
        sensor.wait_for(lambda: (totals(sensor, workers) or {}).get("events") == first, "its events counted")
        up = totals(sensor, workers)
        alerts_before = len(sensor.lines(sensor.alerts))
        postgres.pause()
        try:
            for pcap in down_captures:
                veth.replay(pcap)
            sensor.wait_for(lambda: totals(sensor, workers)["events"] == expected, "the events seen while it is down")
            down = totals(sensor, workers)
            sensor.wait_for(lambda: spooled_batches(prom) > 0, "the spool in the metrics file")
        finally:
            postgres.resume()
        assert down["packets"] > up["packets"] and down["kernel_drops"] == 0
        assert down["store_spooled"] > 0
        assert any("capture goes on, batches wait in a spool" in line for line in sensor.stderr)
        sensor.wait_for(lambda: totals(sensor, workers)["store_spooled"] == 0, "the delivery", timeout=60)
        sensor.wait_for(lambda: spooled_batches(prom) == 0, "the empty spool in the metrics file")
        assert any("reachable again" in line for line in sensor.stderr)
    finally:
        assert sensor.stop() == 0
    final = totals(sensor, workers)
    assert final["kernel_drops"] == 0 and final["events"] == expected
    logged = sensor.lines(sensor.events)
    alerts = sensor.lines(sensor.alerts)
    with psycopg.connect(url) as conn:
        stored = [row[0] for row in conn.execute("SELECT event_id FROM events")]
        alert_ids = [row[0] for row in conn.execute("SELECT alert_id FROM alert_records")]
    assert len(stored) == expected                                          # every event arrived
    assert sorted(e["event_id"] for e in logged) == sorted(stored)          # and was logged once
    flows: dict[str, list[int]] = {}
    for e in logged:
        flows.setdefault(e["net_community_id"], []).append(e["event_timestamp"])
    assert all(times == sorted(times) for times in flows.values())        # each flow in capture order
    if workers == 1:                                                        # one decoder: all of them
        times = [e["event_timestamp"] for e in logged]
        assert times == sorted(times)
    assert sorted(a["alert_id"] for a in alerts) == sorted(alert_ids)       # every alert, once
    assert len(alerts) > alerts_before                                      # raised by what came while down
