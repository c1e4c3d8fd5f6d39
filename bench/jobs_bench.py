"""``replay --jobs N`` against a serial replay of the same directory of captures (issue 14, part 3).

    .venv/bin/python bench/jobs_bench.py DIR [--jobs 2] [--runs 3]

Runs ``dfs-sensor replay`` over DIR's captures (sorted by name) serially and with --jobs N,
alternately, RUNS times, each with a fresh database, and prints the median wall-clock time of
each, the ratio, the load average, and whether the two stores hold the same events and alerts.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SENSOR = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "dfs-sensor"
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".gz")


def run(captures: list[Path], db: Path, jobs: int) -> float:
    for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        stale.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run([str(SENSOR), "replay", "--db", str(db), "--jobs", str(jobs), *map(str, captures)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def stored(db: Path) -> dict[str, list[str]]:
    with sqlite3.connect(db) as conn:
        return {table: sorted(map(repr, conn.execute(f"SELECT * FROM {table}"))) for table in ("events", "alerts")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    captures = sorted(p for p in args.directory.iterdir() if p.name.endswith(CAPTURE_SUFFIXES))
    size = sum(p.stat().st_size for p in captures)
    times: dict[int, list[float]] = {1: [], args.jobs: []}
    with tempfile.TemporaryDirectory(prefix="dfs-jobs-") as tmp:
        dbs = {jobs: Path(tmp) / f"jobs{jobs}.db" for jobs in times}
        for run_number in range(args.runs):
            for jobs in times:
                times[jobs].append(run(captures, dbs[jobs], jobs))
                print(f"run {run_number + 1} --jobs {jobs}: {times[jobs][-1]:.2f} s", file=sys.stderr, flush=True)
        same = stored(dbs[1]) == stored(dbs[args.jobs])
    serial, parallel = statistics.median(times[1]), statistics.median(times[args.jobs])
    print(f"{len(captures)} files, {size / 1e6:,.1f} MB, median of {args.runs}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    print(f"serial {serial:.2f} s ({size / 1e6 / serial:,.1f} MB/s), --jobs {args.jobs} {parallel:.2f} s "
          f"({size / 1e6 / parallel:,.1f} MB/s): {serial / parallel:.2f}x; same events and alerts: {same}")


if __name__ == "__main__":
    main()
