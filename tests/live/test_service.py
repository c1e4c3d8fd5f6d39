"""`dfs-sensor live` end to end: a real process on a veth, frames replayed into it with
tcpreplay, stopped with signals. Compared against `dfs-sensor replay` on the same captures."""
from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from scapy.all import IP, TCP, Ether, Raw, wrpcap

from tests.conftest import PCAPS, ROOT, load_manifest

pytestmark = pytest.mark.root

TIMEOUT = 30
MANIFEST = load_manifest()
ATTACKS = [PCAPS / n for n, e in sorted(MANIFEST.items()) if e["should_alert"]]
BENIGN = [PCAPS / n for n, e in sorted(MANIFEST.items()) if not e["should_alert"]]


class LiveSensor:
    """`python -m sensor.cli live` on an interface; stderr collected line by line."""

    def __init__(self, tmp: Path, interface: str, *flags: str, user: str | None = None):
        self.tmp = tmp
        self.db, self.events, self.alerts = tmp / "sensor.db", tmp / "events.jsonl", tmp / "alerts.jsonl"
        privilege = ["--user", user] if user else ["--allow-root"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sensor.cli", "live", "-i", interface, "--db", str(self.db),
             "--events", str(self.events), "--alerts", str(self.alerts), "--stats-interval", "0.5",
             "--stats-json", *privilege, *flags],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True)
        self._reader.start()
        self.wait_for(lambda: any("capturing on" in line for line in self.stderr), "start-up")

    def wait_for(self, condition, what: str, timeout: float = TIMEOUT) -> float:
        started = time.monotonic()
        while not condition():
            assert self.proc.poll() is None or condition(), f"sensor exited during {what}: {self.stderr}"
            assert time.monotonic() - started < timeout, f"timed out waiting for {what}: {self.stderr}"
            time.sleep(0.02)
        return time.monotonic() - started

    def lines(self, path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def stats(self) -> list[dict]:
        return [json.loads(line) for line in list(self.stderr) if line.startswith('{"type":"stats"')]

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(TIMEOUT)
        finally:
            self.proc.kill()
        self._reader.join(TIMEOUT)
        return rc


def replay_cli(tmp: Path, captures: list[Path]) -> list[dict]:
    alerts = tmp / "replay-alerts.jsonl"
    subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(tmp / "replay.db"),
                    "--alerts", str(alerts), *map(str, captures)],
                   cwd=ROOT, check=True, capture_output=True, timeout=TIMEOUT)
    return [json.loads(line) for line in alerts.read_text().splitlines()]


def comparable(alert: dict) -> dict:
    """An alert without what depends on when and from which file it was seen (the alert id is
    rule + key + day, and the day is the capture's in replay, today's live)."""
    if "context" not in alert:   # a coercion alert: who was made to authenticate to whom
        return {k: alert[k] for k in ("rule", "victim_ip", "listener_ip", "client_ip", "user", "protocol")}
    context = {k: v for k, v in alert["context"].items() if k not in ("capture_file", "capture_frame")}
    return {k: v for k, v in alert.items()
            if k not in ("timestamp", "alert_id", "day", "first_seen", "last_seen", "event_ids", "context")} \
        | {"context": context}


def store_is_clean(db: Path) -> None:
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def stored_event_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT event_id FROM events")}


def test_live_alerts_equal_replay_within_a_second(veth, tmp_path):
    sensor = LiveSensor(tmp_path, veth.host)
    veth.replay(ATTACKS[0])
    latency = sensor.wait_for(lambda: sensor.lines(sensor.alerts), f"an alert from {ATTACKS[0].name}")
    for pcap in ATTACKS[1:] + BENIGN:
        veth.replay(pcap)
    time.sleep(1.0)   # what the last replay raises is in before the comparison
    assert sensor.stop() == 0
    live = sensor.lines(sensor.alerts)
    (tmp_path / "replay").mkdir()
    replayed = replay_cli(tmp_path / "replay", ATTACKS + BENIGN)
    assert replayed
    assert sorted(json.dumps(comparable(a)) for a in live) == sorted(json.dumps(comparable(a)) for a in replayed)
    assert latency < 1.0
    final = sensor.stats()[-1]
    assert final["final"] is True and final["kernel_drops"] == 0
    assert final["kernel_packets"] == final["packets"] > 0
    store_is_clean(sensor.db)


def test_benign_traffic_raises_no_alert_and_exits_cleanly(veth, tmp_path):
    sensor = LiveSensor(tmp_path, veth.host)
    for pcap in BENIGN:
        veth.replay(pcap)
    sensor.wait_for(lambda: any(s["packets"] for s in sensor.stats()), "the packets in the stats")
    assert sensor.stop(signal.SIGINT) == 0
    assert sensor.lines(sensor.alerts) == []
    assert sensor.stats()[-1]["final"] is True
    store_is_clean(sensor.db)


