"""Big real captures for the store's concurrency tests: a lab capture repeated many times,
each copy moved in time as editcap -t would, written as one classic pcap."""
from __future__ import annotations

import struct
from pathlib import Path

PCAP_HEADER = 24
RECORD_HEADER = struct.Struct("<IIII")      # ts_sec, ts_usec, incl_len, orig_len (little-endian pcap)
DAY = 86_400


def records(path: Path) -> tuple[bytes, list[tuple[int, bytes]]]:
    """The global header and (microsecond time, rest of record) of a little-endian pcap."""
    data = path.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", f"{path}: expected a little-endian microsecond pcap"
    out, offset = [], PCAP_HEADER
    while offset < len(data):
        sec, usec, incl, orig = RECORD_HEADER.unpack_from(data, offset)
        body = data[offset + RECORD_HEADER.size: offset + RECORD_HEADER.size + incl]
        out.append((sec * 1_000_000 + usec, struct.pack("<II", incl, orig) + body))
        offset += RECORD_HEADER.size + incl
    return data[:PCAP_HEADER], out


def repeated(base: Path, out: Path, copies: int, days: int = 1, spacing: float = 1.0,
             shift_days: int = 0) -> Path:
    """``copies`` copies of ``base``, ``spacing`` seconds apart (each copy's TCP connections
    close before the next starts), spread evenly over ``days`` consecutive days, the first
    moved by ``shift_days``."""
    header, frames = records(base)
    per_day = -(-copies // days)
    with open(out, "wb") as f:
        f.write(header)
        for n in range(copies):
            shift = int(((shift_days + n // per_day) * DAY + (n % per_day) * spacing) * 1_000_000)
            for ts, rest in frames:
                t = ts + shift
                f.write(struct.pack("<II", t // 1_000_000, t % 1_000_000) + rest)
    return out
