"""Cost of the one JSON encoder (sensor.text.json_line, issue 18 item 11) on the hot path:
every event of the shipped captures serialised as `--events` writes it, against plain
json.dumps (ensure_ascii, what events used before) and ensure_ascii=False (what alerts used).

    .venv/bin/python bench/json_lines.py [--rounds 2000]

Prints microseconds per event for each, and the ratio.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sensor.capture.pcapfile import open_capture
from sensor.events import RpcCallEvent
from sensor.pipeline import Pipeline, PipelineSettings
from sensor.text import json_line

REPO = Path(__file__).resolve().parent.parent


def events() -> list[dict]:
    found = []
    for path in sorted((REPO / "pcaps").glob("*.pcap")):
        pipeline = Pipeline(PipelineSettings())
        with open_capture(str(path)) as reader:
            for frame in reader:
                found += [r for r in pipeline.feed(*frame) if isinstance(r, RpcCallEvent)]
        found += [r for r in pipeline.close() if isinstance(r, RpcCallEvent)]
    return [event.to_dict() for event in found]


def per_event_us(encode, records: list[dict], rounds: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            for record in records:
                encode(record)
        best = min(best, time.perf_counter() - started)
    return best / (rounds * len(records)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    records = events()
    encoders = {
        "json.dumps (ensure_ascii)": lambda r: json.dumps(r, separators=(",", ":")),
        "json.dumps (ensure_ascii=False)": lambda r: json.dumps(r, separators=(",", ":"), ensure_ascii=False),
        "sensor.text.json_line": json_line,
    }
    print(f"{len(records)} events from pcaps/*.pcap, best of 5 x {args.rounds} rounds\n")
    print("| encoder | us/event | vs json.dumps |")
    print("|---|---:|---:|")
    base = None
    for name, encode in encoders.items():
        us = per_event_us(encode, records, args.rounds)
        base = base or us
        print(f"| {name} | {us:.2f} | {us / base:.2f}x |")


if __name__ == "__main__":
    main()
