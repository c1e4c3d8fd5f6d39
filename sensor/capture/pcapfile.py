"""Capture file readers: classic pcap and pcapng, streamed in windows, never loaded whole.

``open_capture(path)`` sniffs the format and returns a reader. Iterating it yields plain tuples
``(ts, linktype, data, frame)``: ``data`` is a ``bytes`` object owned by the caller (sliced out
of the read buffer), so it may outlive the reader and be kept by later stages; ``frame`` counts
from 1 like Wireshark. A truncated tail or a corrupt record is an anomaly, not an exception:
the reader stops cleanly and keeps what it read. Only input that cannot be a capture at all
raises ``CaptureError``, when opening. A ``.gz`` file (by its gzip magic) is read through
``gzip`` the same way.

A regular uncompressed file is read through a read-only mmap window that moves along it
(records are sliced straight out of the mapping: no read() copy into a buffer, and no join
copy when a record straddles two reads), anything else (gzip, a pipe) by read() in chunks. A
file cut shorter by another process *while* it is mapped is the one case this does not
survive (SIGBUS, as with any mmap reader); a file that grows is read to its end.
"""
from __future__ import annotations

import gzip
import mmap
import os
import stat
import struct
import zlib
from typing import BinaryIO, Iterator

from sensor.anomaly import Stats

# Bytes read from the file at a time: large enough that per-read overhead vanishes, small
# enough that memory stays flat on multi-gigabyte files.
READ_CHUNK = 1 << 20
# Bytes of a regular file mapped at a time: 16 remaps per 256 MiB cost nothing, and the window
# is all of the file that counts in the reader's RSS.
MAP_WINDOW = 16 << 20
# A record claiming more than this is corrupt: 256 KiB is libpcap's MAXIMUM_SNAPLEN and the
# largest snaplen tcpdump/dumpcap write (pcapng blocks carry a little framing on top).
MAX_RECORD = 262_144 + 4096

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
GZIP_MAGIC = b"\x1f\x8b"

# pcapng block types (draft-ietf-opsawg-pcapng section 4 and 10.1)
_IDB = 1
_OPB = 2   # obsolete Packet Block, still written by old tools
_SPB = 3
_EPB = 6
# Smallest well-formed block of each type: 12 bytes of framing plus its fixed fields
# (pcapng draft 4.2 IDB linktype+snaplen 8, 4.3 EPB / OPB 20, 4.4 SPB original length 4); a
# shorter one would read its fields out of the next block.
_MIN_BLOCK = {_IDB: 20, _OPB: 32, _SPB: 16, _EPB: 32}
# IDB options: if_tsresol (section 4.2: MSB clear = 10^-n, set = 2^-n) and if_tsoffset (seconds).
_OPT_END = 0
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14


class CaptureError(Exception):
    """The file cannot be read as a capture at all (a one-line message for the user)."""


Packet = tuple[float, int, bytes, int]


# What reading a damaged file raises: I/O errors, a gzip stream cut short (EOFError) or
# corrupt (zlib.error, found by the capture_file fuzz target).
_DAMAGED_STREAM = (OSError, EOFError, zlib.error)


class _Chunked:
    """A forward-only window over a file: ``need(n)`` guarantees n bytes at ``pos`` or fewer at EOF."""

    __slots__ = ("_file", "buf", "pos", "consumed_before")

    def __init__(self, file: BinaryIO, head: bytes):
        self._file = file
        self.buf = head
        self.pos = 0
        self.consumed_before = 0   # file bytes dropped from the front of buf

    def need(self, n: int) -> bool:
        if len(self.buf) - self.pos >= n:
            return True
        rest = self.buf[self.pos:]
        self.consumed_before += self.pos
        parts = [rest]
        have = len(rest)
        while have < n:
            # gzip streams may return short reads before EOF; only an empty read is the end.
            # A corrupt or cut gzip stream ends the file there: what came before is good.
            try:
                more = self._file.read(max(READ_CHUNK, n - have))
            except _DAMAGED_STREAM:
                more = b""
            if not more:
                break
            parts.append(more)
            have += len(more)
        self.buf = b"".join(parts)
        self.pos = 0
        return have >= n

    @property
    def position(self) -> int:
        return self.consumed_before + self.pos


class _Mapped:
    """``_Chunked``'s window over a regular file, as a read-only mmap that moves forward."""

    __slots__ = ("_file", "buf", "pos", "consumed_before")

    def __init__(self, file: BinaryIO):
        self._file = file
        self.buf: bytes | mmap.mmap = b""
        self.pos = 0
        self.consumed_before = 0   # file offset of buf[0]

    def need(self, n: int) -> bool:
        if len(self.buf) - self.pos >= n:
            return True
        start = self.consumed_before + self.pos
        offset = start - start % mmap.ALLOCATIONGRANULARITY     # mmap offsets are page-aligned
        size = os.fstat(self._file.fileno()).st_size             # read a growing file to its end
        length = min(size - offset, max(MAP_WINDOW, start - offset + n))
        if length <= start - offset:
            return False
        self.buf = mmap.mmap(self._file.fileno(), length, offset=offset, access=mmap.ACCESS_READ)
        self.consumed_before, self.pos = offset, start - offset
        return len(self.buf) - self.pos >= n

    @property
    def position(self) -> int:
        return self.consumed_before + self.pos


