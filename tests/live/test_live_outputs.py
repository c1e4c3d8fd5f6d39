"""Live outputs: --metrics-file at every stats interval, and alerts shipped to a collector,
on a real `dfs-sensor live` on a veth fed with tcpreplay."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PCAPS
from tests.live.test_service import ATTACKS, BENIGN, LiveSensor
from tests.schema_check import check
from tests.sinks.test_http import LONG_FLUSH, CollectorProcess

pytestmark = pytest.mark.root


def metric_samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_file_is_rewritten_every_interval_and_parses(veth, tmp_path):
    prom = tmp_path / "dfs.prom"
    sensor = LiveSensor(tmp_path, veth.host, "--metrics-file", str(prom))
    sensor.wait_for(prom.exists, "the first metrics file")
    first = metric_samples(prom.read_text())
    assert first[("dfs_sensor_packets_total", ())] == 0
    veth.replay(ATTACKS[0])
    sensor.wait_for(lambda: sensor.lines(sensor.alerts), "an alert")
    sensor.wait_for(lambda: ("dfs_sensor_alerts_total", (("rule", "dfscoerce-rare-dfsnm-root-call"),))
                    in metric_samples(prom.read_text()), "the alert in the metrics")
    assert sensor.stop() == 0
    last = metric_samples(prom.read_text())
    final = sensor.stats()[-1]
    assert last[("dfs_sensor_packets_total", ())] == final["packets"] > 0
    assert last[("dfs_sensor_kernel_drops_total", (("interface", veth.host),))] == 0
    assert last[("dfs_sensor_kernel_packets_total", (("interface", veth.host),))] == final["kernel_packets"]
    assert last[("dfs_sensor_events_total", ())] == final["events"] > 0
    assert last[("dfs_sensor_resident_memory_bytes", ())] > 10_000_000
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("dfs.prom")] == ["dfs.prom"]


def test_live_alerts_reach_a_collector_that_comes_back(veth, tmp_path):
    """The collector is down when the attack is seen, comes back, and gets the alert."""
    collector = CollectorProcess(tmp_path)
    sensor = LiveSensor(tmp_path, veth.host, "--alerts", f"http://127.0.0.1:{collector.port}/in")
    try:
        veth.replay(ATTACKS[0])
        sensor.wait_for(lambda: any("Connection refused" in line for line in sensor.stderr), "the outage")
        collector.start()
        sensor.wait_for(lambda: collector.lines(), "the alerts at the collector", timeout=60)
        assert sensor.stop() == 0
    finally:
        if collector.proc is not None:
            collector.kill()
    alerts = [check("alert", line) for line in collector.lines()]
    assert {a["rule"]["id"] for a in alerts} >= {"dfscoerce-rare-dfsnm-root-call"}
    stored = subprocess.run([sys.executable, "-m", "sensor.cli", "alerts", "--db", str(sensor.db), "--format",
                             "json"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert {a["alert_id"] for a in alerts} == {json.loads(line)["alert_id"] for line in stored}


def test_live_stops_promptly_with_a_dead_collector_and_the_next_run_delivers(veth, tmp_path):
    """SIGTERM while the collector refuses: the sensor exits without waiting out the flush
    bound, the alerts stay in the spool, and the next run (a replay with the same store and
    target) delivers them."""
    collector = CollectorProcess(tmp_path)
    target = f"http://127.0.0.1:{collector.port}/in"
    config = tmp_path / "c.toml"
    config.write_text(f"[outputs]\nspool_flush_seconds = {LONG_FLUSH}\n")
    sensor = LiveSensor(tmp_path, veth.host, "--alerts", target, "--config", str(config))
    veth.replay(ATTACKS[0])
    sensor.wait_for(lambda: any("Connection refused" in line for line in sensor.stderr), "the outage")
    sensor.wait_for(lambda: subprocess.run([sys.executable, "-m", "sensor.cli", "alerts", "--db", str(sensor.db),
                                            "--format", "json"], capture_output=True, text=True).stdout,
                    "the alerts stored")
    started = time.monotonic()
    assert sensor.stop() == 0
    assert time.monotonic() - started < LONG_FLUSH
    assert any("wait in the spool" in line for line in sensor.stderr)
    collector.start()
    try:
        subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(sensor.db), "--alerts", target,
                        str(BENIGN[0])], capture_output=True, text=True, check=True, timeout=120)
    finally:
        collector.kill()
    stored = subprocess.run([sys.executable, "-m", "sensor.cli", "alerts", "--db", str(sensor.db), "--format",
                             "json"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert sorted(collector.lines()) == sorted(stored)


def stored_alerts(db: Path) -> list[str]:
    return subprocess.run([sys.executable, "-m", "sensor.cli", "alerts", "--db", str(db), "--format", "json"],
                          capture_output=True, text=True, check=True).stdout.splitlines()


def spool_files(pid: str, spool_dir: Path) -> list[str]:
    """The files in ``spool_dir`` process ``pid`` has open (a worker before its first alert: none)."""
    fds = Path(f"/proc/{pid}/fd")
    return sorted(link for link in (os.path.realpath(fd) for fd in fds.iterdir()) if link.startswith(str(spool_dir)))


def test_live_workers_deliver_a_previous_runs_spool_and_their_own_alerts(veth, tmp_path):
    """live --workers 2 on a sink whose spool a previous run left alerts in: the parent sends
    them from the start, so its spool connections were open when it forked the workers (a
    SQLite connection must not cross a fork; they are closed for it now: on main each worker
    held the parent's five spool descriptors before its first alert). Every alert, the
    previous run's, the workers' and the parent's coercion alert, reaches the collector, and
    nothing else does; at least once, as README says: three processes send from one spool, and
    one may send a row another has sent but not yet deleted (it arrives twice, the same line)."""
    collector = CollectorProcess(tmp_path)
    target = f"http://127.0.0.1:{collector.port}/in"
    config = tmp_path / "c.toml"
    config.write_text(f'[outputs]\nspool_dir = "{tmp_path / "spool"}"\n')
    previous = tmp_path / "previous.db"                 # its alerts stay in the spool: the collector is down
    subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(previous), "--alerts", target,
                    "--config", str(config), str(PCAPS / "dfscoerce-smb21.pcap")],
                   capture_output=True, text=True, check=True, timeout=120)
    left = stored_alerts(previous)
    assert left
    collector.start()
    try:
        sensor = LiveSensor(tmp_path, veth.host, "--alerts", target, "--config", str(config), "--workers", "2")
        sensor.wait_for(lambda: sum("capturing on" in line for line in sensor.stderr) == 2, "every worker")
        sensor.wait_for(lambda: set(collector.lines()) >= set(left), "the previous run's alerts")
        workers = Path(f"/proc/{sensor.proc.pid}/task/{sensor.proc.pid}/children").read_text().split()
        assert len(workers) == 2 and [spool_files(pid, tmp_path / "spool") for pid in workers] == [[], []]
        veth.replay(PCAPS / "coerced-auth-clear.pcap")
        veth.replay(PCAPS / "dfscoerce-ipv6.pcap")
        sensor.wait_for(lambda: {json.loads(line)["rule"]["id"] for line in stored_alerts(sensor.db)}
                        >= {"coercion-confirmed", "dfscoerce-rare-dfsnm-root-call"}, "the alerts stored")
        sensor.wait_for(lambda: set(collector.lines()) >= set(left + stored_alerts(sensor.db)),
                        "every alert at the collector")
        assert sensor.stop() == 0               # what was stored later goes out in the stop's flush
    finally:
        collector.kill()
    expected = left + stored_alerts(sensor.db)
    assert sorted(set(collector.lines())) == sorted(expected) and len(set(expected)) == len(expected)
    assert not [line for line in sensor.stderr if "Traceback" in line or "locked" in line]


def test_sighup_reloads_the_allowlist(veth, tmp_path):
    allowlist = tmp_path / "allow.toml"
    allowlist.write_text('[[allow]]\nhost = "192.0.2.1"\nreason = "nothing here"\n')
    sensor = LiveSensor(tmp_path, veth.host, "--allowlist", str(allowlist))
    allowlist.write_text('[[allow]]\nclient = "10.0.0.66"\nreason = "the lab attacker, for the test"\n')
    sensor.proc.send_signal(signal.SIGHUP)
    sensor.wait_for(lambda: any("allow-list reloaded: 1 entry" in line for line in sensor.stderr), "the reload")
    veth.replay(ATTACKS[0])
    sensor.wait_for(lambda: sensor.stats() and sensor.stats()[-1]["events"] > 0, "the attack's events")
    time.sleep(1.0)     # anything it would raise is in
    assert sensor.stop() == 0
    assert sensor.lines(sensor.alerts) == []
    held = subprocess.run([sys.executable, "-m", "sensor.cli", "alerts", "--db", str(sensor.db), "--suppressed",
                           "--format", "json"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert held and {json.loads(line)["suppressed_by"] for line in held} == {"the lab attacker, for the test"}
    assert any("suppressed by the allow-list" in line for line in sensor.stderr)


def test_a_full_alert_partition_does_not_stop_capture(veth, tmp_path, full_disk):
    """Alerts to a full tmpfs: capture and storage go on, stderr says so once, and the alert
    is written once space is back (the next write retries the held lines)."""
    mount, filler = full_disk
    alerts = mount / "alerts.jsonl"
    sensor = LiveSensor(tmp_path, veth.host, "--alerts", str(alerts))
    veth.replay(ATTACKS[0])
    sensor.wait_for(lambda: any("No space left on device" in line for line in sensor.stderr), "the warning")
    filler.unlink()                                  # space is back; the next alert retries
    veth.replay(ATTACKS[1])
    sensor.wait_for(lambda: any("writing again" in line for line in sensor.stderr), "the recovery")
    assert sensor.proc.poll() is None                # capture never stopped
    assert sensor.stop() == 0
    assert sum("No space left on device" in line for line in sensor.stderr) == 1
    written = [check("alert", line) for line in alerts.read_text().splitlines()]
    stored = subprocess.run([sys.executable, "-m", "sensor.cli", "alerts", "--db", str(sensor.db), "--format",
                             "json"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert sorted(a["alert_id"] for a in written) == sorted(json.loads(line)["alert_id"] for line in stored)


def test_live_evidence_holds_the_attack_call(veth, tmp_path):
    evidence = tmp_path / "evidence"
    sensor = LiveSensor(tmp_path, veth.host, "--evidence", str(evidence))
    veth.replay(ATTACKS[0])
    sensor.wait_for(lambda: sensor.lines(sensor.alerts), "an alert")
    assert sensor.stop() == 0
    alerts = sensor.lines(sensor.alerts)
    assert sorted(p.name for p in evidence.iterdir()) == sorted(f"{a['alert_id']}.pcap" for a in alerts)
    for alert in alerts:
        if alert["rule"]["id"] != "dfscoerce-rare-dfsnm-root-call":
            continue
        pcap = evidence / f"{alert['alert_id']}.pcap"
        calls = subprocess.run(["tshark", "-r", str(pcap), "-Y", "dcerpc.pkt_type == 0 && dcerpc.opnum == "
                                f"{alert['action_rpc_func_opnum']}", "-T", "fields", "-e", "ip.src"],
                               capture_output=True, text=True, check=True).stdout.split()
        assert calls == [alert["src_ip"]]


COERCED = PCAPS / "coerced-auth-clear.pcap"
# Frame 47 of COERCED is the victim's NTLMSSP AUTHENTICATE to the listener: the coercion alert.
AUTHENTICATE_FRAME = 47
FLOW_FIELDS = ("ip.src", "tcp.srcport", "tcp.seq_raw", "tcp.ack_raw", "tcp.len", "frame.len")


def _flow_frames(pcap: Path, display_filter: str = "tcp") -> list[tuple[str, ...]]:
    out = subprocess.run(["tshark", "-r", str(pcap), "-Y", display_filter, "-T", "fields",
                          *[arg for f in FLOW_FIELDS for arg in ("-e", f)]],
                         capture_output=True, text=True, check=True).stdout
    return sorted(tuple(line.split("\t")) for line in out.splitlines())


@pytest.mark.parametrize("workers", ["1", "2"])
def test_live_coercion_evidence_holds_both_flows_and_what_came_after(veth, tmp_path, workers):
    """The capture in two halves: up to the back-authentication's AUTHENTICATE, then (once the
    alert is out) the rest. The coercion alert's pcap opens in tshark and holds every frame of
    the call's flow and of the back-authentication's, those sent after the alert included; with
    --workers 2 the parent raised the alert and the workers that held the flows wrote them."""
    before, after = tmp_path / "before.pcap", tmp_path / "after.pcap"
    subprocess.run(["editcap", "-r", str(COERCED), str(before), f"1-{AUTHENTICATE_FRAME}"], check=True)
    subprocess.run(["editcap", "-r", str(COERCED), str(after), f"{AUTHENTICATE_FRAME + 1}-1000"], check=True)
    evidence = tmp_path / "evidence"
    sensor = LiveSensor(tmp_path, veth.host, "--evidence", str(evidence), "--workers", workers)
    sensor.wait_for(lambda: sum("capturing on" in line for line in sensor.stderr) == int(workers), "every worker")
    veth.replay(before)
    confirmed = lambda: [a for a in sensor.lines(sensor.alerts) if a["rule"]["id"] == "coercion-confirmed"]
    sensor.wait_for(confirmed, "the coercion alert")
    veth.replay(after)
    time.sleep(1.5)     # the frames after the alert pass; the workers' idle ticks take the request
    assert sensor.stop() == 0
    [alert] = confirmed()
    # every alert has its pcap: the rarity rule's from the worker that decoded the call
    assert sorted(p.name for p in evidence.iterdir()) == \
        sorted(f"{a['alert_id']}.pcap" for a in sensor.lines(sensor.alerts))
    pcap = evidence / f"{alert['alert_id']}.pcap"
    assert _flow_frames(pcap) == _flow_frames(COERCED)
    # the attack call, the back-authentication, and its answer that came after the alert
    assert len(_flow_frames(pcap, "netdfs && dcerpc.pkt_type == 0 && dcerpc.opnum == 13")) == 1
    assert len(_flow_frames(pcap, 'ntlmssp.auth.username == "DC01$"')) == 1
    assert _flow_frames(pcap, "smb2.cmd == 1 && smb2.flags.response == 1 && smb2.nt_status == 0 && "
                              f"ip.dst == {alert['victim_ip']}") == \
        _flow_frames(COERCED, f"frame.number == {AUTHENTICATE_FRAME + 1}")
    assert not list(evidence.glob(".*.part"))
