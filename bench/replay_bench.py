"""Replay throughput on one capture: dfs-sensor replay vs tshark vs a bare Python loop (issue 7).

    .venv/bin/python bench/replay_bench.py [--runs 3] [--capture pcaps/large/mixed.pcap]
    .venv/bin/python bench/replay_bench.py --capture pcaps/small/small.pcap      (issue 14's workload)

Each tool runs under /usr/bin/time -v, one after another, RUNS times, with the page cache
warmed first. Prints per tool the median wall-clock MB/s and packets/s, CPU seconds, peak RSS
and the attack calls found (matched to the manifest by frame number), then the ratios
sensor/tshark and sensor/bare, as a Markdown table ready for bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
SENSOR = REPO / ".venv" / "bin" / "dfs-sensor"
ATTACK_OPNUMS = {12, 13}      # NetrDfsAddStdRoot, NetrDfsRemoveStdRoot
DCERPC_REQUEST = 0            # C706 12.6.4 PTYPE request
NETDFS_FIELDS = ("frame.number", "dcerpc.pkt_type", "netdfs.opnum",
                 "netdfs.dfs_AddStdRoot.servername", "netdfs.dfs_AddStdRoot.rootshare",
                 "netdfs.dfs_RemoveStdRoot.servername", "netdfs.dfs_RemoveStdRoot.rootshare")


def timed(argv: list[str], stdout=subprocess.DEVNULL) -> dict:
    """Run under GNU time; wall and CPU seconds, peak RSS in MB."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        started = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-v", "-o", report.name, *argv], check=True,
                       stdout=stdout, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        text = report.read()
    field = lambda name: float(re.search(rf"{name}: ([\d.]+)", text).group(1))
    return {"wall": wall, "cpu": field(r"User time \(seconds\)") + field(r"System time \(seconds\)"),
            "rss_mb": field(r"Maximum resident set size \(kbytes\)") / 1024}


def run_sensor(capture: Path, attack_frames: set[int], tmp: Path) -> dict:
    db, events = tmp / "sensor.db", tmp / "events.jsonl"
    for stale in (db, events, tmp / "sensor.db-wal", tmp / "sensor.db-shm"):
        stale.unlink(missing_ok=True)
    result = timed([str(SENSOR), "replay", "--db", str(db), "--events", str(events), str(capture)])
    frames = set()
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if event["action_rpc_func_opnum"] in ATTACK_OPNUMS and event["action_rpc_interface_name"] == "netdfs":
            frames.add(event["net_capture_frame"])
    return result | {"found": len(frames & attack_frames)}


def run_tshark(capture: Path, attack_frames: set[int], tmp: Path) -> dict:
    out = tmp / "tshark.tsv"
    with out.open("w") as sink:
        fields = [arg for name in NETDFS_FIELDS for arg in ("-e", name)]
        result = timed(["tshark", "-n", "-r", str(capture), "-Y", "netdfs", "-T", "fields", *fields], sink)
    frames = set()
    for line in out.read_text().splitlines():
        frame, pkt_type, opnum, *_ = line.split("\t")
        if pkt_type and int(pkt_type.split(",")[0]) == DCERPC_REQUEST and opnum and int(opnum.split(",")[0]) in ATTACK_OPNUMS:
            frames.add(int(frame))
    return result | {"found": len(frames & attack_frames)}


def run_bare(capture: Path, attack_frames: set[int], tmp: Path) -> dict:
    out = tmp / "bare.json"
    with out.open("w") as sink:
        result = timed([str(PYTHON), str(REPO / "bench" / "bare_loop.py"), str(capture)], sink)
    return result | {"found": None, "packets": json.loads(out.read_text())["packets"]}


TOOLS = {"dfs-sensor replay": run_sensor, "tshark -Y netdfs": run_tshark, "bare loop": run_bare}


def warm(capture: Path) -> None:
    with capture.open("rb") as f:
        while f.read(1 << 24):
            pass


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    tshark = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {tshark}, "
            f"{platform.system()} {platform.release()}, {time.strftime('%Y-%m-%d %H:%M %Z')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, default=REPO / "pcaps" / "large" / "mixed.pcap")
    parser.add_argument("--manifest", type=Path, help="default: manifest.json beside the capture")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of: " + ", ".join(TOOLS))
    args = parser.parse_args()
    manifest = json.loads((args.manifest or args.capture.parent / "manifest.json").read_text())
    # A call inside SMB3 encryption ("decodable": false) has no decodable stub for either tool.
    attack_frames = {call["frame"] for call in manifest["calls"]
                     if call["opnum"] in ATTACK_OPNUMS and call.get("decodable", True)}
    size = args.capture.stat().st_size
    tools = [name for name in TOOLS if name in args.tools.split(",")]
    warm(args.capture)
    runs: dict[str, list[dict]] = {name: [] for name in tools}
    packets = None
    with tempfile.TemporaryDirectory(prefix="dfs-bench-") as tmp:
        for run in range(args.runs):
            for name in tools:
                result = TOOLS[name](args.capture, attack_frames, Path(tmp))
                packets = result.get("packets", packets)
                runs[name].append(result)
                print(f"run {run + 1} {name}: {size / 1e6 / result['wall']:.1f} MB/s, "
                      f"cpu {result['cpu']:.2f} s, rss {result['rss_mb']:.0f} MB, found {result['found']}",
                      file=sys.stderr, flush=True)
    if packets is None:
        from bare_loop import walk
        packets = walk(str(args.capture))["packets"]
    median = {name: {key: statistics.median(r[key] for r in results) for key in ("wall", "cpu", "rss_mb")}
              | {"found": results[-1]["found"]} for name, results in runs.items()}
    from sensor.compiled import CORE     # the sensor runs with this environment: the same core
    print(f"\n{args.capture.name}: {size / 1e6:,.1f} MB, {packets:,} packets, "
          f"{len(attack_frames)} attack calls; median of {args.runs} runs; per-packet core {CORE}; {machine()}; "
          f"load average {os.getloadavg()[0]:.2f} at the end\n")
    print("| tool | MB/s (wall) | packets/s | MB/s (CPU time) | peak RSS MB | attack calls found |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m in median.items():
        found = "-" if m["found"] is None else f"{m['found']} of {len(attack_frames)}"
        print(f"| {name} | {size / 1e6 / m['wall']:,.1f} | {packets / m['wall']:,.0f} | "
              f"{size / 1e6 / m['cpu']:,.1f} | {m['rss_mb']:,.0f} | {found} |")
    sensor = median.get("dfs-sensor replay")
    for other in ("tshark -Y netdfs", "bare loop"):
        if sensor and other in median:
            print(f"\nsensor / {other}: {median[other]['wall'] / sensor['wall']:.2f}x wall, "
                  f"{median[other]['cpu'] / sensor['cpu']:.2f}x CPU time")


if __name__ == "__main__":
    main()
