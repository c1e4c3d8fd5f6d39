"""Events per second the store takes, batched as the sensor writes them (issue 16): into
SQLite and into PostgreSQL, against the rate the sensor decodes them on the same workload.

    .venv/bin/python bench/store_write_rate.py [--copies 10000] [--postgres URL | --start-postgres]
                                               [--capture pcaps/small/small.pcap]
    WORKLOAD=small bench/run store           # the same, with --capture the small-message capture

Workload: the lab capture pcaps/dfscoerce-smb21.pcap repeated COPIES times, one copy a second
over 10 days (41 small frames and 2 DFSNM calls per copy: small SMB messages, every call an
event the detector judges). The decode rate is the native pipeline alone; the write rates
are Sensor.process_records (store + detector, batches of 1000 events, one transaction each)
on the decoded events, into a new SQLite file and a new PostgreSQL database; "spool" is what
a sensor does instead while PostgreSQL is unreachable (each batch of 1000 to JSON, into the
store's on-disk spool, sensor/store/spooled.py). --start-postgres
runs a throwaway server as the tests do (tests/store/postgres_server.py; needs root or the
postgresql package's initdb). Prints a Markdown table: events/s and the ratio to decoding.

--capture: also the events/s the sensor makes of that capture (the small-message workload of
issue 14: 272,954 packets, 4 DFSNM calls), which the store's rates must at least match; its
own events are replayed into both stores (few: the rate there is mostly one batch's cost).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests" / "store")]

from postgres_server import PostgresServer  # noqa: E402
from sensor.capture.pcapfile import open_capture  # noqa: E402
from sensor.config import Config  # noqa: E402
from sensor.events import RpcCallEvent  # noqa: E402
from sensor.outputs import open_outputs  # noqa: E402
from sensor.pipeline import Pipeline  # noqa: E402
from sensor.sensor import COMMIT_EVERY_EVENTS, Sensor  # noqa: E402
from sensor.sinks.spool import Spool  # noqa: E402
from sensor.store.spooled import Batch  # noqa: E402
from workload import repeated  # noqa: E402

CAPTURE = REPO / "pcaps" / "dfscoerce-smb21.pcap"


def decode(path: Path) -> tuple[list, float]:
    pipeline = Pipeline()
    records = []
    started = time.perf_counter()
    for frame in open_capture(path):
        records.extend(pipeline.feed(*frame))
    records.extend(pipeline.close())
    return [r for r in records if isinstance(r, RpcCallEvent)], time.perf_counter() - started


def write(db: str, events: list) -> float:
    sensor = Sensor(Config(db=db, alerts=None), open_outputs(None, None))
    sensor.coercion_stages = ()          # the events' store and detector path only
    started = time.perf_counter()
    sensor.process_records(events)
    sensor.finish()
    return time.perf_counter() - started


def spool(path: Path, events: list) -> float:
    spooled = Spool(str(path))
    started = time.perf_counter()
    for start in range(0, len(events), COMMIT_EVERY_EVENTS):
        batch = Batch(events[start:start + COMMIT_EVERY_EVENTS], [], 0)
        spooled.push([batch.to_record()], [batch.items])
    spooled.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=10_000)
    parser.add_argument("--postgres", metavar="URL", help="an empty database to write into")
    parser.add_argument("--start-postgres", action="store_true", help="start a throwaway server")
    parser.add_argument("--capture", type=Path, help="also the sensor's event rate on this capture")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dfs-sensor-bench-"))
    capture = repeated(CAPTURE, work / "small.pcap", args.copies, days=10)
    events, decode_s = decode(capture)
    rates = {"decode (native pipeline)": len(events) / decode_s,
             "store: SQLite": len(events) / write(str(work / "s.db"), events),
             "store: spool (PostgreSQL unreachable)": len(events) / spool(work / "spool.db", events)}
    other = {}
    if args.capture:
        own, own_s = decode(args.capture)
        other[f"sensor on {args.capture.name} (decode, {len(own):,} events in {own_s:.2f} s)"] = len(own) / own_s
    server = PostgresServer.start() if args.start_postgres and not args.postgres else None
    try:
        url = args.postgres or (server.create_database("bench") if server else None)
        if url:
            rates["store: PostgreSQL"] = len(events) / write(url, events)
            if args.capture:
                other[f"store: PostgreSQL, {args.capture.name}'s events"] = \
                    len(own) / write(server.create_database("bench_capture") if server else url, own)
    finally:
        if server:
            server.stop()
    print(f"{len(events):,} events from {args.copies:,} copies of {CAPTURE.name}")
    print("| step | events/s | ratio to decode |")
    print("|---|---|---|")
    base = rates["decode (native pipeline)"]
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f} |")
    for name, rate in other.items():
        print(f"| {name} | {rate:,.1f} | |")
    if args.capture and "store: PostgreSQL" in rates:
        sensor_rate = next(iter(other.values()))
        print(f"\nPostgreSQL takes {rates['store: PostgreSQL'] / sensor_rate:,.0f}x the events/s the sensor "
              f"makes of {args.capture.name}.")


if __name__ == "__main__":
    main()
