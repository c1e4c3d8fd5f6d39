"""The fixed cost of a dfs-sensor command (issue 14): what any replay pays before its first
packet and after its last, and the start of the read commands.

    .venv/bin/python bench/startup.py [--runs 15] [--capture /work/bench-data/small/small.pcap] [--live]
                                      [--instructions] [--checkout /work/main]

Prints the median (and min) wall clock and CPU seconds of, each run in a fresh process:
- ``python -c pass``: the interpreter alone, the floor;
- ``import sensor.cli``: the command line's imports, timed inside the process;
- ``replay`` of a one-frame capture (the capture's first record) into a fresh --db: the
  whole fixed cost of a replay (imports, rule files, store creation, summary);
- ``hunt``, ``alerts``, ``events`` on the store that replay made, ``--version``;
- with ``--live`` (root): ``live -i lo`` until it says it is capturing (then SIGTERM);
- with ``--instructions``: the instructions the one-frame replay and ``python -c pass``
  execute (valgrind's callgrind), which the load of a shared machine does not change.
``--checkout`` runs another checkout's install (its .venv) instead of this one: before/after.
A Markdown table, ready for bench/RESULTS.md. Not a test: times depend on the machine's load
(printed), so compare runs made one after another.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"          # of --checkout, set in main()
SENSOR = REPO / ".venv" / "bin" / "dfs-sensor"
DEFAULT_CAPTURES = (Path("/work/bench-data/small/small.pcap"), REPO / "pcaps" / "small" / "small.pcap",
                    REPO / "pcaps" / "dfscoerce-smb21.pcap")
# pcap (not pcapng) magic numbers, microsecond and nanosecond, either byte order
PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
PCAP_HEADER, RECORD_HEADER = 24, 16
# How long `live` may take to say it is capturing before the run counts as failed.
LIVE_START_TIMEOUT = 30.0
IMPORT_PROBE = "import time; t = time.perf_counter(); import sensor.cli; print(time.perf_counter() - t)"
# -P: sys.path without the current directory, so the probe imports the --checkout's package
# (its .venv's), not the one of a checkout it is run from.
IMPORT_PROBE_ARGS = ("-P", "-c", IMPORT_PROBE)


def one_frame(capture: Path, out: Path) -> None:
    """The capture's global header and first record, as a pcap file."""
    with capture.open("rb") as f:
        header = f.read(PCAP_HEADER)
        order = PCAP_MAGICS.get(header[:4])
        if order is None:
            sys.exit(f"{capture}: not a pcap file (pcapng is not cut here)")
        record = f.read(RECORD_HEADER)
        captured = struct.unpack(order + "IIII", record)[2]
        out.write_bytes(header + record + f.read(captured))


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict, before=None) -> tuple[float, float, str]:
    """(wall s, CPU s, stdout) of one run."""
    if before is not None:
        before()
    cpu = cpu_of_children()
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return wall, cpu_of_children() - cpu, done.stdout


def live_start(db: Path, env: dict) -> tuple[float, float, str]:
    """Seconds until `live -i lo` logs that it is capturing."""
    argv = [str(SENSOR), "live", "-i", "lo", "--allow-root", "--db", str(db), "--stats-interval", "0"]
    cpu = cpu_of_children()
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = started + LIVE_START_TIMEOUT
        for line in proc.stderr:
            if "capturing on" in line:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError
        else:
            sys.exit(f"live ended before capturing: exit {proc.wait()}")
        wall = time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=LIVE_START_TIMEOUT)
    return wall, cpu_of_children() - cpu, ""


def instructions(argv: list[str], env: dict, before=None) -> int:
    """Instructions ``argv`` executes (valgrind --tool=callgrind)."""
    if before is not None:
        before()
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    return int(re.search(r"refs:\s+([\d,]+)", done.stderr).group(1).replace(",", ""))


