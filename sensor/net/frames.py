"""Link, VLAN, IP and TCP headers: one captured frame in, one TCP segment tuple (or None) out.

The segment is a plain tuple, built once per TCP packet and nothing else:
``(src_ip, dst_ip, sport, dport, seq, ack, flags, payload, vlan)`` with packed IP addresses
(4 or 16 bytes), ``payload`` a memoryview into the frame (or into a reassembled datagram) and
``vlan`` the tuple of VLAN ids, outermost first. Non-TCP traffic returns None after the fewest
header reads possible. Broken headers count a named anomaly and return None.
"""
from __future__ import annotations

import struct

from sensor.anomaly import Stats
from sensor.net.ipfrag import FragmentLimits, FragmentReassembler

Segment = tuple[bytes, bytes, int, int, int, int, int, memoryview, tuple[int, ...]]

# Link types (tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0          # BSD loopback: 4-byte address family in the capturing host's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_OLD = 12      # raw IP on most platforms (DLT_RAW value 12/14 differs by OS)
LINKTYPE_RAW_OLD2 = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108        # OpenBSD loopback: address family in network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
# What ``decode`` reads; a capture of any other link type gives no flows (the reader says so).
DECODED_LINKTYPES = frozenset((LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW_OLD, LINKTYPE_RAW_OLD2, LINKTYPE_RAW,
                               LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2))

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
# 802.1Q customer tag, 802.1ad service tag (QinQ outer), and the pre-standard QinQ 0x9100.
VLAN_ETHERTYPES = frozenset((0x8100, 0x88A8, 0x9100))
# More stacked tags than this is not a real network; stops a frame full of tags.
MAX_VLAN_TAGS = 4

# Address-family values for IPv6 in a null/loop header: Linux 10, NetBSD/OpenBSD 24,
# FreeBSD 28, Darwin 30 (tcpdump's print-null.c lists the same set).
AF_INET = 2
AF_INET6_VALUES = frozenset((10, 24, 28, 30))

IPPROTO_TCP = 6
# IPv6 extension headers we walk (RFC 8200 section 4; AH is RFC 4302).
IPV6_HOP_BY_HOP = 0
IPV6_ROUTING = 43
IPV6_FRAGMENT = 44
IPV6_ESP = 50
IPV6_AH = 51
IPV6_DEST_OPTIONS = 60
IPV6_SIMPLE_EXTENSIONS = frozenset((IPV6_HOP_BY_HOP, IPV6_ROUTING, IPV6_DEST_OPTIONS))
# Extension headers in one packet before we call it an evasion attempt (RFC 8200 expects
# at most one of each, ~6 in total).
MAX_IPV6_EXTENSIONS = 8

_U16 = struct.Struct("!H")
_U32_LE = struct.Struct("<I")
_IPV4_HEADER = struct.Struct("!BxHHHBB")        # ver/ihl, total length, id, flags/frag, ttl, proto
_TCP_HEADER = struct.Struct("!HHIIBB")          # sport, dport, seq, ack, data offset, flags
_IPV6_FRAGMENT = struct.Struct("!BxHI")          # next header, offset/flags, identification
# The common frame in one read: Ethernet type, an option-less IPv4 header (ver/ihl, total
# length, id, flags/frag, ttl, proto, addresses) and the TCP header's fixed fields.
_ETHERNET_IPV4_TCP = struct.Struct("!12xHBxHHHBB2x4s4sHHIIBB")
# Smallest frame the fast path reads: Ethernet 14 + IPv4 20 + TCP 20.
_ETHERNET_IPV4_TCP_MIN = 54


