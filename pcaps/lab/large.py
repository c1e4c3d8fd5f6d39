"""The large mixed capture for the benchmark (issue 7): bulk SMB transfers, benign RPC, known attacks.

  large.py --out pcaps/large [--work pcaps/lab/work]          (run by pcaps/lab/build-large)

In one tcpdump capture on dc eth0 (default snaplen): "client" copies BULK_FILES files of
BULK_FILE_MB MB of random data to and from the dc's share with smbclient, rpcclient calls srvsvc,
lsarpc and netdfs (no coercion opnums) in a loop, and "attacker" makes ATTACKS DFSCoerce calls,
one session each, ATTACK_INTERVAL seconds apart. Writes mixed.pcap and manifest.json (the attack
calls with their frame numbers and times, the tcpdump drop count).
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import groundtruth
from scenarios import (ATTACKER_V4, DC_V4, DOMAIN, LAB, PASSWORD, REPO, USER, Capture, Samba, in_ns,
                       DIALECT_NAMES)

BULK_FILES = 8                 # 8 x 120 MB: about 1 GB on the wire, as issue 7 asks
BULK_FILE_MB = 120
ATTACKS = 5                    # a known number of attack calls for the benchmark to find
ATTACK_INTERVAL = 0.3          # pause between attack sessions; each client run itself takes ~1 s (interpreter, impacket)
ATTACK_PLAN = [("13", "2.1"), ("12", "3.1.1"), ("13", "2.0.2"), ("12", "2.1"), ("13", "3.1.1")]
CAPTURE_BUFFER_KIB = 262144    # tcpdump -B: the bulk runs at hundreds of MB/s; a small buffer drops
BENIGN_RPC = "netshareenum; lsaquery; dfsversion; dfsenum 1; srvinfo"
BENIGN_PAUSE = 0.5             # seconds between benign rpcclient sessions
PCAP_GLOBAL_HEADER = 24        # libpcap file format: global header, then 16-byte record headers
PCAP_MAGIC_USEC = 0xA1B2C3D4  # libpcap, microsecond timestamps (tcpdump's default), in the writer's byte order


def smbclient(*commands: str) -> list[str]:
    return in_ns("client", "smbclient", f"//{DC_V4}/share", "-U", f"{DOMAIN}/{USER}%{PASSWORD}",
                 "-c", "; ".join(commands))


def make_files(share: Path, upload: Path) -> tuple[list[str], list[Path]]:
    """Half the files on the dc's share (to get), half on the client side (to put)."""
    upload.mkdir(parents=True, exist_ok=True)
    gets, puts = [], []
    for i in range(BULK_FILES):
        path = share / f"bulk{i}.bin" if i % 2 == 0 else upload / f"bulk{i}.bin"
        subprocess.run(in_ns("dc", "dd", "if=/dev/urandom", f"of={path}", "bs=1M", f"count={BULK_FILE_MB}",
                             "status=none"), check=True)
        (gets.append(path.name) if i % 2 == 0 else puts.append(path))
    return gets, puts


def remove_files(share: Path, upload: Path) -> None:
    for path in [*share.glob("bulk*.bin"), *share.glob("up-bulk*.bin"), *upload.glob("bulk*.bin")]:
        path.unlink()


def bulk(gets: list[str], puts: list[Path], failures: list[str]) -> None:
    for name, path in zip(gets, puts):
        done = subprocess.run(smbclient(f"get {name} /dev/null", f"put {path} up-{path.name}"),
                              capture_output=True, text=True, timeout=600)
        if done.returncode:
            failures.append(f"smbclient get {name} / put {path.name}: {done.stdout}{done.stderr}")


def benign_loop(stop: threading.Event, count: list[int]) -> None:
    while not stop.is_set():
        subprocess.run(in_ns("client", "rpcclient", "-U", f"{DOMAIN}/{USER}%{PASSWORD}", DC_V4, "-c", BENIGN_RPC),
                       capture_output=True, timeout=60)
        count[0] += 1
        stop.wait(BENIGN_PAUSE)


def attack(opnum: str, dialect: str) -> dict:
    cmd = [sys.executable, str(LAB / "dfscoerce_client.py"), "--target", DC_V4, "--listener", ATTACKER_V4,
           "--dialect", dialect, "--opnums", opnum]
    out = subprocess.run(in_ns("attacker", *cmd), check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60).stdout
    (call,) = [json.loads(line) for line in out.splitlines()]
    return call