class CaptureReader:
    """Shared surface of the two readers: ``size``, ``position``, ``stats``, iteration, close."""

    def __init__(self, path: str, file: BinaryIO, head: bytes, size: int):
        self.path = path
        self.size = size
        self.stats = Stats()
        self._file = file
        self._in = _source(file, head)

    @property
    def position(self) -> int:
        """Bytes of the (uncompressed) file consumed so far, for a progress bar against ``size``."""
        return self._in.position

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "CaptureReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Packet]:
        raise NotImplementedError

    def _truncated(self, detail: str) -> None:
        self.stats.anomaly(0.0, "capture", "capture_truncated", detail=f"{self.path}: {detail}")


class PcapReader(CaptureReader):
    """Classic libpcap format: either byte order, micro- or nanosecond timestamps."""

    def __iter__(self) -> Iterator[Packet]:
        src = self._in
        src.need(24)
        magic_le = struct.unpack_from("<I", src.buf, 0)[0]
        endian = "<" if magic_le in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC) else ">"
        magic, _major, _minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack_from(endian + "IHHiIII", src.buf, 0)
        # The top bits of the link-type field carry the FCS length (pcap spec section 5); mask them.
        linktype &= 0x0FFFFFFF
        scale = 1e-9 if magic == PCAP_MAGIC_NSEC else 1e-6
        src.pos = 24
        record = struct.Struct(endian + "IIII")
        unpack = record.unpack_from
        stats = self.stats
        frame = total = 0
        buf, at = src.buf, src.pos
        try:
            while True:
                if len(buf) - at < 16:      # the common case skips the method call
                    src.pos = at
                    if not src.need(16):
                        if len(src.buf) > src.pos:
                            self._truncated(f"partial record header after frame {frame}")
                        return
                    buf, at = src.buf, src.pos
                sec, frac, caplen, _origlen = unpack(buf, at)
                if caplen > MAX_RECORD:
                    stats.anomaly(0.0, "capture", "capture_corrupt_record",
                                  detail=f"{self.path}: frame {frame + 1} claims {caplen} bytes")
                    return
                if len(buf) - at < 16 + caplen:
                    src.pos = at
                    if not src.need(16 + caplen):
                        self._truncated(f"frame {frame + 1} cut short")
                        return
                    buf, at = src.buf, src.pos
                start = at + 16
                at = src.pos = start + caplen     # ``position`` follows, for the progress bar
                frame += 1
                total += caplen
                yield sec + frac * scale, linktype, buf[start:start + caplen], frame
        finally:
            # counted here, not per packet: Counter updates would cost a third of the loop
            stats["packets"] += frame
            stats["bytes"] += total


