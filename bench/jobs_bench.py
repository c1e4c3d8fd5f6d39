"""``replay --jobs N`` against a serial replay of the same directory of captures (issue 14, part 3).

    .venv/bin/python bench/jobs_bench.py DIR [--jobs 2] [--runs 3] [--split] [--against CHECKOUT]

Runs ``dfs-sensor replay`` over DIR's captures (sorted by name) serially and with --jobs N,
alternately, RUNS times, each with a fresh database, and prints the median wall-clock time of
each, the CPU time (user + sys of the command and its workers), the ratio, the best run of
each (on a shared machine, the runs that had the cores to themselves), the load average
before and after, and whether the two stores hold the same events and alerts.

``--split``: first, where --jobs spends CPU, measured in this process file by file: a worker's
decode (``sensor.parallel.decoded_chunks``), pickling its result and unpickling it (the pool's
IPC), and the parent's share (``Sensor.process_records``: store, detector, correlator) against a
serial replay's ``Sensor.process`` of the same file. The parent's and the IPC's part is what
cannot run in parallel with decoding, which bounds the speed-up on N free cores.
"""
from __future__ import annotations

import argparse
import os
import pickle
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SENSOR = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "dfs-sensor"
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".gz")


def fresh(db: Path) -> Path:
    for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        stale.unlink(missing_ok=True)
    return db


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(captures: list[Path], db: Path, jobs: int, checkout: Path | None) -> tuple[float, float]:
    """(wall s, CPU s of the command and the workers it reaped); ``checkout``: its sensor
    package instead of this one's (PYTHONPATH)."""
    fresh(db)
    env = dict(os.environ, PYTHONPATH=str(checkout)) if checkout else None
    cpu, started = children_cpu(), time.perf_counter()
    subprocess.run([str(SENSOR), "replay", "--db", str(db), "--jobs", str(jobs), *map(str, captures)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started, children_cpu() - cpu


def idle_share(seconds: float) -> float:
    """The share of the machine's CPU time that was idle over ``seconds`` (/proc/stat)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(n) for n in stat.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)        # idle + iowait, all
    idle, total = sample()
    time.sleep(seconds)
    idle_after, total_after = sample()
    return (idle_after - idle) / max(total_after - total, 1)


def wait_idle(share: float) -> None:
    """Until the cores were idle ``share`` of a second: other users' work out of the round."""
    while idle_share(1.0) < share:
        pass


def bound(files: list[tuple[float, float, float]], jobs: int, cores: int) -> float:
    """Wall time of --jobs from the files' (worker decode + pickle, parent unpickle + store,
    serial) CPU seconds: the pool takes the files in order, each on the first worker free; the
    parent takes each file's records when it is done and the files before it are stored; and
    workers and parent together get no more than ``cores`` cores (2 workers and the parent on
    2 cores share them: every CPU second of the parent's is one the workers wait for)."""
    free = [0.0] * jobs
    parent = 0.0
    for work, store, _ in files:
        start = min(free)
        done = start + work
        free[free.index(start)] = done
        parent = max(parent, done) + store
    return max(parent, sum(work + store for work, store, _ in files) / min(cores, jobs + 1))


def split(captures: list[Path], tmp: Path, jobs: int) -> None:
    """The CPU table of --split (see the module's docstring)."""
    from sensor.capture.pcapfile import open_capture
    from sensor.config import load_config
    from sensor.outputs import open_outputs
    from sensor.parallel import decoded_chunks
    from sensor.sensor import Sensor

    def sensor(name: str) -> Sensor:
        return Sensor(load_config(None, {"db": str(fresh(tmp / name))}), open_outputs(None, None))

    serial, parent = sensor("split-serial.db"), sensor("split-parent.db")
    print("| file | records | MB sent | serial replay CPU s | worker decode | worker pickle | parent unpickle | "
          "parent store/detect | parent + IPC share |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    totals = [0.0] * 5
    files = []
    for path in captures:
        with open_capture(str(path)) as reader:
            started = time.process_time()
            serial.start_file(path.name, str(path))
            serial.process(reader)
            serial_s = time.process_time() - started
        started = time.process_time()
        messages = list(decoded_chunks(str(path)))
        decode_s = time.process_time() - started
        started = time.process_time()
        blobs = [pickle.dumps(message, pickle.HIGHEST_PROTOCOL) for message in messages]   # as the worker sends them
        pickle_s = time.process_time() - started
        started = time.process_time()
        *chunks, done = map(pickle.loads, blobs)
        unpickle_s = time.process_time() - started
        records = [record for chunk in chunks for record in chunk.records]
        started = time.process_time()
        parent.start_file(path.name)
        parent.process_records(records)
        parent.source_stats.update(done.stats)
        store_s = time.process_time() - started
        for i, value in enumerate((serial_s, decode_s, pickle_s, unpickle_s, store_s)):
            totals[i] += value
        files.append((decode_s + pickle_s, unpickle_s + store_s, serial_s))
        print(f"| {path.name} | {len(records):,} | {sum(map(len, blobs)) / 1e6:.2f} | {serial_s:.3f} | {decode_s:.3f} | {pickle_s:.3f} | "
              f"{unpickle_s:.3f} | {store_s:.3f} | {(pickle_s + unpickle_s + store_s) / serial_s:.1%} |")
    serial.finish()
    parent.finish()
    serial_s, decode_s, pickle_s, unpickle_s, store_s = totals
    print(f"| all | | | {serial_s:.3f} | {decode_s:.3f} | {pickle_s:.3f} | {unpickle_s:.3f} | {store_s:.3f} | "
          f"{(pickle_s + unpickle_s + store_s) / serial_s:.1%} |")
    cores = os.cpu_count() or 1
    for free_cores, what in ((jobs + 1, f"{jobs} free cores and one for the parent"), (cores, f"this machine's {cores} cores, idle")):
        wall = bound(files, jobs, free_cores)
        print(f"From these CPU times, on {what}: --jobs {jobs} {wall:.2f} s against serial {serial_s:.2f} s, "
              f"at best {serial_s / wall:.2f}x (interpreter start-up, ~0.1 s in both, left out)")


def stored(db: Path) -> dict[str, list[str]]:
    with sqlite3.connect(db) as conn:
        return {table: sorted(map(repr, conn.execute(f"SELECT * FROM {table}"))) for table in ("events", "alerts")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--split", action="store_true", help="first, the CPU split of --jobs, file by file")
    parser.add_argument("--against", type=Path, metavar="CHECKOUT",
                        help="also --jobs N with another checkout's sensor package (PYTHONPATH; its compiled "
                             "modules in place), in the same rounds: a before/after under the same load")
    parser.add_argument("--wait-idle", type=float, metavar="SHARE", default=0.0,
                        help="before each round, wait until the cores were idle this share of a second "
                             "(0.9: a shared machine's quiet moments)")
    args = parser.parse_args()
    captures = sorted(p for p in args.directory.iterdir() if p.name.endswith(CAPTURE_SUFFIXES))
    size = sum(p.stat().st_size for p in captures)
    variants = {"serial": (1, None), f"--jobs {args.jobs}": (args.jobs, None)}
    if args.against:
        variants[f"--jobs {args.jobs} ({args.against})"] = (args.jobs, args.against)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dfs-jobs-") as tmp:
        if args.split:
            split(captures, Path(tmp), args.jobs)
        dbs = {name: Path(tmp) / f"variant{n}.db" for n, name in enumerate(variants)}
        for run_number in range(args.runs):
            wait_idle(args.wait_idle)
            for name, (jobs, checkout) in variants.items():
                times[name].append(run(captures, dbs[name], jobs, checkout))
                wall, cpu = times[name][-1]
                print(f"run {run_number + 1} {name}: {wall:.2f} s wall, {cpu:.2f} s CPU, "
                      f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
        same = {name: stored(dbs[name]) == stored(dbs["serial"]) for name in variants}
    print(f"{len(captures)} files, {size / 1e6:,.1f} MB, median of {args.runs}, {os.cpu_count()} cores, "
          f"load average {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    serial = statistics.median(w for w, _ in times["serial"])
    serial_best = min(w for w, _ in times["serial"])
    for name, runs in times.items():
        wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
        best = min(w for w, _ in runs)
        # each round's serial run against its own: the rounds' load differs, a round's runs share it
        by_round = statistics.median(s / w for (s, _), (w, _) in zip(times["serial"], runs))
        print(f"{name}: {wall:.2f} s wall ({size / 1e6 / wall:,.1f} MB/s, {cpu:.2f} s CPU): {serial / wall:.2f}x "
              f"the serial rate; median of the rounds' ratios {by_round:.2f}x; best run {best:.2f} s, "
              f"{serial_best / best:.2f}x the best serial; same events and alerts as serial: {same[name]}")


if __name__ == "__main__":
    main()
