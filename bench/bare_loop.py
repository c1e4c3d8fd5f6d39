"""The ceiling for any Python pcap reader: mmap the file, walk the records with struct and read
the Ethernet, IPv4 and TCP headers of each frame, nothing more.

    .venv/bin/python bench/bare_loop.py FILE      prints one JSON line: packets, bytes, tcp
"""
from __future__ import annotations

import json
import mmap
import struct
import sys

PCAP_HEADER = 24          # libpcap global header
RECORD_HEADER = 16        # ts_sec, ts_frac, caplen, origlen
ETHERTYPE_IPV4 = 0x0800
IPPROTO_TCP = 6
# Ethernet type, then IPv4 version/IHL, protocol and addresses, then TCP ports, seq and flags
# at the offsets a 20-byte IPv4 header puts them: all an L2-L4 reader has to look at.
_L2_L4 = struct.Struct("!12xHB8xB2x4s4sHHI5xB")


def walk(path: str) -> dict:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        unpack_record = struct.Struct(endian + "IIII").unpack_from
        unpack_l2_l4 = _L2_L4.unpack_from
        size = len(data)
        at, packets, tcp = PCAP_HEADER, 0, 0
        while at + RECORD_HEADER <= size:
            caplen = unpack_record(data, at)[2]
            at += RECORD_HEADER
            if caplen >= _L2_L4.size:
                ethertype, _ver_ihl, proto, _src, _dst, _sport, _dport, _seq, _flags = unpack_l2_l4(data, at)
                if ethertype == ETHERTYPE_IPV4 and proto == IPPROTO_TCP:
                    tcp += 1
            at += caplen
            packets += 1
        return {"packets": packets, "bytes": size, "tcp": tcp}


if __name__ == "__main__":
    print(json.dumps(walk(sys.argv[1])))
