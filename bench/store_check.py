"""What checking a store costs when a writer opens it (issue 18 item 9): PRAGMA quick_check
against the full integrity_check and a read-only open, on a store of N events (default 1M).

    .venv/bin/python bench/store_check.py [--events 1000000] [--db /tmp/store-1m.db] [--cold]

The events are the lab capture's real records (pcaps/dfscoerce-smb21.pcap, replayed once),
copied with fresh ids and times one second apart, so pages and indexes look like a long run.
Times are wall-clock seconds, median of 3 with the page cache warm; with --cold (root) also
once after dropping the machine's page cache (as after a reboot; it slows everything else
on the machine for a moment, so it is not the default).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sensor.store.sqlite import Store  # noqa: E402

CAPTURE = REPO / "pcaps" / "dfscoerce-smb21.pcap"
RUNS = 3


def build(path: Path, count: int) -> None:
    seed = Path(tempfile.mkdtemp()) / "seed.db"
    subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(seed), "--alerts", "/dev/null",
                    str(CAPTURE)], cwd=REPO, check=True, capture_output=True)
    store = Store(str(path))
    store.db.execute(f"ATTACH DATABASE '{seed}' AS seed")
    rows = store.db.execute("SELECT * FROM seed.events").fetchall()
    store.db.execute("DETACH DATABASE seed")
    with store.transaction():
        for n in range(count):
            row = list(rows[n % len(rows)])
            record = json.loads(row[15])
            row[0] = f"{n:032x}"
            row[1] += n * 1000
            record["event_id"], record["event_timestamp"] = row[0], row[1]
            row[15] = json.dumps(record, separators=(",", ":"))
            store.db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
    store.close()


def drop_cache(wanted: bool) -> bool:
    if not wanted or os.geteuid() != 0:
        return False
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1\n")
    return True


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", default="/tmp/dfs-sensor-store-check.db")
    parser.add_argument("--cold", action="store_true", help="also time each step once with a dropped page cache")
    args = parser.parse_args()
    path = Path(args.db)
    if not path.exists():
        print(f"building {args.events:,} events in {path} ...", file=sys.stderr)
        build(path, args.events)
    size_mb = path.stat().st_size / 1e6

    def pragma(name: str):
        def run():
            db = Store(str(path), readonly=True).db
            assert db.execute(f"PRAGMA {name}").fetchall() == [("ok",)]
            db.close()
        return run

    cases = {"read-only open (readers)": lambda: Store(str(path), readonly=True).close(),
             "writer open (quick_check + schema)": lambda: Store(str(path)).close(),
             "PRAGMA quick_check": pragma("quick_check"),
             "PRAGMA integrity_check": pragma("integrity_check")}
    print(f"store: {args.events:,} events, {size_mb:,.0f} MB, SQLite {__import__('sqlite3').sqlite_version}")
    print("| step | warm s (median of 3) | cold s |")
    print("|---|---|---|")
    for name, action in cases.items():
        warm = statistics.median(timed(action) for _ in range(RUNS))
        cold = f"{timed(action):.2f}" if drop_cache(args.cold) else "n/a (no --cold, or not root)"
        print(f"| {name} | {warm:.2f} | {cold} |")


if __name__ == "__main__":
    main()
