"""What a remote output costs the capture thread, and how fast it delivers: N event-sized
lines written to a SpooledSink whose collector runs on this host (the test collector for
HTTP, a socket reader for syslog over TCP).

    .venv/bin/python bench/sink_throughput.py [N]      prints one JSON line per target

write_us_per_line is the time write() takes in the caller (capture's cost); lines_per_s is
from the first write until the collector has every line (spool + send).
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sensor.sinks.targets import SinkSettings, open_sink

ROOT = Path(__file__).resolve().parents[1]
# An event line of the size the lab's DFSNM events have (~1.1 KB).
LINE = json.dumps({"_time": "2026-11-28T04:39:41.287Z", "event_id": "0" * 32, "pad": "x" * 1000})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def syslog_reader(port_box: list, counter: list) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port_box.append(server.getsockname()[1])
    conn, _ = server.accept()
    buffer = b""
    while True:
        data = conn.recv(1 << 20)
        if not data:
            return
        buffer += data
        while b" " in buffer:
            length, rest = buffer.split(b" ", 1)
            if len(rest) < int(length):
                break
            counter[0] += 1
            buffer = rest[int(length):]


def run(target: str, received, n: int, tmp: str) -> dict:
    sink = open_sink(target, "events", SinkSettings(spool_dir=tmp, sensor_name="bench"))
    started = time.perf_counter()
    for i in range(n):
        sink.write(LINE)
    wrote = time.perf_counter() - started
    while received() < n:
        time.sleep(0.01)
    done = time.perf_counter() - started
    sink.close()
    return {"target": target.split(":")[0], "lines": n, "write_us_per_line": round(wrote / n * 1e6, 2),
            "lines_per_s": round(n / done)}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        out = Path(tmp) / "received.jsonl"
        collector = subprocess.Popen([sys.executable, str(ROOT / "tests" / "sinks" / "collector.py"), str(port), str(out)])
        try:
            time.sleep(0.5)

            def http_received() -> int:
                if not out.exists():
                    return 0
                # the collector may be writing a request's line as it is read: whole lines only
                requests = out.read_text().split("\n")[:-1]
                return sum(json.loads(r)["body"].count("\n") for r in requests)
            print(json.dumps(run(f"http://127.0.0.1:{port}/", http_received, n, tmp + "/h")))
        finally:
            collector.kill()
        box, counter = [], [0]
        threading.Thread(target=syslog_reader, args=(box, counter), daemon=True).start()
        while not box:
            time.sleep(0.01)
        print(json.dumps(run(f"syslog+tcp://127.0.0.1:{box[0]}", lambda: counter[0], n, tmp + "/s")))


if __name__ == "__main__":
    main()
