"""Memory of many SMB flows with an open pipe (issue 18 item 2): peak RSS with the default
flow memory budget, against the systemd unit's MemoryMax.

    .venv/bin/python bench/flow_memory.py [--flows 10000,100000,1000000] [--budget-mib N]

Each flow is the lab's real impacket DFSCoerce connection (pcaps/dfscoerce-smb21.pcap) up to
its open, bound netdfs pipe: TCP handshake, NEGOTIATE, SESSION_SETUP, TREE_CONNECT to IPC$,
CREATE netdfs, the bind and its bind_ack in a WRITE/READ; re-addressed (client address and
port) once per flow, as tests/robustness re-address captures. Every count runs in a fresh
process feeding the whole pipeline; it prints peak RSS (ru_maxrss), flows still tracked,
flows evicted by the budget, and seconds.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CAPTURE = REPO / "pcaps" / "dfscoerce-smb21.pcap"
# Frames of the capture up to the bind_ack and the client's ACK of it: the pipe is open and
# bound, nothing is pending (frame 24 in Wireshark's numbering).
LAST_FRAME = 24
CLIENT = bytes([10, 0, 0, 66])
# Ethernet + IPv4 (20-byte header in this capture) offsets: source, destination address;
# TCP source, destination port.
IP_SRC, IP_DST, TCP_SPORT, TCP_DPORT = 26, 30, 34, 36
UNIT_MEMORY_MAX = 512 << 20    # systemd/dfs-sensor.service MemoryMax=512M


def connection_frames() -> list[tuple[bool, float, bytes]]:
    """(from_client, time offset, frame) of one connection, up to its bound pipe."""
    from sensor.capture.pcapfile import open_capture

    frames = []
    with open_capture(str(CAPTURE)) as reader:
        for ts, _linktype, data, number in reader:
            if number > LAST_FRAME:
                break
            frames.append((data[IP_SRC:IP_SRC + 4] == CLIENT, ts, bytes(data)))
    start = frames[0][1]
    return [(c, ts - start, data) for c, ts, data in frames]


def readdressed(frame: bytes, from_client: bool, n: int) -> bytes:
    """The frame as if flow ``n`` sent it: client 10.(n>>16).(n>>8).(n) + 100.0, port 1024+n%60000."""
    address = bytes([100, n >> 16 & 255, n >> 8 & 255, n & 255])
    port = (1024 + n % 60000).to_bytes(2, "big")
    data = bytearray(frame)
    if from_client:
        data[IP_SRC:IP_SRC + 4] = address
        data[TCP_SPORT:TCP_SPORT + 2] = port
    else:
        data[IP_DST:IP_DST + 4] = address
        data[TCP_DPORT:TCP_DPORT + 2] = port
    return bytes(data)


def run_one(flows: int, budget_mib: int | None) -> dict:
    """In this process: feed ``flows`` connections through one Pipeline, report its peak."""
    from sensor.net.frames import LINKTYPE_ETHERNET
    from sensor.pipeline import Pipeline, PipelineSettings

    settings = PipelineSettings()
    if budget_mib is not None:
        settings.flow_memory_budget = budget_mib << 20
    pipeline = Pipeline(settings)
    template = connection_frames()
    started = time.monotonic()
    frame = 0
    # All within a minute of capture time, so no flow is idle long enough to time out: what
    # bounds the table is the budget alone.
    for n in range(flows):
        base = 1_700_000_000 + n * 1e-5
        for from_client, offset, data in template:
            frame += 1
            pipeline.feed(base + offset, LINKTYPE_ETHERNET, readdressed(data, from_client, n), frame)
    stats = pipeline.stats
    return {"flows": flows, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "tracked": pipeline.flows.active, "evicted": stats["flows_evicted"],
            "pipes": stats["pipes_opened"], "seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", default="10000,100000,1000000")
    parser.add_argument("--budget-mib", type=int, default=None, help="override the default flow memory budget")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)     # the child process
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.budget_mib)))
        return
    print(f"SMB flows with a bound netdfs pipe ({CAPTURE.name} frames 1-{LAST_FRAME}, re-addressed); "
          f"unit MemoryMax {UNIT_MEMORY_MAX >> 20} MiB\n")
    print("| flows | peak RSS MB | of MemoryMax | tracked at end | evicted | pipes opened | seconds |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for flows in (int(n) for n in args.flows.split(",")):
        command = [sys.executable, __file__, "--one", str(flows)]
        if args.budget_mib is not None:
            command += ["--budget-mib", str(args.budget_mib)]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        share = result["peak_rss_mb"] * (1 << 20) / UNIT_MEMORY_MAX
        print(f"| {flows:,} | {result['peak_rss_mb']:.0f} | {share:.0%} | {result['tracked']:,} | "
              f"{result['evicted']:,} | {result['pipes']:,} | {result['seconds']} |")


if __name__ == "__main__":
    main()
