"""Frames built with scapy's encoders, decoded by the struct-based FrameDecoder."""
import socket
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                                IPv6ExtHdrRouting, fragment6)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from sensor.net.frames import FrameDecoder

PAYLOAD = b"\x00\x00\x00\x10\xfeSMB" + bytes(range(8))
V4 = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=50000, dport=445, seq=1000, ack=2000, flags="PA") / PAYLOAD
V6_ADDRS = dict(src="2001:db8::1", dst="2001:db8::2")
V6_TCP = TCP(sport=50000, dport=445, seq=1000, ack=2000, flags="PA") / PAYLOAD


def decode(linktype: int, frame, ts: float = 0.0, decoder: FrameDecoder | None = None):
    return (decoder or FrameDecoder()).feed(ts, linktype, bytes(frame))


def assert_v4_segment(segment, vlan=()):
    src, dst, sport, dport, seq, ack, flags, payload, tags = segment
    assert (src, dst) == (socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"))
    assert (sport, dport, seq, ack, flags) == (50000, 445, 1000, 2000, 0x18)
    assert bytes(payload) == PAYLOAD and tags == vlan


def test_ethernet_ipv4_tcp_and_padding_trimmed():
    frame = bytes(Ether() / V4)
    assert_v4_segment(decode(1, frame))
    assert_v4_segment(decode(1, frame + b"\0" * 6))   # Ethernet minimum-size padding


@pytest.mark.parametrize("tags,expected", [
    (lambda p: Ether() / Dot1Q(vlan=42) / p, (42,)),
    (lambda p: Ether() / Dot1AD(vlan=7) / Dot1Q(vlan=42) / p, (7, 42)),
    (lambda p: Ether(type=0x9100) / Dot1Q(vlan=300, type=0x8100) / Dot1Q(vlan=5) / p, (300, 5)),
])
def test_vlan_and_qinq(tags, expected):
    assert_v4_segment(decode(1, tags(V4)), expected)


def test_linux_cooked_v1_and_v2():
    assert_v4_segment(decode(113, CookedLinux(proto=0x0800) / V4))
    sll2 = struct.pack("!HHIHBB8s", 0x0800, 0, 3, 1, 0, 6, b"\x00\x11\x22\x33\x44\x55\0\0")
    assert_v4_segment(decode(276, sll2 + bytes(V4)))


@pytest.mark.parametrize("linktype", [101, 12, 14, 228])
def test_raw_ip(linktype):
    assert_v4_segment(decode(linktype, V4))


@pytest.mark.parametrize("header", [struct.pack("<I", 2), struct.pack(">I", 2)])
def test_bsd_null_loopback_either_byte_order(header):
    assert_v4_segment(decode(0, header + bytes(V4)))
    assert_v4_segment(decode(108, header + bytes(V4)))


def test_null_loopback_ipv6_darwin_family():
    segment = decode(0, struct.pack("<I", 30) + bytes(IPv6(**V6_ADDRS) / V6_TCP))
    assert socket.inet_ntop(socket.AF_INET6, segment[0]) == "2001:db8::1"
    assert bytes(segment[7]) == PAYLOAD


def test_ipv6_extension_headers_walked():
    # scapy leaves AH's next header and length at 0 over IPv6, so they are set by hand (RFC 4302 2.2).
    packet = (IPv6(**V6_ADDRS) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
              / IPv6ExtHdrRouting(addresses=["2001:db8::9"]) / AH(nh=6, payloadlen=4, spi=1, icv=b"\0" * 12) / V6_TCP)
    segment = decode(229, packet)
    assert segment[2:4] == (50000, 445) and bytes(segment[7]) == PAYLOAD


def test_ipv6_esp_and_udp_are_not_tcp():
    assert decode(229, bytes(IPv6(**V6_ADDRS, nh=50) / Raw(b"\0" * 40))) is None
    assert decode(1, Ether() / IP() / UDP() / b"x") is None


def test_ipv4_fragments_reassembled_in_any_order_with_overlap_counted():
    big = IP(src="10.0.0.1", dst="10.0.0.2", id=77) / TCP(sport=50000, dport=445, seq=5, flags="PA") / (b"A" * 3000)
    frags = fragment(big, fragsize=1000)
    assert len(frags) == 4
    decoder = FrameDecoder()
    order = [frags[3], frags[1], frags[1], frags[0], frags[2]]
    results = [decode(101, f, decoder=decoder) for f in order]
    assert results[:-1] == [None] * 4
    assert bytes(results[-1][7]) == b"A" * 3000 and results[-1][4] == 5
    assert decoder.stats["anomaly.ip_fragment_overlap"] == 1
    assert decoder.stats["anomaly.ip_fragment_overlap_conflict"] == 0


def test_ipv4_overlapping_fragment_with_other_bytes_first_wins():
    big = IP(src="10.0.0.1", dst="10.0.0.2", id=9) / TCP(sport=50000, dport=445, flags="PA") / (b"A" * 2000)
    first, second, third = fragment(big, fragsize=1000)
    evil = second.copy()
    evil[Raw].load = b"B" * len(evil[Raw].load)
    decoder = FrameDecoder()
    for frag in (first, second, evil):
        assert decode(101, frag, decoder=decoder) is None
    segment = decode(101, third, decoder=decoder)
    assert bytes(segment[7]) == b"A" * 2000
    assert decoder.stats["anomaly.ip_fragment_overlap_conflict"] == 1


def test_fragment_table_is_bounded_and_times_out():
    from sensor.net.ipfrag import FragmentLimits
    decoder = FrameDecoder(FragmentLimits(max_datagrams=2, timeout=30.0))
    for ident in range(3):
        half = fragment(IP(src="10.0.0.1", dst="10.0.0.2", id=ident) / TCP() / (b"x" * 100), fragsize=64)[0]
        decoder.feed(0.0, 101, bytes(half))
    assert decoder.stats["anomaly.ip_fragment_table_full"] == 1
    late = fragment(IP(src="10.0.0.1", dst="10.0.0.2", id=99) / TCP() / (b"x" * 100), fragsize=64)[0]
    decoder.feed(100.0, 101, bytes(late))
    assert decoder.stats["ip_fragments_timed_out"] == 2


def test_ipv6_fragments_reassembled():
    packet = IPv6(**V6_ADDRS) / IPv6ExtHdrFragment(id=1234) / TCP(sport=1, dport=445, flags="PA") / (b"Z" * 3000)
    frags = fragment6(packet, 1280)
    assert len(frags) == 3
    decoder = FrameDecoder()
    results = [decode(229, f, decoder=decoder) for f in reversed(frags)]
    assert results[:2] == [None, None]
    assert bytes(results[2][7]) == b"Z" * 3000 and results[2][3] == 445


@pytest.mark.parametrize("frame,anomaly", [
    (bytes(Ether() / V4)[:30], "ip_truncated"),
    (bytes(Ether(type=0x0800)) + b"\x43" + bytes(V4)[1:], "ip_bad_header"),   # IHL 3
    (bytes(Ether() / IP(proto=6)) + b"\0" * 10, "tcp_truncated"),
    (bytes(Ether() / IP() / TCP(dataofs=15)), "tcp_bad_header"),
    (bytes(Ether(type=0x8100)) + b"\x00", "vlan_truncated"),
])
def test_broken_headers_are_anomalies_not_exceptions(frame, anomaly):
    decoder = FrameDecoder()
    assert decoder.feed(0.0, 1, frame) is None
    assert decoder.stats["anomaly." + anomaly] == 1


def test_snaplen_cut_frame_delivers_captured_part():
    decoder = FrameDecoder()
    frame = bytes(Ether() / V4)
    segment = decoder.feed(0.0, 1, frame[:-4])
    assert bytes(segment[7]) == PAYLOAD[:-4]
    assert decoder.stats["anomaly.ip_truncated"] == 1


def test_tso_zero_total_length_uses_the_frame():
    frame = bytearray(bytes(Ether() / V4))
    frame[16:18] = b"\0\0"
    assert_v4_segment(decode(1, frame))


def test_garbage_never_raises():
    import random
    rng = random.Random(7)
    decoder = FrameDecoder()
    base = bytes(Ether() / Dot1Q() / V4)
    for _ in range(3000):
        frame = bytearray(base[:rng.randrange(len(base) + 1)])
        for _ in range(rng.randrange(4)):
            if frame:
                frame[rng.randrange(len(frame))] = rng.randrange(256)
        decoder.feed(0.0, rng.choice([0, 1, 101, 113, 229, 276]), bytes(frame))