def main() -> None:
    global PYTHON, SENSOR
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--capture", type=Path, help="pcap whose first record is replayed (default: the "
                                                       "small-message workload, else pcaps/dfscoerce-smb21.pcap)")
    parser.add_argument("--live", action="store_true", help="also time `live -i lo` to capturing (root)")
    parser.add_argument("--instructions", action="store_true", help="also count instructions (valgrind)")
    parser.add_argument("--checkout", type=Path, default=REPO, help="the checkout whose .venv runs (default: this one)")
    args = parser.parse_args()
    PYTHON = args.checkout / ".venv" / "bin" / "python"
    SENSOR = args.checkout / ".venv" / "bin" / "dfs-sensor"
    capture = args.capture or next((c for c in DEFAULT_CAPTURES if c.exists()), None)
    if capture is None:
        sys.exit("no capture: give --capture")
    env = dict(os.environ, DFS_SENSOR_DB="/nonexistent/unused.db")
    with tempfile.TemporaryDirectory(prefix="dfs-startup-") as tmp:
        tmp = Path(tmp)
        one = tmp / "one.pcap"
        one_frame(capture, one)
        db = tmp / "replay.db"

        def fresh_db() -> None:
            for path in tmp.glob("replay.db*"):
                path.unlink()

        read_db = tmp / "read.db"
        subprocess.run([str(SENSOR), "replay", "--db", str(read_db), str(one)], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cases = [
            ("python -c pass", [str(PYTHON), "-c", "pass"], None),
            ("import sensor.cli", [str(PYTHON), *IMPORT_PROBE_ARGS], None),
            ("replay one frame, fresh --db", [str(SENSOR), "replay", "--db", str(db), str(one)], fresh_db),
            ("hunt", [str(SENSOR), "hunt", "--db", str(read_db)], None),
            ("alerts", [str(SENSOR), "alerts", "--db", str(read_db)], None),
            ("events", [str(SENSOR), "events", "--db", str(read_db)], None),
            ("--version", [str(SENSOR), "--version"], None),
        ]
        results: dict[str, list[tuple[float, float, str]]] = {name: [] for name, _, _ in cases}
        if args.live:
            results["live -i lo, to capturing"] = []
        load = os.getloadavg()[0]
        for _ in range(args.runs):      # interleaved, so a burst of load hits every case alike
            for name, argv, before in cases:
                results[name].append(timed(argv, env, before))
            if args.live:
                results["live -i lo, to capturing"].append(live_start(tmp / "live.db", env))
        load = max(load, os.getloadavg()[0])
        counts = {}
        if args.instructions:
            counts = {"python -c pass": instructions([str(PYTHON), "-c", "pass"], env),
                      "replay one frame, fresh --db": instructions([str(PYTHON), str(SENSOR), "replay", "--db",
                                                                    str(db), str(one)], env, fresh_db)}
    commit = subprocess.run(["git", "-C", str(args.checkout), "log", "--format=%h", "-1"], capture_output=True,
                            text=True).stdout.strip()
    print(f"{args.checkout} (commit {commit}); "
          f"capture: first record of {capture}; {args.runs} runs each; load average (1 min) up to {load:.1f}; "
          f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}; "
          f"bytecode cached for sensor/: {(args.checkout / 'sensor' / '__pycache__').is_dir()}")
    for name, count in counts.items():
        print(f"instructions, {name}: {count / 1e6:,.0f} M")
    print()
    print("| command | median wall s | min wall s | median CPU s |")
    print("|---|---:|---:|---:|")
    for name, runs in results.items():
        walls = [r[0] for r in runs]
        cpus = [r[1] for r in runs]
        if name == "import sensor.cli":     # timed inside the process: the imports alone
            walls = [float(r[2]) for r in runs]
        print(f"| {name} | {statistics.median(walls):.3f} | {min(walls):.3f} | {statistics.median(cpus):.3f} |")


if __name__ == "__main__":
    main()
