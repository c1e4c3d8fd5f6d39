"""Live capture at rising rates (issues 7, 14): tcpreplay a capture into a veth pair and
find the highest rate at which `dfs-sensor live` drops nothing and finds every attack call.

    .venv/bin/python bench/live_curve.py [--mbps 500,1000,2000,top] [--workers 1,2]
    .venv/bin/python bench/live_curve.py --capture pcaps/small/small.pcap --pps 100000,150000,200000,top --loops 5

Root. The sensor is pinned to core 0 (both cores with --workers 2) and tcpreplay to the last
core; the veth's far end sits in a network namespace, so nothing leaves the machine. On a
2-core machine tcpreplay and the veth's softirq work (the kernel copies each frame into the
ring on the sender's core) take that last core, which a second worker shares with them.

``--loops N`` sends the capture N times with ``tcpreplay --unique-ip`` (each pass's addresses
changed, so the passes are new flows): a rate counts as sustained only when the replay is
much longer than the ring can buffer (sensor.capture.live: 32 MiB per worker, about 70,000
frames of the small-message mix, half a second at 150k packets/s).

Per rate: the rate tcpreplay reached, kernel packets and drops (PACKET_STATISTICS, summed over
workers), packets decoded, attack calls found against the manifest (times N), the sensor's
CPU time per packet decoded (all its processes, from the replay's start to their exit: the
start-up before is left out), peak RSS per worker, and the load average of the machine at the
end of the step (1-minute).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SENSOR = REPO / ".venv" / "bin" / "dfs-sensor"
NAMESPACE, HOST, PEER = "dfsbench", "dfsbenchh", "dfsbenchn"
# Frames in the lab captures are up to 64 KiB (segmentation offload on the recording host).
VETH_MTU = 65535
ATTACK_OPNUMS = {12, 13}
# The sensor is done with a replay when its packet count has not moved for this long.
QUIET_SECONDS = 2.0
START_TIMEOUT = 30.0


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def veth_up() -> None:
    subprocess.run(["ip", "netns", "del", NAMESPACE], capture_output=True)
    sh("ip", "netns", "add", NAMESPACE)
    sh("ip", "link", "add", HOST, "mtu", str(VETH_MTU), "type", "veth", "peer", "name", PEER, "netns", NAMESPACE)
    sh("ip", "-n", NAMESPACE, "link", "set", PEER, "mtu", str(VETH_MTU), "up")
    sh("ip", "link", "set", HOST, "up")


def veth_down() -> None:
    subprocess.run(["ip", "netns", "del", NAMESPACE], capture_output=True)


def one_rate(capture: Path, rate: str, workers: int, attack_frames: int, tmp: Path, unit: str = "mbps",
             loops: int = 1) -> dict:
    for old in tmp.glob("live*"):
        old.unlink()
    cores = "0" if workers == 1 else f"0-{workers - 1}"
    sensor = subprocess.Popen(
        ["taskset", "-c", cores, str(SENSOR), "live", "-i", HOST, "--allow-root", "--workers", str(workers),
         "--db", str(tmp / "live.db"), "--events", str(tmp / "live-events.jsonl"),
         "--stats-json", "--stats-interval", "0.5"],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "live-stderr.txt", "w"))
    stderr = tmp / "live-stderr.txt"
    deadline = time.monotonic() + START_TIMEOUT
    while stderr.read_text().count("capturing on") < workers:
        assert time.monotonic() < deadline and sensor.poll() is None, stderr.read_text()
        time.sleep(0.1)
    idle_cpu = tree_cpu(sensor.pid)       # start-up: interpreter, imports, store, rings
    speed = ["--topspeed"] if rate == "top" else [f"--{unit}={rate}"]
    repeat = [f"--loop={loops}", "--unique-ip"] if loops > 1 else []
    last_core = str(os.cpu_count() - 1)
    replay = subprocess.run(["ip", "netns", "exec", NAMESPACE, "taskset", "-c", last_core, "tcpreplay",
                             *speed, *repeat, "-i", PEER, str(capture)], capture_output=True, text=True, check=True)
    reached = re.search(r"Rated: [\d.]+ Bps, ([\d.]+) Mbps, ([\d.]+) pps", replay.stdout)
    previous, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < QUIET_SECONDS:
        time.sleep(0.25)
        stats = _stats(stderr)
        packets = sum(s["packets"] for s in stats.values())
        if packets != previous:
            previous, quiet_since = packets, time.monotonic()
    sensor.send_signal(signal.SIGTERM)
    # the sensor is the only child reaped here: what it and its workers ran on the CPU
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    sensor.wait(60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime - idle_cpu
    finals = {w: s for w, s in _stats(stderr, final=True).items()}
    frames = set()
    for line in (tmp / "live-events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["action_rpc_func_opnum"] in ATTACK_OPNUMS and event["action_rpc_interface_name"] == "netdfs":
            frames.add((event["actor_remote_ip"], event["actor_remote_port"], event["net_rpc_call_id"],
                        event["action_rpc_func_opnum"]))
    return {"rate": rate, "workers": workers, "reached_mbps": float(reached.group(1)) if reached else None,
            "reached_pps": float(reached.group(2)) if reached else None,
            "kernel_packets": sum(s["kernel_packets"] for s in finals.values()),
            "kernel_drops": sum(s["kernel_drops"] for s in finals.values()),
            "decoded": sum(s["packets"] for s in finals.values()),
            "found": len(frames), "attacks": attack_frames, "cpu_s": cpu,
            "rss_mb": max(s["rss_bytes"] for s in finals.values()) / 1e6}


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + sys) used so far by a process and its children (the workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, pids = 0.0, [pid]
    while pids:
        pid = pids.pop()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks     # utime, stime
        pids += [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                 for child in (task / "children").read_text().split()]
    return total


def _stats(stderr: Path, final: bool = False) -> dict:
    """The latest stats record of each worker (its final one with ``final``)."""
    latest: dict = {}
    for line in stderr.read_text().splitlines():
        if line.startswith('{"type":"stats"'):
            record = json.loads(line)
            if not final or record.get("final"):
                latest[record.get("worker", 1)] = record
    return latest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, default=REPO / "pcaps" / "large" / "mixed.pcap")
    parser.add_argument("--mbps", default="500,1000,2000,top")
    parser.add_argument("--pps", help="packet rates instead of --mbps (tcpreplay --pps), e.g. 100000,200000,top")
    parser.add_argument("--workers", default="1")
    parser.add_argument("--loops", type=int, default=1,
                        help="send the capture this many times, each pass as new flows (tcpreplay --unique-ip)")
    args = parser.parse_args()
    manifest = json.loads((args.capture.parent / "manifest.json").read_text())
    # a call inside SMB3 encryption ("decodable": false) cannot be decoded live either
    attacks = args.loops * sum(1 for call in manifest["calls"]
                               if call["opnum"] in ATTACK_OPNUMS and call.get("decodable", True))
    unit, rates = ("pps", args.pps) if args.pps else ("mbps", args.mbps)
    veth_up()
    try:
        with tempfile.TemporaryDirectory(prefix="dfs-live-bench-") as tmp:
            print(f"{args.capture.name} x {args.loops}, {os.cpu_count()} cores, load average "
                  f"{os.getloadavg()[0]:.1f} at the start")
            print(f"| workers | asked {unit} | tcpreplay reached Mbps | reached packets/s | kernel packets | "
                  f"kernel drops | decoded | attack calls found | sensor CPU us/packet | RSS MB/worker | load |")
            print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for workers in map(int, args.workers.split(",")):
                for rate in rates.split(","):
                    r = one_rate(args.capture, rate, workers, attacks, Path(tmp), unit, args.loops)
                    print(f"| {workers} | {rate} | {r['reached_mbps']:,.0f} | {r['reached_pps']:,.0f} | {r['kernel_packets']:,} | "
                          f"{r['kernel_drops']:,} | {r['decoded']:,} | {r['found']} of {attacks} | "
                          f"{r['cpu_s'] / max(r['decoded'], 1) * 1e6:.2f} | {r['rss_mb']:.0f} | "
                          f"{os.getloadavg()[0]:.1f} |",
                          flush=True)
    finally:
        veth_down()


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("live_curve.py: needs root (network namespace, AF_PACKET)")
    main()
