"""Memory stays flat (issue 7): one `dfs-sensor replay` of the large capture given N times,
its resident set sampled from /proc while it runs.

    .venv/bin/python bench/memory_loop.py [--loops 4] [--every 2]

Prints RSS (MB) against seconds and bytes replayed so far, then the summary line.
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SENSOR = REPO / ".venv" / "bin" / "dfs-sensor"


def rss_mb(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, default=REPO / "pcaps" / "large" / "mixed.pcap")
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dfs-mem-") as tmp:
        proc = subprocess.Popen([str(SENSOR), "replay", "--db", f"{tmp}/s.db", *[str(args.capture)] * args.loops],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started, samples = time.monotonic(), []
        while proc.poll() is None:
            rss = rss_mb(proc.pid)
            if rss is not None:
                samples.append((time.monotonic() - started, rss))
            time.sleep(args.every)
        summary = proc.stderr.read().strip()
    print(f"{args.loops} x {args.capture.name} ({args.capture.stat().st_size / 1e6:,.0f} MB each)\n")
    print("| seconds | RSS MB |")
    print("|---:|---:|")
    for seconds, rss in samples:
        print(f"| {seconds:.0f} | {rss:.1f} |")
    print(f"\nsummary: {summary}")


if __name__ == "__main__":
    main()
