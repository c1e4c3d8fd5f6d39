"""The small-message capture for the benchmark (issue 14): a busy file server's SMB and RPC mix.

  small.py --out pcaps/small [--work pcaps/lab/work]          (run by pcaps/lab/build-small)

In one tcpdump capture on dc eth0, at once:
- FILE_WORKERS smbclient loops in "client", each session a logon, then in a directory of its
  own: put FILES_PER_SESSION files of 1-8 KB, list, get them back, delete them, logoff;
- RPC_LOOPS rpcclient loops (srvsvc, lsarpc, samr, netlogon enumeration on IPC$) and impacket's
  lsarpc/srvsvc/samr sessions (pcaps/lab/benign_rpc_client.py) every IMPACKET_EVERY rounds;
- smbclient sessions with SMB3 encryption (--client-protection=encrypt) every ENCRYPTED_PAUSE s;
- ATTACK_PLAN DFSCoerce calls from "attacker", spread over the run.
The file sizes come from a seeded generator, so every build makes the same operations (the
bytes on the wire differ: keys, times, ports). Writes small.pcap and manifest.json (the attack
calls with frame numbers and times, what ran, tcpdump's drop count).
"""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from large import attack, locate_attacks, report_capture, write_manifest
from scenarios import DC_V4, DOMAIN, LAB, PASSWORD, REPO, USER, Capture, Samba, in_ns

FILE_WORKERS = 3               # concurrent smbclient loops: a server with several busy clients
SESSIONS_PER_WORKER = 48       # ~1,750 packets a session: about 290k packets with the RPC traffic
FILES_PER_SESSION = 30
FILE_SIZES = (1024, 8192)      # bytes, inclusive: the small files of issue 14
SEED = 14                      # the file sizes, the same every build
RPC_COMMANDS = ("netshareenum; netshareenumall; srvinfo; lsaquery; lookupnames labuser; enumdomusers; "
                "enumdomgroups; querydominfo; getanydcname DC01; dsr_getdcname LAB")
RPC_LOOPS = 2                  # concurrent enumeration loops on IPC$
IMPACKET_EVERY = 3             # every 3rd RPC round is impacket's instead of rpcclient's
ENCRYPTED_PAUSE = 2.0          # seconds between encrypted smbclient sessions
ENCRYPTED_FILES = 6
# Three in the clear; impacket encrypts its SMB 3.1.1 session by itself (manifest "decodable": false),
# which only the transform-header size fingerprint can flag.
ATTACK_PLAN = [("13", "2.1"), ("12", "2.0.2"), ("12", "2.1"), ("13", "3.1.1")]
FIRST_ATTACK_AFTER = 5.0       # seconds into the capture, then evenly over the expected run
ATTACK_SPACING = 12.0
CAPTURE_BUFFER_KIB = 65536     # tcpdump -B: many small packets at once; the default buffer can drop
# Samba "if_required": sessions are encrypted when the client asks (smbclient
# --client-protection=encrypt), the rest stay clear.
SERVER_ENCRYPT = "if_required"


def smbclient(*commands: str, encrypt: bool = False) -> list[str]:
    extra = ["--client-protection=encrypt"] if encrypt else []
    return in_ns("client", "smbclient", f"//{DC_V4}/share", "-U", f"{DOMAIN}/{USER}%{PASSWORD}", *extra,
                 "-c", "; ".join(commands))


def make_files(upload: Path, count: int) -> list[Path]:
    upload.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    files = []
    for i in range(count):
        path = upload / f"doc{i:03d}.dat"
        path.write_bytes(rng.randbytes(rng.randint(*FILE_SIZES)))
        files.append(path)
    return files


def file_session(directory: str, files: list[Path]) -> list[str]:
    """One logon's worth of small file operations in a directory of its own."""
    return [f"mkdir {directory}", f"cd {directory}",
            *(f"put {path} {path.name}" for path in files), "ls",
            *(f"get {path.name} /dev/null" for path in files),
            *(f"del {path.name}" for path in files), "cd ..", f"rmdir {directory}", "ls"]


def run(cmd: list[str], failures: list[str], what: str, **kw) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    if done.returncode:
        failures.append(f"{what}: exit {done.returncode}: {(done.stdout + done.stderr)[-300:]}")