def test_sigterm_mid_stream_keeps_every_event_and_a_restart_continues(veth, tmp_path):
    sensor = LiveSensor(tmp_path, veth.host)
    sender = subprocess.Popen(["ip", "netns", "exec", veth.namespace, "tcpreplay", "-q", "--pps=2000",
                               "--loop=1000", "-i", veth.peer, str(ATTACKS[0])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sensor.wait_for(lambda: len(sensor.lines(sensor.events)) >= 4, "events while replaying")
        assert sensor.stop() == 0
        assert sender.poll() is None, "the replay ended before the stop: not mid-stream"
    finally:
        sender.kill()
        sender.wait(TIMEOUT)
    seen = {e["event_id"] for e in sensor.lines(sensor.events)}
    stored = stored_event_ids(sensor.db)
    assert seen and seen <= stored
    alerts = sensor.lines(sensor.alerts)
    store_is_clean(sensor.db)

    again = LiveSensor(tmp_path, veth.host)
    veth.replay(ATTACKS[0])
    again.wait_for(lambda: len(again.lines(again.events)) > len(seen), "events after the restart")
    assert again.stop() == 0
    assert stored_event_ids(again.db) > stored
    # Same keys on the same day: already alerted before the restart, so no second alert.
    assert again.lines(again.alerts) == alerts


def test_kernel_drops_of_a_full_ring_are_reported_per_interface_and_capture_goes_on(veth, tmp_path):
    """The sensor (with a 2 MiB ring, --ring-mb) is held (SIGSTOP) while more frames arrive
    than its ring buffers: the kernel drops the rest, and the stats report the drops for the
    interface and decode exactly the frames kept. Then the ring is free again and an attack
    replayed after it alerts."""
    frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.66", dst="10.0.0.10") \
        / TCP(sport=50000, dport=445, flags="A") / Raw(bytes(1400))
    burst = tmp_path / "burst.pcap"
    wrpcap(str(burst), [frame] * 1000)
    loops = 2 * (2 << 20) // (1000 * len(frame))     # twice what the ring holds
    sent = 1000 * loops
    sensor = LiveSensor(tmp_path, veth.host, "--ring-mb", "2")
    sensor.proc.send_signal(signal.SIGSTOP)
    try:
        veth.replay(burst, f"--loop={loops}")
    finally:
        sensor.proc.send_signal(signal.SIGCONT)

    def drained() -> bool:
        stats = sensor.stats()
        return bool(stats) and stats[-1]["kernel_packets"] == sent and \
            stats[-1]["packets"] + stats[-1]["kernel_drops"] == sent
    sensor.wait_for(drained, "the kept frames decoded")
    veth.replay(ATTACKS[0])
    sensor.wait_for(lambda: sensor.lines(sensor.alerts), f"an alert from {ATTACKS[0].name} after the drops")
    assert sensor.stop() == 0
    final = sensor.stats()[-1]
    drops = final["kernel_drops"]
    assert 0 < drops < sent
    assert final["interfaces"] == {veth.host: {"kernel_packets": final["kernel_packets"], "kernel_drops": drops}}
    assert final["packets"] == final["kernel_packets"] - drops > sent - drops
    store_is_clean(sensor.db)


def test_sighup_reopens_the_output_files(veth, tmp_path):
    sensor = LiveSensor(tmp_path, veth.host)
    rotated = tmp_path / "alerts.jsonl.1"
    sensor.alerts.rename(rotated)
    sensor.proc.send_signal(signal.SIGHUP)
    sensor.wait_for(sensor.alerts.exists, "the reopened alerts file", timeout=2.0)
    assert sensor.stop() == 0


def test_refuses_root_without_allow_root_or_user(veth, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sensor.cli", "live", "-i", veth.host,
                           "--db", str(tmp_path / "s.db")],
                          cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2
    assert "refusing to run as root" in proc.stderr and "--allow-root" in proc.stderr


@pytest.mark.parametrize("flags, message", [
    (["--bpf", "tcp port nosuchport"], "bad capture filter"),
    (["--workers", "65"], "at most 64"),
    (["--ring-mb", "0"], "'--ring-mb': 0 is not in the range 1<=x<=4096"),
])
def test_unusable_settings_exit_2_with_the_reason(veth, tmp_path, flags, message):
    proc = subprocess.run([sys.executable, "-m", "sensor.cli", "live", "-i", veth.host, "--allow-root",
                           "--db", str(tmp_path / "s.db"), *flags],
                          cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and message in proc.stderr


@pytest.fixture
def world_writable_dir():
    """pytest's tmp_path sits under a root-only directory; nobody needs a path it can reach."""
    path = Path(tempfile.mkdtemp(prefix="dfs-sensor-live-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def test_user_keeps_only_cap_net_raw(veth, world_writable_dir):
    # The store is created after the drop, as nobody.
    sensor = LiveSensor(world_writable_dir, veth.host, user="nobody")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{sensor.proc.pid}/status").read_text().splitlines())
    assert int(status["CapEff"], 16) == 0x2000          # CAP_NET_RAW alone
    assert int(status["CapPrm"], 16) == 0x2000
    assert int(status["CapBnd"], 16) == 0x2000
    assert int(status["CapAmb"], 16) == 0
    assert status["Uid"].split()[0] == "65534" and status["NoNewPrivs"].strip() == "1"
    for pcap in BENIGN:
        veth.replay(pcap)
    sensor.wait_for(lambda: any(s["packets"] for s in sensor.stats()), "packets as nobody")
    assert sensor.stop() == 0
    assert sensor.db.stat().st_uid == 65534