def frame_numbers(pcap: Path, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """(ts_sec, ts_usec) -> frame number, walking only the record headers of the big capture."""
    found = {}
    with open(pcap, "rb") as f:
        head = f.read(PCAP_GLOBAL_HEADER)
        order = next((o for o in "<>" if struct.unpack_from(o + "I", head)[0] == PCAP_MAGIC_USEC), None)
        if order is None:
            raise RuntimeError(f"{pcap}: not a microsecond libpcap file")
        record = struct.Struct(order + "IIII")   # ts_sec, ts_usec, incl_len, orig_len
        frame = 0
        while header := f.read(record.size):
            frame += 1
            sec, usec, incl, _ = record.unpack(header)
            if (sec, usec) in wanted:
                found[(sec, usec)] = frame
            f.seek(incl, os.SEEK_CUR)
    return found


def locate_attacks(pcap: Path, calls: list[dict], work: Path) -> list[dict]:
    """Place each call with tshark on the attacker's traffic only (tshark on the whole 1 GB takes
    minutes and GBs of memory), then number its frame in the big capture by timestamp."""
    subset = work / "large-attacker.pcap"
    subprocess.run(["tcpdump", "-r", str(pcap), "-w", str(subset), f"host {ATTACKER_V4}"], check=True,
                   capture_output=True)
    located = groundtruth.locate(str(subset), calls)
    stamps = {c["frame"]: (int(round(c["ts"] * 1e6)) // 10**6, int(round(c["ts"] * 1e6)) % 10**6) for c in located}
    frames = frame_numbers(pcap, set(stamps.values()))
    subset.unlink()
    return [{"interface_uuid": c["interface_uuid"], "opnum": c["opnum"], "function": c["function"],
             "args": c["args"], "decodable": c["decodable"], "dialect": DIALECT_NAMES[c["dialect"]],
             "client_ip": c["client_ip"], "client_port": c["client_port"], "server_ip": c["server_ip"],
             "server_port": c["server_port"], "ts": c["ts"], "frame": frames[stamps[c["frame"]]]}
            for c in located]


def report_capture(summary: str, started: float) -> None:
    """tcpdump's closing summary, and a warning when the kernel dropped packets."""
    print(f"captured, {time.time() - started:.0f}s: {summary}", flush=True)
    if " 0 packets dropped by kernel" not in summary:
        print("WARNING: tcpdump dropped packets; the capture has gaps (rerun for a clean one)", file=sys.stderr)


def write_manifest(out: Path, manifest: dict, started: float, counts: str = "") -> None:
    """manifest.json beside the capture, and one line saying what was made (``counts``: more
    figures before the attack calls, e.g. "272954 packets, ")."""
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"{out / manifest['file']}: {manifest['bytes'] / 1e6:.0f} MB, {counts}{len(manifest['calls'])} "
          f"attack calls, {time.time() - started:.0f}s", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "pcaps" / "large")
    p.add_argument("--work", type=Path, default=LAB / "work")
    opts = p.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    pcap = opts.out / "mixed.pcap"
    samba = Samba(opts.work)
    share, upload = samba.dir / "share", opts.work / "large-upload"
    started = time.time()
    failures: list[str] = []
    try:
        samba.start("off")
        gets, puts = make_files(share, upload)
        print(f"files ready, {time.time() - started:.0f}s", flush=True)
        capture = Capture("dc", "eth0", pcap, "tcp", buffer_kib=CAPTURE_BUFFER_KIB)
        stop, benign_sessions = threading.Event(), [0]
        bulk_thread = threading.Thread(target=bulk, args=(gets, puts, failures))
        benign_thread = threading.Thread(target=benign_loop, args=(stop, benign_sessions))
        bulk_thread.start()
        benign_thread.start()
        calls = []
        try:
            for opnum, dialect in ATTACK_PLAN[:ATTACKS]:
                time.sleep(ATTACK_INTERVAL)
                calls.append(attack(opnum, dialect))
            bulk_thread.join()
        finally:
            stop.set()
            benign_thread.join()
            summary = capture.stop()
        report_capture(summary, started)
    finally:
        samba.stop()
        remove_files(share, upload)
    if failures:
        raise RuntimeError("bulk transfer failed: " + "; ".join(failures))
    manifest = {
        "file": pcap.name,
        "made_by": "pcaps/lab/build-large",
        "bytes": pcap.stat().st_size,
        "tcpdump": summary,
        "bulk": f"{BULK_FILES // 2} smbclient get and {BULK_FILES // 2} put of {BULK_FILE_MB} MB random files",
        "benign_rpcclient_sessions": benign_sessions[0],
        "benign_rpc": BENIGN_RPC,
        "should_alert": True,
        "calls": locate_attacks(pcap, calls, opts.work),
    }
    write_manifest(opts.out, manifest, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
