"""Capture-path benchmark (not a test): how many frames/s each AF_PACKET reader delivers.

    ip netns add bench && ip link add benchh type veth peer name benchn netns bench
    ip link set benchh up && ip -n bench link set benchn up
    .venv/bin/python bench/capture_bench.py benchh bench benchn

For each reader, replays the same 200k TCP/445 frames with ``tcpreplay --topspeed`` from
the namespace end and reports frames delivered to Python, kernel drops and frames/s while
the reader was busy. The readers only count frames; the rest of the sensor is not involved.
"""
from __future__ import annotations

import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from scapy.all import IP, TCP, Ether, Raw, wrpcap

from sensor.capture.live import ETH_P_ALL, SOL_PACKET, LiveCapture, attach_bpf, compile_bpf, DEFAULT_BPF

FRAMES = 200_000
QUIET = 1.0   # a reader is done when nothing arrived for this long after the replay


def make_pcap(path: str) -> None:
    base = Ether() / IP(src="10.0.0.5", dst="10.0.0.10") / TCP(sport=50000, dport=445, flags="PA")
    frames = [base / Raw(bytes(64))] * 1000
    wrpcap(path, frames)


def replay(ns: str, iface: str, pcap: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "tcpreplay", "-q", "-i", iface, "--topspeed",
                    f"--loop={FRAMES // 1000}", pcap], check=True, capture_output=True, timeout=120)


def bench_ring(iface: str, start) -> tuple[int, int, float]:
    cap = LiveCapture([iface])
    count, first, last = 0, 0.0, 0.0
    start()
    deadline = time.monotonic() + 60
    for block in cap.blocks(lambda: time.monotonic() > deadline or (count and time.monotonic() - last > QUIET)):
        if block is not None:
            count += len(block)
            last = time.monotonic()
            first = first or last
    drops = cap.kernel_counters()[iface].drops
    cap.close()
    return count, drops, last - first


def bench_recvmsg(iface: str, start) -> tuple[int, int, float]:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    attach_bpf(sock, compile_bpf(DEFAULT_BPF))
    sock.setsockopt(socket.SOL_SOCKET, 35, 1)   # SO_TIMESTAMPNS
    sock.bind((iface, ETH_P_ALL))
    sock.settimeout(QUIET)
    buf = bytearray(262144)
    view = memoryview(buf)
    count, first, last = 0, 0.0, 0.0
    start()
    try:
        while True:
            n, anc, _flags, _addr = sock.recvmsg_into([buf], 64)
            bytes(view[:n])   # the copy a reader hands on: part of what is measured
            for level, kind, cdata in anc:
                sec, nsec = struct.unpack_from("qq", cdata)
            count += 1
            last = time.monotonic()
            first = first or last
    except socket.timeout:
        pass
    packets, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, 6, 8))
    sock.close()
    return count, drops, last - first


def bench_scapy(iface: str, start) -> tuple[int, int, float]:
    from scapy.arch.linux import L2ListenSocket
    sock = L2ListenSocket(iface=iface, filter="tcp port 445")
    count, first, last = 0, 0.0, 0.0
    start()
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < QUIET:
        if sock.select([sock], QUIET) and sock.recv() is not None:
            count += 1
            last = idle_since = time.monotonic()
            first = first or last
    drops = struct.unpack("II", sock.ins.getsockopt(SOL_PACKET, 6, 8))[1]
    sock.close()
    return count, drops, last - first


def main(iface: str, ns: str, peer: str) -> None:
    with tempfile.NamedTemporaryFile(suffix=".pcap") as pcap:
        make_pcap(pcap.name)
        for name, reader in [("TPACKET_V3 ring", bench_ring), ("recvmsg_into", bench_recvmsg),
                             ("scapy L2ListenSocket", bench_scapy)]:
            sender = threading.Thread(target=replay, args=(ns, peer, pcap.name))
            count, drops, busy = reader(iface, lambda: (time.sleep(0.2), sender.start()))
            sender.join()
            print(f"{name:22s} delivered {count:7d}  kernel drops {drops:7d}  "
                  f"{count / busy if busy else 0:10.0f} frames/s")


if __name__ == "__main__":
    main(*sys.argv[1:4])
