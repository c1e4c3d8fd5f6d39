"""Community ID v1 flow hash (https://github.com/corelight/community-id-spec), for net_community_id.

It lets an analyst pivot from a sensor event to the same connection in Zeek, Suricata or
Wireshark logs.
"""
from __future__ import annotations

import base64
import hashlib
import socket
import struct

COMMUNITY_ID_SEED = 0     # the spec's default seed; every tool must agree on it to match
IPPROTO_TCP = 6


def community_id(src_ip: str, src_port: int, dst_ip: str, dst_port: int, proto: int = IPPROTO_TCP) -> str:
    family = socket.AF_INET6 if ":" in src_ip else socket.AF_INET
    src, dst = socket.inet_pton(family, src_ip), socket.inet_pton(family, dst_ip)
    # The spec orders the endpoints so both directions of a flow hash the same.
    if (src, src_port) > (dst, dst_port):
        src, dst, src_port, dst_port = dst, src, dst_port, src_port
    digest = hashlib.sha1(
        struct.pack("!H", COMMUNITY_ID_SEED) + src + dst + struct.pack("!BBHH", proto, 0, src_port, dst_port)
    ).digest()
    return "1:" + base64.b64encode(digest).decode()
