"""Live capture from network interfaces (a SPAN/mirror port) through AF_PACKET.

Yields each ring block's frames as a list of the pcap reader's tuples, ``(ts, linktype, data,
frame)`` with a running frame counter, or ``None`` as an idle tick (at least every
``TICK_SECONDS``) so the consumer can expire flows, print stats and notice signals.

Capture path, measured (bench/capture_bench.py: 64-byte-payload TCP/445 frames,
``tcpreplay --topspeed`` into a veth, 2 cores, Python 3.11; see the README section):
a PACKET_MMAP TPACKET_V3 ring read with ``struct.unpack_from`` is the fastest of the three
(no syscall, no ancillary-data objects per packet; a whole block per ``poll``); plain
``recvmsg_into`` into one preallocated buffer is slower per packet and its queue is capped
by ``net.core.rmem_max`` unless the process holds CAP_NET_ADMIN (SO_RCVBUFFORCE), which the
service does not keep; scapy's L2ListenSocket builds a packet object per frame and is an
order of magnitude slower. The ring's size is not capped by rmem_max and needs nothing
beyond CAP_NET_RAW, so bursts on a mirror port are absorbed without extra privileges.

Kernel filter: the expression is compiled to classic BPF by libpcap (ctypes, the library
tcpdump uses) and attached with SO_ATTACH_FILTER before the socket is bound, so no
unfiltered frame is ever queued.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sensor.anomaly import Stats
from sensor.capture.ring import RING_MB

# SMB (445 direct, 139 NetBIOS), the endpoint mapper (135), and dynamic-port DCE/RPC. The
# kernel strips the outer 802.1Q tag before the filter runs, so the plain clauses match
# singly-tagged frames; the "vlan and" clause matches the inner tag of QinQ frames. Dynamic
# ports: any IPv4 TCP segment whose payload starts with 05 00 (DCE/RPC v5.0 header,
# C706 12.6.3): binds and small requests (every DFSNM call) fit in one segment and start it;
# continuation segments of large PDUs do not match and the TCP stage sees them as gaps.
# HTTP back-authentication (issue 6): a coerced server's NTLM to a WebDAV listener on any
# port travels in the client's request head, so any IPv4 TCP segment whose payload starts
# with a method NTLM clients send (RFC 9110 9.3; WebDAV RFC 4918 9.1 PROPFIND; OPTIONS is
# the Windows WebClient's first request) is admitted; the flow table picks the flow up
# midstream from that first request. The server's 401 (its CHALLENGE) is not needed.
# libpcap's tcp[] indexes IPv4 only. Non-first IPv4 fragments carry no TCP header to match
# on, so all of them are admitted (rare on a LAN) rather than letting fragmentation evade.
_SMB_RPC_PORTS = "tcp port 445 or tcp port 139 or tcp port 135"
_TCP_PAYLOAD = "tcp[((tcp[12] & 0xf0) >> 2)"
_RPC_PAYLOAD = f"{_TCP_PAYLOAD}:2] = 0x0500"
HTTP_NTLM_METHODS = (b"GET ", b"HEAD", b"POST", b"PUT ", b"OPTI", b"PROP")
_HTTP_REQUEST = " or ".join(f"{_TCP_PAYLOAD}:4] = 0x{method.hex()}" for method in HTTP_NTLM_METHODS)
_IP_FRAGMENT = "ip[6:2] & 0x1fff != 0"
_ADMITTED = f"{_SMB_RPC_PORTS} or {_RPC_PAYLOAD} or {_HTTP_REQUEST} or {_IP_FRAGMENT}"
DEFAULT_BPF = f"{_ADMITTED} or (vlan and ({_ADMITTED}))"

# An idle tick is yielded at least this often (the consumer expires flows and prints stats).
TICK_SECONDS = 0.5
# A partly filled ring block is handed to us after this long: bounds alert latency (< 1 s).
RING_BLOCK_TIMEOUT_MS = 100
# 1 MiB blocks hold a 64 KiB GRO super-frame many times over.
RING_BLOCK_BYTES = 1 << 20
# Used by the kernel only to size the ring's frame count for TPACKET_V3 (frames are packed).
RING_FRAME_BYTES = 2048
# What libpcap assumes when compiling: the largest frame the filter may be asked about.
BPF_SNAPLEN = 262144

LIBPCAP_SONAMES = ("libpcap.so.1", "libpcap.so.0.8")  # upstream's, Debian's (libpcap0.8)

# linux/if_ether.h, linux/if_packet.h, asm-generic/socket.h
ETH_P_ALL = 0x0003
ETH_P_8021Q = 0x8100
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
PACKET_FANOUT_HASH = 0            # flow-symmetric hash: both directions reach the same worker
PACKET_FANOUT_FLAG_DEFRAG = 0x8000  # reassemble IP fragments first, so they hash like the flow
SO_ATTACH_FILTER = 26
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40

# ARPHRD (linux/if_arp.h) -> (pcap LINKTYPE we hand on, DLT libpcap compiles the filter for)
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 65534              # tun, wireguard: raw IP
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
DLT_RAW = 12                     # libpcap's DLT for LINKTYPE_RAW on Linux
_LINK_TYPES = {
    ARPHRD_ETHER: (LINKTYPE_ETHERNET, LINKTYPE_ETHERNET),
    ARPHRD_LOOPBACK: (LINKTYPE_ETHERNET, LINKTYPE_ETHERNET),
    ARPHRD_NONE: (LINKTYPE_RAW, DLT_RAW),
}

_PACKET_MREQ = struct.Struct("iHH8s")
_TPACKET_REQ3 = struct.Struct("7I")
_TPACKET_STATS_V3 = struct.Struct("III")     # tp_packets (includes drops), tp_drops, tp_freeze_q_cnt
_SOCK_FPROG = struct.Struct("HP")
# tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1 block_status, num_pkts,
# offset_to_first_pkt
_BLOCK_DESC = struct.Struct("IIIII")
_BLOCK_STATUS_OFFSET = 8
# tpacket3_hdr (linux/if_packet.h): next_offset, sec, nsec, snaplen, len, status, mac, then
# net, hv1.rxhash and, at byte 32, hv1.vlan_tci, hv1.vlan_tpid (read only for a tagged frame)
_TPACKET3_HDR = struct.Struct("IIIIIIH")
_TPACKET3_VLAN_OFFSET = 32
_TPACKET3_VLAN = struct.Struct("IH")
_VLAN_TAG = struct.Struct("!HH")
_FANOUT_ARG = struct.Struct("I")             # group id in the low 16 bits, type and flags above


class CaptureError(Exception):
    """Capture cannot start: bad filter, unknown interface, missing privilege. The message
    says what to do."""


class _BpfInsn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn))]


def _libpcap() -> ctypes.CDLL:
    # By soname first: find_library runs ldconfig in a subprocess, which a hardened unit
    # may not allow.
    for name in LIBPCAP_SONAMES:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        name = ctypes.util.find_library("pcap")
        if name is None:
            raise CaptureError("libpcap is needed to compile the capture filter (Debian: apt install libpcap0.8)")
        lib = ctypes.CDLL(name)
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p,
                                 ctypes.c_int, ctypes.c_uint32]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    return lib


def compile_bpf(expression: str, dlt: int = LINKTYPE_ETHERNET) -> bytes:
    """The classic-BPF program for ``expression`` as the kernel's packed sock_filter array.

    Raises CaptureError with libpcap's message when the expression does not compile."""
    lib = _libpcap()
    handle = lib.pcap_open_dead(dlt, BPF_SNAPLEN)
    program = _BpfProgram()
    try:
        # optimize=1; netmask unknown (0xffffffff): only "ip broadcast" needs it
        if lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, 0xFFFFFFFF) != 0:
            raise CaptureError(f"bad capture filter {expression!r}: {lib.pcap_geterr(handle).decode()}")
        code = ctypes.string_at(program.bf_insns, program.bf_len * ctypes.sizeof(_BpfInsn))
        lib.pcap_freecode(ctypes.byref(program))
        return code
    finally:
        lib.pcap_close(handle)