class FrameDecoder:
    """Stateful only for IP fragment reassembly; everything else is per frame."""

    def __init__(self, limits: FragmentLimits | None = None):
        self.stats = Stats()
        self.fragments = FragmentReassembler(limits)
        self.fragments.stats = self.stats   # one counter set for the whole stage

    def feed(self, ts: float, linktype: int, data) -> Segment | None:
        """One captured frame: its TCP segment, or None (not TCP, a fragment still waiting,
        or malformed: counted as an anomaly). One unit, not a list: a frame carries at most
        one segment (sensor/stage.py)."""
        if linktype == LINKTYPE_ETHERNET and len(data) >= _ETHERNET_IPV4_TCP_MIN:
            # Fast path, untagged Ethernet + IPv4 without options or fragmentation + TCP: one
            # unpack instead of a call per layer. Anything else (and every header the checks
            # below refuse) takes the general path, which names the anomaly.
            (ethertype, ver_ihl, total, _ident, frag, _ttl, proto, src, dst, sport, dport, seq, ack,
             offset, flags) = _ETHERNET_IPV4_TCP.unpack_from(data, 0)
            if (ethertype == ETHERTYPE_IPV4 and ver_ihl == 0x45 and proto == IPPROTO_TCP
                    and not frag & 0x3FFF and 40 <= total <= len(data) - 14):
                header = (offset >> 4) * 4
                if 20 <= header <= total - 20:
                    return src, dst, sport, dport, seq, ack, flags, memoryview(data)[34 + header:14 + total], ()
        view = memoryview(data)
        if linktype == LINKTYPE_ETHERNET:
            return self._ethertype(ts, view, 12)
        if linktype == LINKTYPE_LINUX_SLL:
            return self._ethertype(ts, view, 14)
        if linktype == LINKTYPE_LINUX_SLL2:
            if len(view) < 20:
                return self._bad(ts, "link_truncated")
            return self._network(ts, _U16.unpack_from(view, 0)[0], view[20:], ())
        if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_OLD, LINKTYPE_RAW_OLD2, LINKTYPE_IPV4, LINKTYPE_IPV6):
            if not view:
                return self._bad(ts, "link_truncated")
            version = view[0] >> 4
            return self._network(ts, ETHERTYPE_IPV4 if version == 4 else ETHERTYPE_IPV6 if version == 6 else 0, view, ())
        if linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
            if len(view) < 4:
                return self._bad(ts, "link_truncated")
            family = _U32_LE.unpack_from(view, 0)[0]
            if family > 0xFFFF:       # written by a host of the other byte order
                family = int.from_bytes(view[:4], "big")
            if family == AF_INET:
                return self._network(ts, ETHERTYPE_IPV4, view[4:], ())
            if family in AF_INET6_VALUES:
                return self._network(ts, ETHERTYPE_IPV6, view[4:], ())
            return None
        self.stats["frames_unknown_linktype"] += 1
        return None

    def _ethertype(self, ts: float, view: memoryview, at: int) -> Segment | None:
        """Ethernet and SLL put the ethertype at ``at``; VLAN tags may follow, 4 bytes each."""
        if len(view) < at + 2:
            return self._bad(ts, "link_truncated")
        ethertype = _U16.unpack_from(view, at)[0]
        vlan: tuple[int, ...] = ()
        while ethertype in VLAN_ETHERTYPES:
            if len(vlan) == MAX_VLAN_TAGS or len(view) < at + 6:
                return self._bad(ts, "vlan_truncated")
            vlan += (_U16.unpack_from(view, at + 2)[0] & 0x0FFF,)
            at += 4
            ethertype = _U16.unpack_from(view, at)[0]
        return self._network(ts, ethertype, view[at + 2:], vlan)

    def _network(self, ts: float, ethertype: int, view: memoryview, vlan: tuple) -> Segment | None:
        if ethertype == ETHERTYPE_IPV4:
            return self._ipv4(ts, view, vlan)
        if ethertype == ETHERTYPE_IPV6:
            return self._ipv6(ts, view, vlan)
        return None

    def _ipv4(self, ts: float, view: memoryview, vlan: tuple) -> Segment | None:
        if len(view) < 20:
            return self._bad(ts, "ip_truncated")
        ver_ihl, total, ident, frag, _ttl, proto = _IPV4_HEADER.unpack_from(view, 0)
        if proto != IPPROTO_TCP:
            return None
        ihl = (ver_ihl & 0x0F) * 4
        if total == 0:
            # Captured on the sender before TCP segmentation offload filled the length in
            # (Wireshark's "reported as 0, presumed TSO"): the frame is the datagram.
            self.stats["ip_tso_length_zero"] += 1
            total = len(view)
        if ver_ihl >> 4 != 4 or ihl < 20 or total < ihl:
            return self._bad(ts, "ip_bad_header")
        if total > len(view):
            # Cut by the snaplen (or a lying length): decode what was captured; the TCP
            # stage sees the missing tail as a hole.
            self.stats.anomaly(ts, "ip", "ip_truncated")
            total = len(view)
        src, dst = bytes(view[12:16]), bytes(view[16:20])
        payload = view[ihl:total]       # trims Ethernet padding
        if frag & 0x3FFF:               # MF set or a non-zero offset: a fragment (RFC 791)
            whole = self.fragments.feed(ts, (src, dst, proto, ident), (frag & 0x1FFF) * 8, bool(frag & 0x2000), payload)
            if whole is None:
                return None
            payload = memoryview(whole)
        return self._tcp(ts, src, dst, payload, vlan)

    def _ipv6(self, ts: float, view: memoryview, vlan: tuple) -> Segment | None:
        if len(view) < 40:
            return self._bad(ts, "ip_truncated")
        if view[0] >> 4 != 6:
            return self._bad(ts, "ip_bad_header")
        length = _U16.unpack_from(view, 4)[0]
        next_header = view[6]
        if length == 0 or 40 + length > len(view):
            # 0 is a jumbogram (RFC 2675) or a lie; too long is a snaplen cut. Use what we have.
            if length:
                self.stats.anomaly(ts, "ip", "ip_truncated")
            length = len(view) - 40
        src, dst = bytes(view[8:24]), bytes(view[24:40])
        payload = view[40:40 + length]      # trims Ethernet padding
        for _ in range(MAX_IPV6_EXTENSIONS):
            if next_header == IPPROTO_TCP:
                return self._tcp(ts, src, dst, payload, vlan)
            if next_header in IPV6_SIMPLE_EXTENSIONS or next_header == IPV6_AH:
                if len(payload) < 8:
                    return self._bad(ts, "ipv6_bad_extension")
                # AH counts its length in 4-byte units minus 2 (RFC 4302 2.2); the others in
                # 8-byte units not counting the first 8 (RFC 8200 4.3).
                size = (payload[1] + 2) * 4 if next_header == IPV6_AH else (payload[1] + 1) * 8
                if size > len(payload):
                    return self._bad(ts, "ipv6_bad_extension")
                next_header = payload[0]
                payload = payload[size:]
            elif next_header == IPV6_FRAGMENT:
                if len(payload) < 8:
                    return self._bad(ts, "ipv6_bad_extension")
                next_header, offset_flags, ident = _IPV6_FRAGMENT.unpack_from(payload, 0)
                if offset_flags & 0xFFF9 == 0:
                    payload = payload[8:]       # atomic fragment (RFC 6946): nothing to join
                    continue
                whole = self.fragments.feed(ts, (src, dst, ident), offset_flags & 0xFFF8, bool(offset_flags & 1), payload[8:])
                if whole is None:
                    return None
                payload = memoryview(whole)
            else:
                return None     # UDP, ICMPv6, ESP (encrypted: nothing to see), no-next-header...
        return self._bad(ts, "ipv6_too_many_extensions")

    def _tcp(self, ts: float, src: bytes, dst: bytes, payload: memoryview, vlan: tuple) -> Segment | None:
        if len(payload) < 20:
            return self._bad(ts, "tcp_truncated")
        sport, dport, seq, ack, offset, flags = _TCP_HEADER.unpack_from(payload, 0)
        header = (offset >> 4) * 4
        if header < 20 or header > len(payload):
            return self._bad(ts, "tcp_bad_header")
        return src, dst, sport, dport, seq, ack, flags, payload[header:], vlan

    def _bad(self, ts: float, name: str) -> None:
        self.stats.anomaly(ts, "tcp" if name.startswith("tcp") else "ip", name)
        return None

    def close(self, ts: float) -> list:
        return self.fragments.close()
