"""A live sensor on a veth (tcpreplay) writing to a real PostgreSQL that stops, hangs (SIGSTOP)
or is down when the sensor starts: capture goes on (packets and events keep counting, no
kernel drop), the batches wait in the store's spool, and once the server is back every event
and alert arrives, in order, none twice."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.live.test_service import ATTACKS, BENIGN, LiveSensor
from tests.store.postgres_server import PASSWORD, PostgresServer

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


# How the server goes away: stopped as an administrator would, or hung (SIGSTOP: the
# connections stay up, nothing answers; a batch gives up after BATCH_DEADLINE_SECONDS).
OUTAGES = {"stopped": (PostgresServer.pause, PostgresServer.resume),
           "hung": (PostgresServer.freeze, PostgresServer.thaw)}


def live_sensor(veth, tmp_path, url: str, workers: int) -> tuple[LiveSensor, object]:
    """A live sensor writing to the database at ``url`` (spool retries every 0.5 s); its metrics file."""
    conf = tmp_path / "sensor.toml"
    conf.write_text(f'[outputs]\nspool_dir = "{tmp_path / "spool"}"\n[store]\nretry_max_seconds = 0.5\n')
    prom = tmp_path / "dfs.prom"
    sensor = LiveSensor(tmp_path, veth.host, "--db", url, "--config", str(conf), "--metrics-file", str(prom),
                        "--workers", str(workers))
    return sensor, prom


@pytest.mark.parametrize("workers,outage", [(1, "stopped"), (2, "stopped"), (1, "hung")])
def test_live_capture_goes_on_while_postgres_is_down_and_everything_arrives_after(postgres, veth, tmp_path,
                                                                                  workers, outage):
    """With --workers 2 each decoder (and the parent's correlator) spools on its own."""
    stop, start = OUTAGES[outage]
    url = postgres.create_database(f"live_outage_{workers}_{outage}")
    sensor, prom = live_sensor(veth, tmp_path, url, workers)
    try:
        first = decoded_events(tmp_path / "up", ATTACKS[:1])
        down_captures = ATTACKS[1:] + BENIGN
        expected = first + decoded_events(tmp_path / "down", down_captures)
        veth.replay(ATTACKS[0])
        sensor.wait_for(lambda: sensor.lines(sensor.alerts), "an alert while the database is up")
        sensor.wait_for(lambda: (totals(sensor, workers) or {}).get("events") == first, "its events counted")
        up = totals(sensor, workers)
        alerts_before = len(sensor.lines(sensor.alerts))
        stop(postgres)
        try:
            for pcap in down_captures:
                veth.replay(pcap)
            sensor.wait_for(lambda: totals(sensor, workers)["events"] == expected, "the events seen while it is down")
            down = totals(sensor, workers)
            sensor.wait_for(lambda: spooled_batches(prom) > 0, "the spool in the metrics file")
        finally:
            start(postgres)
        assert down["packets"] > up["packets"] and down["kernel_drops"] == 0
        assert down["store_spooled"] > 0
        assert any("capture goes on, batches wait in a spool" in line for line in sensor.stderr)
        if outage == "hung":       # the batch in flight gave up by the client's clock
            assert any("no answer from the server within" in line for line in sensor.stderr)
        sensor.wait_for(lambda: totals(sensor, workers)["store_spooled"] == 0, "the delivery", timeout=60)
        sensor.wait_for(lambda: spooled_batches(prom) == 0, "the empty spool in the metrics file")
        assert any("reachable again" in line for line in sensor.stderr)
    finally:
        assert sensor.stop() == 0
    everything_arrived_once(sensor, url, workers, expected)
    assert len(sensor.lines(sensor.alerts)) > alerts_before                 # raised by what came while down


@pytest.mark.parametrize("workers", [1, 2])
def test_a_live_sensor_started_while_postgres_is_down_captures_and_delivers_when_it_starts(postgres, veth,
                                                                                          tmp_path, workers):
    """One warning line at start from each process that writes (each decoder, and with
    --workers the parent's correlator), capture and spooling at once; the server
    starts: the schema is made, the spool delivered, every event and alert arrives once, in
    order. With --workers 2 the parent does not need the database to start its decoders."""
    url = postgres.create_database(f"live_down_at_start_{workers}")
    captures = ATTACKS + BENIGN
    expected = decoded_events(tmp_path / "all", captures)
    postgres.pause()
    try:
        sensor, prom = live_sensor(veth, tmp_path, url, workers)
    except BaseException:
        postgres.resume()
        raise
    try:
        try:
            for pcap in captures:
                veth.replay(pcap)
            sensor.wait_for(lambda: (totals(sensor, workers) or {}).get("events") == expected, "the events, spooled")
            sensor.wait_for(lambda: spooled_batches(prom) > 0, "the spool in the metrics file")
            assert sensor.lines(sensor.alerts) == []        # alerts are judged when their batch is stored
        finally:
            postgres.resume()
        warnings = [line for line in sensor.stderr if "at start (the schema is checked when it answers)" in line]
        assert len(warnings) == workers + (workers > 1) and "capture goes on, batches wait in a spool" in warnings[0]
        sensor.wait_for(lambda: totals(sensor, workers)["store_spooled"] == 0, "the delivery", timeout=60)
    finally:
        assert sensor.stop() == 0
    everything_arrived_once(sensor, url, workers, expected)
    assert sensor.lines(sensor.alerts)


def everything_arrived_once(sensor: LiveSensor, url: str, workers: int, expected: int) -> None:
    """Every decoded event stored and logged once, each flow's in capture order (all of them
    with one decoder); every stored alert written once."""
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


def test_a_live_sensor_down_at_start_with_a_wrong_password_exits_1_when_the_server_answers(postgres, veth,
                                                                                           tmp_path):
    """Spooling while the server is down; once it answers and refuses the password: one error
    line, exit 1, the spooled batches kept for the next start (no traceback, no password)."""
    url = postgres.create_database("live_wrong_password")
    wrong = url.replace(PASSWORD, "not-the-password")
    postgres.pause()
    try:
        sensor, _ = live_sensor(veth, tmp_path, wrong, 1)
        veth.replay(ATTACKS[0])
        sensor.wait_for(lambda: (totals(sensor, 1) or {}).get("store_spooled", 0) > 0, "a spooled batch")
    finally:
        postgres.resume()
    assert sensor.proc.wait(60) == 1
    rc = sensor.stop()
    errors = [line for line in sensor.stderr if line.startswith("dfs-sensor: error:")]
    assert rc == 1 and len(errors) == 1, sensor.stderr
    assert "password authentication failed" in errors[0] and "stay in the spool" in errors[0]
    assert not any("Traceback" in line or "not-the-password" in line for line in sensor.stderr)
    with sqlite3.connect(next((tmp_path / "spool").glob("store-*.db"))) as spool:
        assert spool.execute("SELECT count(*) FROM spool").fetchone()[0] > 0