class PcapngReader(CaptureReader):
    """pcapng: any number of sections (each with its byte order) and interfaces (each with
    its link type and timestamp resolution); EPB, SPB and OPB carry packets, other blocks
    (name resolution, statistics, secrets, custom) are skipped and counted."""

    def __iter__(self) -> Iterator[Packet]:
        src = self._in
        stats = self.stats
        endian = "<"
        header = struct.Struct("<II")
        # per interface of the current section: (linktype, seconds per tick, offset seconds, snaplen)
        interfaces: list[tuple[int, float, int, int]] = []
        frame = 0
        while True:
            if not src.need(12):
                if len(src.buf) > src.pos:
                    self._truncated(f"partial block header after frame {frame}")
                return
            buf, at = src.buf, src.pos
            if struct.unpack_from("<I", buf, at)[0] == PCAPNG_SHB:
                # Section header: the byte-order magic decides how this whole section is read.
                bom = struct.unpack_from("<I", buf, at + 8)[0]
                if bom == PCAPNG_BYTE_ORDER_MAGIC:
                    endian = "<"
                elif bom == 0x4D3C2B1A:
                    endian = ">"
                else:
                    stats.anomaly(0.0, "capture", "capture_corrupt_record",
                                  detail=f"{self.path}: bad section byte-order magic after frame {frame}")
                    return
                header = struct.Struct(endian + "II")
                interfaces = []
            btype, blen = header.unpack_from(buf, at)
            if blen < 12 or blen % 4 or blen > MAX_RECORD:
                stats.anomaly(0.0, "capture", "capture_corrupt_record",
                              detail=f"{self.path}: block of {blen} bytes after frame {frame}")
                return
            if not src.need(blen):
                self._truncated(f"block cut short after frame {frame}")
                return
            buf, at = src.buf, src.pos
            src.pos = at + blen
            body = at + 8
            body_end = at + blen - 4
            if blen < _MIN_BLOCK.get(btype, 12):
                stats.anomaly(0.0, "capture", "capture_corrupt_record",
                              detail=f"{self.path}: block type {btype:#x} of {blen} bytes after frame {frame}")
                continue
            if btype == _EPB or btype == _OPB:
                if btype == _EPB:
                    ifid, ts_hi, ts_lo, caplen = struct.unpack_from(endian + "IIII", buf, body)
                else:
                    ifid, _drops, ts_hi, ts_lo, caplen = struct.unpack_from(endian + "HHIII", buf, body)
                data_at = body + 20
                if ifid >= len(interfaces) or data_at + caplen > body_end:
                    stats.anomaly(0.0, "capture", "capture_corrupt_record",
                                  detail=f"{self.path}: packet block after frame {frame} (interface {ifid}, {caplen} bytes)")
                    continue
                linktype, tick, offset, _snap = interfaces[ifid]
                ts = offset + ((ts_hi << 32) | ts_lo) * tick
            elif btype == _SPB:
                # Simple Packet Block: interface 0, no timestamp, captured length = min(len, snaplen, room).
                if not interfaces:
                    stats.anomaly(0.0, "capture", "capture_corrupt_record",
                                  detail=f"{self.path}: simple packet block before any interface")
                    continue
                origlen = struct.unpack_from(endian + "I", buf, body)[0]
                linktype, _tick, _offset, snaplen = interfaces[0]
                data_at = body + 4
                caplen = min(origlen, body_end - data_at, snaplen or origlen)
                ts = 0.0
            elif btype == _IDB:
                interfaces.append(self._interface(buf, body, body_end, endian))
                continue
            else:
                if btype != PCAPNG_SHB:
                    stats["pcapng_blocks_skipped"] += 1
                continue
            frame += 1
            stats["packets"] += 1
            stats["bytes"] += caplen
            yield ts, linktype, buf[data_at:data_at + caplen], frame

    @staticmethod
    def _interface(buf: bytes, body: int, end: int, endian: str) -> tuple[int, float, int, int]:
        linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", buf, body)
        tick, offset = 1e-6, 0   # if_tsresol default: microseconds
        opt = body + 8
        while opt + 4 <= end:
            code, length = struct.unpack_from(endian + "HH", buf, opt)
            if code == _OPT_END:
                break
            value = opt + 4
            if code == _OPT_IF_TSRESOL and length >= 1:
                res = buf[value]
                tick = 2.0 ** -(res & 0x7F) if res & 0x80 else 10.0 ** -res
            elif code == _OPT_IF_TSOFFSET and length >= 8:
                offset = struct.unpack_from(endian + "q", buf, value)[0]
            opt = value + (length + 3) // 4 * 4
        return linktype, tick, offset, snaplen


def _source(file: BinaryIO, head: bytes) -> _Chunked | _Mapped:
    """An mmap window for a regular uncompressed file, else chunked reads after ``head``."""
    if isinstance(file, gzip.GzipFile):
        return _Chunked(file, head)
    try:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return _Chunked(file, head)
        source = _Mapped(file)
        source.need(len(head))
        return source
    except (OSError, ValueError):     # a file system that cannot map: read it
        file.seek(len(head))
        return _Chunked(file, head)


def open_capture(path: str) -> CaptureReader:
    """Open a pcap, pcapng or gzip'ed pcap/pcapng file; raise CaptureError if it is none of them."""
    try:
        file: BinaryIO = open(path, "rb")
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except PermissionError:
        raise CaptureError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CaptureError(f"{path}: cannot open ({exc.strerror})") from None
    size = os.fstat(file.fileno()).st_size
    try:
        head = file.read(24)
        if head[:2] == GZIP_MAGIC:
            file.seek(0)
            file = gzip.GzipFile(fileobj=file, mode="rb")
            head = file.read(24)
    except _DAMAGED_STREAM as exc:
        file.close()
        raise CaptureError(f"{path}: unreadable ({exc})") from None
    if not head:
        file.close()
        raise CaptureError(f"{path}: empty file")
    if len(head) >= 4:
        magic = struct.unpack_from("<I", head, 0)[0]
        swapped = struct.unpack_from(">I", head, 0)[0]
        if magic in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC) or swapped in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC):
            if len(head) < 24:
                file.close()
                raise CaptureError(f"{path}: pcap file header cut short ({len(head)} of 24 bytes)")
            return PcapReader(path, file, head, size)
        if magic == PCAPNG_SHB:
            return PcapngReader(path, file, head, size)
    file.close()
    raise CaptureError(f"{path}: not a pcap or pcapng file (magic {head[:4].hex()})")