def attach_bpf(sock: socket.socket, program: bytes) -> None:
    insns = ctypes.create_string_buffer(program, len(program))
    fprog = _SOCK_FPROG.pack(len(program) // ctypes.sizeof(_BpfInsn), ctypes.addressof(insns))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


@dataclass
class KernelCounters:
    packets: int = 0   # frames the filter passed, dropped ones included
    drops: int = 0     # frames the kernel dropped because the ring was full


class _Ring:
    """One interface: an AF_PACKET socket with a TPACKET_V3 receive ring."""

    def __init__(self, interface: str, bpf: str, promiscuous: bool, fanout_group: int | None,
                 ring_mb: int) -> None:
        try:
            arphrd = int(open(f"/sys/class/net/{interface}/type").read())
            ifindex = socket.if_nametoindex(interface)
        except OSError:
            raise CaptureError(f"no such network interface: {interface}") from None
        if arphrd not in _LINK_TYPES:
            raise CaptureError(f"{interface}: link type ARPHRD {arphrd} is not supported "
                               "(Ethernet, loopback and raw-IP interfaces are)")
        self.name = interface
        self.linktype, dlt = _LINK_TYPES[arphrd]
        program = compile_bpf(bpf, dlt)
        blocks = (ring_mb << 20) // RING_BLOCK_BYTES
        try:
            # Protocol 0 receives nothing until bind: the filter is in place before any frame.
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise CaptureError("opening a packet socket needs CAP_NET_RAW (run as root, with "
                               "--user to drop to, or under the systemd unit)") from None
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            attach_bpf(self.sock, program)
            if arphrd == ARPHRD_LOOPBACK:
                # Loopback shows every frame twice, outgoing and incoming: keep one.
                self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, _TPACKET_REQ3.pack(
                RING_BLOCK_BYTES, blocks, RING_FRAME_BYTES,
                RING_BLOCK_BYTES // RING_FRAME_BYTES * blocks, RING_BLOCK_TIMEOUT_MS, 0, 0))
            self.ring = mmap.mmap(self.sock.fileno(), RING_BLOCK_BYTES * blocks,
                                  mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self.sock.bind((interface, ETH_P_ALL))
            if promiscuous:
                # Membership, not IFF_PROMISC: needs no CAP_NET_ADMIN and ends with the socket.
                self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                                     _PACKET_MREQ.pack(ifindex, PACKET_MR_PROMISC, 0, b""))
            if fanout_group is not None:
                # Passed as bytes: with the DEFRAG flag the value exceeds a C int's range.
                self.sock.setsockopt(SOL_PACKET, PACKET_FANOUT, _FANOUT_ARG.pack(fanout_group | (
                    (PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG) << 16)))
        except OSError as e:
            self.sock.close()
            raise CaptureError(f"{interface}: cannot set up capture: {e}") from None
        self.blocks = blocks
        self.next_block = 0
        self.counters = KernelCounters()

    def fileno(self) -> int:
        return self.sock.fileno()

    def take_block(self, frame: int) -> tuple[list[tuple[float, int, bytes, int]], int, int] | None:
        """The next block's frames if the kernel has handed it over, numbered on from
        ``frame``, then gives the block back to the kernel: (frames as the pcap reader's
        ``(ts, linktype, data, frame)`` tuples, bytes, frames truncated by the ring).

        The one per-frame loop of live capture: one header unpack, one copy out of the ring
        (the block is returned before the frames are decoded) and one tuple per frame."""
        ring = self.ring
        base = self.next_block * RING_BLOCK_BYTES
        _, _, status, count, offset = _BLOCK_DESC.unpack_from(ring, base)
        if not status & TP_STATUS_USER:
            return None
        frames = []
        append = frames.append
        unpack_from = _TPACKET3_HDR.unpack_from
        linktype = self.linktype
        vlan_valid = TP_STATUS_VLAN_VALID if linktype == LINKTYPE_ETHERNET else 0
        size = truncated = 0
        pos = base + offset
        for frame in range(frame + 1, frame + 1 + count):
            next_offset, sec, nsec, snaplen, length, pstatus, mac = unpack_from(ring, pos)
            start = pos + mac
            if pstatus & vlan_valid:
                # The kernel took the outer 802.1Q tag off (and reports it in the header);
                # put it back so the frame decoder sees the wire's frame.
                tci, tpid = _TPACKET3_VLAN.unpack_from(ring, pos + _TPACKET3_VLAN_OFFSET)
                tag = _VLAN_TAG.pack(tpid if pstatus & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q, tci)
                data = ring[start:start + 12] + tag + ring[start + 12:start + snaplen]
                size += _VLAN_TAG.size
            else:
                data = ring[start:start + snaplen]
            append((sec + nsec * 1e-9, linktype, data, frame))
            size += snaplen
            if snaplen < length:
                truncated += 1
            pos += next_offset
        struct.pack_into("I", ring, base + _BLOCK_STATUS_OFFSET, TP_STATUS_KERNEL)
        self.next_block = (self.next_block + 1) % self.blocks
        return frames, size, truncated

    def read_counters(self) -> KernelCounters:
        """Reading PACKET_STATISTICS resets the kernel's counters: add them up here."""
        packets, drops, _ = _TPACKET_STATS_V3.unpack(
            self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS_V3.size))
        self.counters.packets += packets
        self.counters.drops += drops
        return self.counters

    def close(self) -> None:
        self.ring.close()
        self.sock.close()


class LiveCapture:
    """Frames from one or more interfaces, a ring block at a time.

    Construction opens the sockets (the one step that needs CAP_NET_RAW); everything after
    runs with no privilege but the open descriptors. ``stats`` counts "capture.frames",
    "capture.bytes", "capture.truncated" (frame longer than what the ring kept).
    ``ring_mb``: the size of each interface's ring, MiB.
    """

    def __init__(self, interfaces: Sequence[str], bpf: str | None = None, *,
                 promiscuous: bool = True, fanout_group: int | None = None,
                 ring_mb: int = RING_MB) -> None:
        if not interfaces:
            raise CaptureError("no interface to capture on (give -i IFACE)")
        self.stats = Stats()
        self._frame = 0
        self._rings: list[_Ring] = []
        try:
            for index, name in enumerate(interfaces):
                # A fanout group holds sockets of one device only: one group id per interface.
                group = None if fanout_group is None else (fanout_group + index) & 0xFFFF
                self._rings.append(_Ring(name, DEFAULT_BPF if bpf is None else bpf,
                                         promiscuous, group, ring_mb))
        except CaptureError:
            self.close()
            raise

    @property
    def interfaces(self) -> list[str]:
        return [ring.name for ring in self._rings]

    def blocks(self, stop: Callable[[], bool] = lambda: False
               ) -> Iterator[list[tuple[float, int, bytes, int]] | None]:
        """Until ``stop()``: the frames of each ring block as a list of the pcap reader's
        ``(ts, linktype, data, frame)``, or None as an idle tick (at least every TICK_SECONDS).

        A batch per block, not a generator step per frame: the consumer walks the list
        (``itertools.chain.from_iterable`` does it in C). ``stop`` is checked between blocks
        and at every tick; a block already taken is delivered whole."""
        poller = select.poll()
        for ring in self._rings:
            poller.register(ring.fileno(), select.POLLIN | select.POLLERR)
        stats = self.stats
        last_tick = time.monotonic()
        while not stop():
            took = False
            for ring in self._rings:
                block = ring.take_block(self._frame)
                if block is None:
                    continue
                took = True
                frames, size, truncated = block
                self._frame += len(frames)
                stats["capture.frames"] += len(frames)
                stats["capture.bytes"] += size
                if truncated:
                    stats["capture.truncated"] += truncated
                yield frames
            now = time.monotonic()
            if now - last_tick >= TICK_SECONDS:
                last_tick = now
                yield None
            elif not took:
                for fd, events in poller.poll(int((TICK_SECONDS - (now - last_tick)) * 1000) + 1):
                    if events & select.POLLERR:
                        self._clear_error(fd)

    def _clear_error(self, fd: int) -> None:
        # An interface going down sets ENETDOWN on its sockets; reading SO_ERROR clears it
        # (else poll keeps waking). Capture resumes by itself when the interface comes back.
        for ring in self._rings:
            if ring.fileno() == fd:
                err = ring.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                self.stats.anomaly(time.time(), "capture", "capture_interface_error",
                                   detail=f"{ring.name}: {os.strerror(err)}")

    def kernel_counters(self) -> dict[str, KernelCounters]:
        """Per interface, accumulated since start."""
        return {ring.name: ring.read_counters() for ring in self._rings}

    def close(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings = []
