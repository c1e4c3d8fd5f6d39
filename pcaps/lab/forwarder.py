"""A user-space Ethernet forwarder between two interfaces, for kernels without netem or 8021q.

  forwarder.py IF_A IF_B [--drop P] [--dup P] [--reorder P] [--seed N] [--mirror IF --vlan ID]

Frames are moved both ways with AF_PACKET sockets, so the real TCP stacks on either side see
(and repair) the impairments: TCP segments carrying data are dropped, duplicated or held back
behind the next frame with the given probabilities (seeded, so a run is reproducible).
Handshake and pure ACK frames pass untouched, so connections always come up.
With --mirror, every frame sent on is also written to IF with an 802.1Q tag inserted (a SPAN
port on a trunk), which is where the lab's tcpdump listens for the VLAN capture.
Runs until SIGTERM.
"""
from __future__ import annotations

import argparse
import random
import select
import signal
import socket
import struct
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4         # linux/if_packet.h: a frame this host sent, not one it received
MAX_FRAME = 65535           # offloads are off, but never truncate whatever the veth hands us
HOLD_TIMEOUT = 0.05         # a frame held back for reordering goes out after this even alone
ETH_HEADER = struct.Struct("!6s6sH")
TPID_8021Q = 0x8100         # IEEE 802.1Q tag protocol identifier
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IPPROTO_TCP = 6


def tcp_payload_length(frame: bytes) -> int:
    """Bytes of TCP payload in an untagged IPv4/IPv6 frame, 0 for anything else."""
    ethertype = ETH_HEADER.unpack_from(frame)[2]
    if ethertype == ETHERTYPE_IPV4 and len(frame) >= 34 and frame[23] == IPPROTO_TCP:
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, 16)[0]
        tcp_off = 14 + ihl
    elif ethertype == ETHERTYPE_IPV6 and len(frame) >= 54 and frame[20] == IPPROTO_TCP:
        total = 40 + struct.unpack_from("!H", frame, 18)[0]
        ihl, tcp_off = 40, 54
    else:
        return 0
    if len(frame) < tcp_off + 13:
        return 0
    return max(0, total - ihl - (frame[tcp_off + 12] >> 4) * 4)


def vlan_tagged(frame: bytes, vlan_id: int) -> bytes:
    return frame[:12] + struct.pack("!HH", TPID_8021Q, vlan_id & 0x0FFF) + frame[12:]


class Direction:
    """One way through the forwarder, with at most one frame held back for reordering."""

    def __init__(self, out: socket.socket, mirror, vlan_id: int, rng: random.Random, opts):
        self.out, self.mirror, self.vlan_id, self.rng, self.opts = out, mirror, vlan_id, rng, opts
        self.held: bytes | None = None
        self.held_at = 0.0

    def send(self, frame: bytes) -> None:
        self.out.send(frame)
        if self.mirror is not None:
            self.mirror.send(vlan_tagged(frame, self.vlan_id))

    def forward(self, frame: bytes) -> None:
        if tcp_payload_length(frame) == 0:
            self.send(frame)
            return
        roll = self.rng.random()
        if roll < self.opts.drop:
            return
        if roll < self.opts.drop + self.opts.reorder and self.held is None:
            self.held, self.held_at = frame, time.monotonic()
            return
        self.send(frame)
        if roll < self.opts.drop + self.opts.reorder + self.opts.dup:
            self.send(frame)
        self.flush()

    def flush(self, only_if_stale: bool = False) -> None:
        if self.held is not None and (not only_if_stale or time.monotonic() - self.held_at > HOLD_TIMEOUT):
            frame, self.held = self.held, None
            self.send(frame)


def packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, 0))
    return sock


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("if_a")
    p.add_argument("if_b")
    p.add_argument("--drop", type=float, default=0.0)
    p.add_argument("--dup", type=float, default=0.0)
    p.add_argument("--reorder", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--mirror")
    p.add_argument("--vlan", type=int, default=100)
    opts = p.parse_args()

    a, b = packet_socket(opts.if_a), packet_socket(opts.if_b)
    mirror = packet_socket(opts.mirror) if opts.mirror else None
    rng = random.Random(opts.seed)
    directions = {a: Direction(b, mirror, opts.vlan, rng, opts), b: Direction(a, mirror, opts.vlan, rng, opts)}
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while running:
        try:
            readable, _, _ = select.select([a, b], [], [], HOLD_TIMEOUT)
        except InterruptedError:
            continue
        for sock in readable:
            frame, addr = sock.recvfrom(MAX_FRAME)
            if addr[2] != PACKET_OUTGOING:
                directions[sock].forward(frame)
        for direction in directions.values():
            direction.flush(only_if_stale=True)


if __name__ == "__main__":
    main()
