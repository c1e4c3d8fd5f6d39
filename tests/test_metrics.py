"""--metrics-file: Prometheus text format that prometheus_client's own parser reads back."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from sensor.metrics import Snapshot, render, worker_path, write_textfile


def samples(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_counter_parses_with_its_labels(tmp_path):
    snap = Snapshot(packets=1200, flows=7, events=3, rss_bytes=40_000_000,
                    interfaces={"eth1": (1250, 50), 'we"ird\\if': (1, 0)},
                    alerts_by_rule={"coercion-confirmed": 1, "dfscoerce-rare-dfsnm-root-call": 2},
                    anomalies={"tcp_gap": 4}, spool_lines={"alerts": 9}, spool_dropped={"alerts": 2},
                    spool_lock_waits={"alerts": 6}, lost_lines={"events": 5}, rejected_lines={"alerts": 3}, store_spooled=4, store_spool_dropped=2000, labels={"worker": "2"})
    path = tmp_path / "dfs.prom"
    write_textfile(str(path), render(snap, now=1764300000.0))
    got = samples(path.read_text())
    w = ("worker", "2")
    assert got[("dfs_sensor_packets_total", (w,))] == 1200
    assert got[("dfs_sensor_kernel_drops_total", (("interface", "eth1"), w))] == 50
    assert got[("dfs_sensor_kernel_packets_total", (("interface", 'we"ird\\if'), w))] == 1
    assert got[("dfs_sensor_alerts_total", (("rule", "dfscoerce-rare-dfsnm-root-call"), w))] == 2
    assert got[("dfs_sensor_anomalies_total", (("name", "tcp_gap"), w))] == 4
    assert got[("dfs_sensor_spool_lines", (("output", "alerts"), w))] == 9
    assert got[("dfs_sensor_spool_dropped_total", (("output", "alerts"), w))] == 2
    assert got[("dfs_sensor_spool_lock_waits_total", (("output", "alerts"), w))] == 6
    assert got[("dfs_sensor_output_lost_lines_total", (("output", "events"), w))] == 5
    assert got[("dfs_sensor_output_rejected_lines_total", (("output", "alerts"), w))] == 3
    assert got[("dfs_sensor_store_spooled_batches", (w,))] == 4
    assert got[("dfs_sensor_store_spool_dropped_total", (w,))] == 2000
    assert got[("dfs_sensor_resident_memory_bytes", (w,))] == 40_000_000
    assert got[("dfs_sensor_last_update_timestamp_seconds", (w,))] == 1764300000.0
    assert [p.name for p in tmp_path.iterdir()] == ["dfs.prom"]      # no temporary file left


def test_worker_files_sit_beside_each_other():
    assert worker_path("/var/lib/node_exporter/dfs.prom", None) == "/var/lib/node_exporter/dfs.prom"
    assert worker_path("/var/lib/node_exporter/dfs.prom", 3) == "/var/lib/node_exporter/dfs.worker3.prom"


def test_the_tshark_engine_leaves_out_what_it_cannot_count(tmp_path):
    """--engine tshark: no frames-read, kernel or flow series (dumpcap owns the socket, tshark
    hands over only what its display filter passed); the frames tshark decoded instead."""
    snap = Snapshot(packets=None, flows=None, events=3, rss_bytes=90_000_000, interfaces=None, decoded_frames=420,
                    alerts_by_rule={"coercion-confirmed": 1})
    got = samples(render(snap, now=1764300000.0))
    names = {name for name, _ in got}
    assert not names & {"dfs_sensor_packets_total", "dfs_sensor_kernel_packets_total",
                        "dfs_sensor_kernel_drops_total", "dfs_sensor_flows_total"}
    assert got[("dfs_sensor_decoded_frames_total", ())] == 420
    assert got[("dfs_sensor_events_total", ())] == 3
    assert got[("dfs_sensor_alerts_total", (("rule", "coercion-confirmed"),))] == 1
    native = samples(render(Snapshot(packets=1, flows=1, events=0, rss_bytes=1)))
    assert "dfs_sensor_decoded_frames_total" not in {name for name, _ in native}