def file_worker(worker: int, sessions: int, files: list[Path], failures: list[str]) -> None:
    for session in range(sessions):
        run(smbclient(*file_session(f"w{worker}s{session}", files)), failures, f"file session {worker}/{session}")


def rpc_loop(stop: threading.Event, rounds: list[int]) -> None:
    while not stop.is_set():
        if rounds[0] % IMPACKET_EVERY == IMPACKET_EVERY - 1:
            cmd = in_ns("client", sys.executable, str(LAB / "benign_rpc_client.py"), "--target", DC_V4)
        else:
            # rpcclient exits non-zero when a command is refused (netlogon on a standalone
            # server); the binds and requests are on the wire all the same.
            cmd = in_ns("client", "rpcclient", "-U", f"{DOMAIN}/{USER}%{PASSWORD}", DC_V4, "-c", RPC_COMMANDS)
        subprocess.run(cmd, capture_output=True, timeout=120)
        rounds[0] += 1


def encrypted_loop(stop: threading.Event, files: list[Path], sessions: list[int], failures: list[str]) -> None:
    while not stop.wait(ENCRYPTED_PAUSE):
        run(smbclient(*file_session(f"enc{sessions[0]}", files), encrypt=True), failures, "encrypted session")
        sessions[0] += 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "pcaps" / "small")
    p.add_argument("--work", type=Path, default=LAB / "work")
    p.add_argument("--sessions", type=int, default=SESSIONS_PER_WORKER,
                   help="file sessions per worker (fewer: a quick trial of the lab)")
    opts = p.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    pcap = opts.out / "small.pcap"
    samba = Samba(opts.work)
    upload = opts.work / "small-upload"
    files = make_files(upload, FILES_PER_SESSION)
    started = time.time()
    failures: list[str] = []
    try:
        samba.start(SERVER_ENCRYPT)
        capture = Capture("dc", "eth0", pcap, "tcp", buffer_kib=CAPTURE_BUFFER_KIB)
        stop = threading.Event()
        rpc_rounds, encrypted_sessions = [0], [0]
        workers = [threading.Thread(target=file_worker, args=(w, opts.sessions, files, failures)) for w in range(FILE_WORKERS)]
        background = [*(threading.Thread(target=rpc_loop, args=(stop, rpc_rounds))
                        for _ in range(RPC_LOOPS)),
                      threading.Thread(target=encrypted_loop,
                                       args=(stop, files[:ENCRYPTED_FILES], encrypted_sessions, failures))]
        for thread in workers + background:
            thread.start()
        calls = []
        try:
            time.sleep(FIRST_ATTACK_AFTER)
            for opnum, dialect in ATTACK_PLAN:
                calls.append(attack(opnum, dialect))
                time.sleep(ATTACK_SPACING)
            for thread in workers:
                thread.join()
        finally:
            stop.set()
            for thread in background:
                thread.join()
            summary = capture.stop()
        report_capture(summary, started)
    finally:
        samba.stop()
        shutil.rmtree(upload, ignore_errors=True)
    if failures:
        raise RuntimeError("small-file traffic failed: " + "; ".join(failures[:5]))
    packets = _count(pcap)
    manifest = {
        "file": pcap.name,
        "made_by": "pcaps/lab/build-small",
        "bytes": pcap.stat().st_size,
        "packets": packets,
        "tcpdump": summary,
        "file_sessions": f"{FILE_WORKERS} x {opts.sessions} smbclient sessions, each put/ls/get/del of "
                         f"{FILES_PER_SESSION} files of {FILE_SIZES[0]}-{FILE_SIZES[1]} bytes (seed {SEED})",
        "encrypted_sessions": encrypted_sessions[0],
        "rpc_rounds": rpc_rounds[0],
        "rpc_commands": RPC_COMMANDS,
        "should_alert": True,
        "calls": locate_attacks(pcap, calls, opts.work),
    }
    write_manifest(opts.out, manifest, started, f"{packets} packets, ")
    return 0


def _count(pcap: Path) -> int:
    out = subprocess.run(["capinfos", "-M", "-c", "-r", str(pcap)], capture_output=True, text=True).stdout
    return int(out.split()[-1])


if __name__ == "__main__":
    sys.exit(main())
