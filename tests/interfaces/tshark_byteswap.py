"""A little-endian DCE/RPC capture rewritten big endian, guided only by tshark's dissection:
the stand-in for a big-endian client where none exists (Samba's python bindings have no EFSR,
EVEN or FSRVP module, impacket marshals little endian only).

For every request PDU tshark dissects, each distinct octet range tshark shows as an integer
field (FT_UINT16/32/64, FT_INT*: header fields, counts, referent ids, the call's integers)
is reversed, each UTF-16 string field (FT_STRING, FT_STRINGZ) has its units reversed, and
drep[0]'s integer nibble is cleared (C706 14.2.5: 0 is big endian). Octets tshark does not
dissect as either (opaque bytes, padding) stay. Nothing of the sensor is used: the swap is as
good as tshark's dissection, and tshark re-reads the result.
"""
from __future__ import annotations

import struct
import subprocess
import xml.etree.ElementTree as ElementTree
from functools import lru_cache
from pathlib import Path

INTEGER_TYPES = {"FT_UINT16", "FT_UINT32", "FT_UINT64", "FT_INT16", "FT_INT32", "FT_INT64"}
STRING_TYPES = {"FT_STRING", "FT_STRINGZ"}
PCAP_MAGIC_LE = b"\xd4\xc3\xb2\xa1"     # classic pcap, microseconds, little-endian headers
PCAP_HEADER, RECORD_HEADER = 24, 16


@lru_cache(maxsize=1)
def field_types() -> dict[str, str]:
    """tshark's glossary: field abbreviation -> FT_ type."""
    run = subprocess.run(["tshark", "-G", "fields"], capture_output=True, text=True, check=True)
    return {cols[2]: cols[3] for cols in (line.split("\t") for line in run.stdout.splitlines())
            if len(cols) > 3 and cols[0] == "F"}


def swaps(pcap: Path, protocols: set[str]) -> dict[int, list[tuple[str, int, int]]]:
    """frame number -> [(kind, pos, size)] for the request PDUs: kind "int", "utf16" or "drep"."""
    run = subprocess.run(["tshark", "-r", str(pcap), "-Y", "dcerpc.pkt_type == 0", "-T", "pdml"],
                         capture_output=True, text=True, check=True)
    types = field_types()
    found: dict[int, list[tuple[str, int, int]]] = {}
    for packet in ElementTree.fromstring(run.stdout).iter("packet"):
        frame = None
        ranges: dict[tuple[int, int], str] = {}
        for proto in packet.iter("proto"):
            if proto.get("name") == "frame":
                frame = int(next(f.get("show") for f in proto.iter("field") if f.get("name") == "frame.number"))
            if proto.get("name") not in protocols | {"dcerpc"}:
                continue
            for field in proto.iter("field"):
                name, pos, size = field.get("name", ""), field.get("pos"), field.get("size")
                if pos is None or size is None or int(size) < 2 and name != "dcerpc.drep.byteorder":
                    continue
                kind = {**{t: "int" for t in INTEGER_TYPES}, **{t: "utf16" for t in STRING_TYPES}}.get(
                    types.get(name, ""))
                if name == "dcerpc.drep.byteorder":
                    kind = "drep"
                if kind is not None:
                    ranges.setdefault((int(pos), int(size)), kind)
        found[frame] = [(kind, pos, size) for (pos, size), kind in sorted(ranges.items())]
    return found


def big_endian_copy(pcap: Path, out: Path, protocols: set[str]) -> dict[int, list[tuple[str, int, int]]]:
    """Write ``out``: ``pcap`` with its request PDUs rewritten big endian. Returns what was swapped."""
    plan = swaps(pcap, protocols)
    data = bytearray(pcap.read_bytes())
    assert data[:4] == PCAP_MAGIC_LE, "classic little-endian pcap expected"
    at, frame = PCAP_HEADER, 0
    while at + RECORD_HEADER <= len(data):
        frame += 1
        incl = struct.unpack_from("<I", data, at + 8)[0]
        start = at + RECORD_HEADER
        for kind, pos, size in plan.get(frame, ()):
            octets = data[start + pos:start + pos + size]
            if kind == "int":
                data[start + pos:start + pos + size] = octets[::-1]
            elif kind == "utf16":
                data[start + pos:start + pos + size:2], data[start + pos + 1:start + pos + size:2] = \
                    octets[1::2], octets[0::2]
            else:                                    # drep[0]: integer representation nibble 0
                data[start + pos] &= 0x0F
        at = start + incl
    out.write_bytes(bytes(data))
    return plan
