"""Capture file readers: classic pcap and pcapng, streamed in windows, never loaded whole.

``open_capture(path)`` sniffs the format and returns a reader. Iterating it yields plain tuples
``(ts, linktype, data, frame)``: ``data`` is a ``bytes`` object owned by the caller (sliced out
of the read buffer), so it may outlive the reader and be kept by later stages; ``frame`` counts
from 1 like Wireshark. Damage is an anomaly, not an exception, and the first detail of each
kind is kept in ``problems`` for the user: a record too big to be a packet is skipped (pcapng's
block length says where the next block starts; a pcap record only when its header is
consistent and a record header follows it), a frame whose time is not a date is skipped, and a
truncated tail, a corrupt record or a long run of empty records ends the file, keeping what was
read. Only input that cannot be a capture at all raises ``CaptureError``, when opening. A
``.gz`` file (by its gzip magic) is read through ``gzip`` the same way.

The file is opened once and read forward only, so a pipe, a FIFO or standard input (``-``) is a
capture like any other: the header that ``open_capture`` checks stays in the reader.

A regular uncompressed file is read through a read-only mmap window that moves along it
(records are sliced straight out of the mapping: no read() copy into a buffer, and no join
copy when a record straddles two reads), anything else (gzip, a pipe) by read() in chunks. A
file cut shorter by another process *while* it is mapped is the one case this does not
survive (SIGBUS, as with any mmap reader); a file that grows is read to its end.
"""
from __future__ import annotations

import gzip
import io
import mmap
import os
import stat
import struct
import sys
import zlib
from typing import BinaryIO, Iterator

from sensor.anomaly import Stats
from sensor.events import MAX_EVENT_TIME
from sensor.net.frames import DECODED_LINKTYPES
from sensor.text import printable

# Bytes read from the file at a time: large enough that per-read overhead vanishes, small
# enough that memory stays flat on multi-gigabyte files.
READ_CHUNK = 1 << 20
# Bytes of a regular file mapped at a time: 16 remaps per 256 MiB cost nothing, and the window
# is all of the file that counts in the reader's RSS.
MAP_WINDOW = 16 << 20
# A record claiming more than this is no packet the sensor reads, and is skipped unbuffered:
# 256 KiB is libpcap's MAXIMUM_SNAPLEN and the largest snaplen tcpdump/dumpcap write (pcapng
# blocks carry a little framing on top).
MAX_RECORD = 262_144 + 4096
# Records in a row with no captured byte before the rest of the file is taken for garbage: no
# capture tool writes them, and a stream of zeros after a pcap header (a gzip bomb) is 16-byte
# empty records that would otherwise be read one by one (256 MiB took 47 s).
MAX_EMPTY_RECORDS_IN_A_ROW = 4096
# Two record headers in a row more than this apart in time mean the first length was garbage
# (pcap has no marker to check a length against).
MAX_RECORD_TIME_STEP = 86_400

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
_PACKET_BLOCKS = frozenset((_EPB, _OPB, _SPB))
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

    __slots__ = ("_file", "buf", "pos", "consumed_before", "damage")

    def __init__(self, file: BinaryIO, head: bytes):
        self._file = file
        self.buf = head
        self.pos = 0
        self.consumed_before = 0   # file bytes dropped from the front of buf
        self.damage = ""           # why the stream ended early (a cut or corrupt gzip stream)

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
            more = self._read(max(READ_CHUNK, n - have))
            if not more:
                break
            parts.append(more)
            have += len(more)
        self.buf = b"".join(parts)
        self.pos = 0
        return have >= n

    def skip(self, n: int) -> bool:
        """Move ``n`` bytes on without keeping them; False if the file ends first."""
        have = len(self.buf) - self.pos
        if n <= have:
            self.pos += n
            return True
        self.consumed_before += len(self.buf)
        self.buf, self.pos = b"", 0
        left = n - have
        while left > 0:
            more = self._read(min(READ_CHUNK, left))
            if not more:
                return False
            left -= len(more)
            self.consumed_before += len(more)
        return True

    def _read(self, n: int) -> bytes:
        # A corrupt or cut gzip stream ends the file there: what came before is good.
        try:
            return self._file.read(n)
        except _DAMAGED_STREAM as exc:
            self.damage = f"{type(exc).__name__}: {exc}"
            return b""

    @property
    def position(self) -> int:
        return self.consumed_before + self.pos


class _Mapped:
    """``_Chunked``'s window over a regular file, as a read-only mmap that moves forward."""

    __slots__ = ("_file", "buf", "pos", "consumed_before")
    damage = ""    # a regular file read through a map is never a damaged stream

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

    def skip(self, n: int) -> bool:
        """Move ``n`` bytes on (the next ``need`` maps from there); False if the file ends first."""
        self.pos += n
        return self.consumed_before + self.pos <= os.fstat(self._file.fileno()).st_size

    @property
    def position(self) -> int:
        return self.consumed_before + self.pos


class CaptureReader:
    """Shared surface of the two readers: ``size``, ``position``, ``stats``, ``problems``,
    ``stream``, iteration, close."""

    def __init__(self, path: str, file: BinaryIO, head: bytes, size: int, underlying: BinaryIO):
        self.path = path
        self.name = printable(path)     # for messages: a file name may hold ESC or LF
        self.size = size
        self.stats = Stats()
        # First detail of each anomaly this reader counted, for a warning line per kind.
        self.problems: dict[str, str] = {}
        self._file = file
        self._underlying = underlying   # a GzipFile does not close the file it reads
        self._in = _source(file, head)
        # A pipe, FIFO or terminal: it can be read once only, so keep this reader.
        self.stream = isinstance(self._in, _Chunked) and not _is_regular(underlying)

    @property
    def position(self) -> int:
        """Bytes of the (uncompressed) file consumed so far, for a progress bar against ``size``."""
        return self._in.position

    def close(self) -> None:
        self._file.close()
        self._underlying.close()

    def __enter__(self) -> "CaptureReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Packet]:
        raise NotImplementedError

    def replay_into(self, pipeline) -> Iterator[list]:
        """Every frame into ``pipeline`` (sensor/pipeline.py), in order; yields the records
        they completed, a list at a time (often empty), so that the caller stores them and
        commits as it goes. The same frames, numbers and times as iterating."""
        feed = pipeline.feed
        for ts, linktype, data, frame in self:
            yield feed(ts, linktype, data, frame)

    def _anomaly(self, name: str, detail: str) -> None:
        self.stats.anomaly(0.0, "capture", name)
        self.problems.setdefault(name, f"{self.name}: {detail}")

    def _ended(self, frame: int, partial: str = "") -> None:
        """End of input after ``frame``: a partial record left over, or a damaged stream, is a truncation."""
        damage = self._in.damage and f"compressed stream damaged after frame {frame} ({self._in.damage})"
        if partial or damage:
            self._anomaly("capture_truncated", "; ".join(filter(None, (partial, damage))))

    def _linktype(self, linktype: int, where: str) -> None:
        if linktype not in DECODED_LINKTYPES:
            self._anomaly("capture_unknown_linktype",
                          f"link type {linktype}{where} is not one the sensor decodes: its packets are ignored")


class PcapReader(CaptureReader):
    """Classic libpcap format: either byte order, micro- or nanosecond timestamps."""

    def __iter__(self) -> Iterator[Packet]:
        return self._records(None)

    def replay_into(self, pipeline) -> Iterator[list]:
        """The batch entry (sensor/capture/batch.py): the plain records of each window are
        fed to ``pipeline`` in place, in one compiled walk, and this loop handles the others,
        as iteration does; yields the records of each walk and of each frame fed here."""
        return self._records(pipeline)

    def _records(self, pipeline) -> Iterator:
        """Frames as ``Packet`` tuples, or, given a pipeline, fed to it (its records yielded)."""
        src = self._in
        src.need(24)
        magic_le = struct.unpack_from("<I", src.buf, 0)[0]
        endian = "<" if magic_le in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC) else ">"
        magic, _major, _minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack_from(endian + "IHHiIII", src.buf, 0)
        # The top bits of the link-type field carry the FCS length (pcap spec section 5); mask them.
        linktype &= 0x0FFFFFFF
        self._linktype(linktype, "")
        scale = 1e-9 if magic == PCAP_MAGIC_NSEC else 1e-6
        src.pos = 24
        record = struct.Struct(endian + "IIII")
        unpack = record.unpack_from
        frame = total = 0
        empty_run = last_empty = 0
        buf, at = src.buf, src.pos
        little = endian == "<"
        if pipeline is not None:
            from sensor.capture.batch import feed_records     # (imports the pipeline's stages)
        try:
            while True:
                if pipeline is not None:
                    out: list = []
                    at, fed, captured = feed_records(pipeline, buf, at, frame, little, scale, linktype, MAX_RECORD, out)
                    src.pos = at
                    frame += fed
                    total += captured
                    yield out
                if len(buf) - at < 16:      # the common case skips the method call
                    src.pos = at
                    if not src.need(16):
                        self._ended(frame, f"partial record header after frame {frame}" if len(src.buf) > src.pos else "")
                        return
                    buf, at = src.buf, src.pos
                sec, frac, caplen, origlen = unpack(buf, at)
                if caplen > MAX_RECORD or not caplen:
                    # rare: checked before the length is trusted, off the common path
                    frame += 1
                    src.pos = at
                    if not caplen:
                        empty_run = empty_run + 1 if last_empty == frame - 1 else 1
                        last_empty = frame
                        if empty_run >= MAX_EMPTY_RECORDS_IN_A_ROW:
                            self._anomaly("capture_corrupt_record", f"{empty_run} empty records in a row "
                                          f"up to frame {frame}: the rest is not packets")
                            return
                        src.pos = at + 16
                    elif not self._skip_oversized(record, frame, sec, caplen, origlen):
                        return
                    buf, at = src.buf, src.pos
                    continue
                if len(buf) - at < 16 + caplen:
                    src.pos = at
                    if not src.need(16 + caplen):
                        self._ended(frame, f"frame {frame + 1} cut short")
                        return
                    buf, at = src.buf, src.pos
                start = at + 16
                at = src.pos = start + caplen     # ``position`` follows, for the progress bar
                frame += 1
                total += caplen
                if pipeline is None:
                    yield sec + frac * scale, linktype, buf[start:start + caplen], frame
                else:
                    yield pipeline.feed(sec + frac * scale, linktype, buf[start:start + caplen], frame)
        finally:
            # counted here, not per packet: Counter updates would cost a third of the loop
            self.stats["packets"] += frame
            self.stats["bytes"] += total

    def _skip_oversized(self, record: struct.Struct, frame: int, sec: int, caplen: int, origlen: int) -> bool:
        """Skip a record too big to be a packet the sensor reads, at ``pos``; False ends the file.

        pcap has no marker to resynchronise on, so a length is trusted only when it is
        consistent (not more than the packet's own length) and a record header with a time
        within a day follows it (or the file ends); otherwise the header is garbage and so is
        everything after it: guessing a resync point would make packets up out of noise."""
        src = self._in
        if caplen > origlen:
            self._anomaly("capture_corrupt_record", f"frame {frame} claims {caplen} bytes of a {origlen}-byte packet")
            return False
        if not src.skip(16 + caplen):
            self._ended(frame, f"frame {frame} ({caplen} bytes) cut short")
            return False
        if src.need(16):
            next_sec, _frac, next_caplen, next_origlen = record.unpack_from(src.buf, src.pos)
            if next_caplen > next_origlen or abs(next_sec - sec) > MAX_RECORD_TIME_STEP:
                self._anomaly("capture_corrupt_record", f"frame {frame} claims {caplen} bytes, and no record "
                              "header follows them")
                return False
        self._anomaly("capture_oversized_record", f"frame {frame} of {caplen} bytes skipped "
                      f"(more than {MAX_RECORD} cannot be a packet the sensor reads)")
        return True


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
        good_ts = None    # the last packet time that was a date
        while True:
            if not src.need(12):
                self._ended(frame, f"partial block header after frame {frame}" if len(src.buf) > src.pos else "")
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
                    self._anomaly("capture_corrupt_record", f"bad section byte-order magic after frame {frame}")
                    return
                header = struct.Struct(endian + "II")
                interfaces = []
            btype, blen = header.unpack_from(buf, at)
            if blen < 12 or blen % 4:
                self._anomaly("capture_corrupt_record", f"block of {blen} bytes after frame {frame}")
                return
            if blen > MAX_RECORD:
                if btype in _PACKET_BLOCKS:     # numbered as in Wireshark
                    frame += 1
                    stats["packets"] += 1
                if not self._skip_oversized(endian, frame, btype, blen):
                    return
                continue
            if not src.need(blen):
                self._ended(frame, f"block cut short after frame {frame}")
                return
            buf, at = src.buf, src.pos
            src.pos = at + blen
            body = at + 8
            body_end = at + blen - 4
            if blen < _MIN_BLOCK.get(btype, 12):
                self._anomaly("capture_corrupt_record", f"block type {btype:#x} of {blen} bytes after frame {frame}")
                continue
            if btype == _EPB or btype == _OPB:
                if btype == _EPB:
                    ifid, ts_hi, ts_lo, caplen = struct.unpack_from(endian + "IIII", buf, body)
                else:
                    ifid, _drops, ts_hi, ts_lo, caplen = struct.unpack_from(endian + "HHIII", buf, body)
                data_at = body + 20
                if ifid >= len(interfaces) or data_at + caplen > body_end:
                    self._anomaly("capture_corrupt_record",
                                  f"packet block after frame {frame} (interface {ifid}, {caplen} bytes)")
                    continue
                linktype, tick, offset, _snap = interfaces[ifid]
                ts = offset + ((ts_hi << 32) | ts_lo) * tick
                if not 0.0 <= ts < MAX_EVENT_TIME:     # (is_event_time, inline on the hot path)
                    # Clamped, not skipped: the capturing host wrote a broken clock, not the
                    # attacker, and dropping the frame would cut a hole in its TCP stream (and
                    # lose the call in it). Before any good time there is nothing to clamp to.
                    if good_ts is None:
                        frame += 1
                        stats["packets"] += 1
                        self._anomaly("capture_bad_timestamp", f"frame {frame} is dated {ts:.6g} s "
                                      "from 1970, not a date, before any good time: frame skipped")
                        continue
                    self._anomaly("capture_bad_timestamp", f"frame {frame + 1} is dated {ts:.6g} s from 1970, "
                                  "not a date: given the time of the frame before it")
                    ts = good_ts
                good_ts = ts
            elif btype == _SPB:
                # Simple Packet Block: interface 0, no timestamp, captured length = min(len, snaplen, room).
                if not interfaces:
                    self._anomaly("capture_corrupt_record", "simple packet block before any interface")
                    continue
                origlen = struct.unpack_from(endian + "I", buf, body)[0]
                linktype, _tick, _offset, snaplen = interfaces[0]
                data_at = body + 4
                caplen = min(origlen, body_end - data_at, snaplen or origlen)
                ts = 0.0
            elif btype == _IDB:
                interfaces.append(self._interface(buf, body, body_end, endian))
                self._linktype(interfaces[-1][0], f" (interface {len(interfaces) - 1})")
                continue
            else:
                if btype != PCAPNG_SHB:
                    stats["pcapng_blocks_skipped"] += 1
                continue
            frame += 1
            stats["packets"] += 1
            stats["bytes"] += caplen
            yield ts, linktype, buf[data_at:data_at + caplen], frame

    def _skip_oversized(self, endian: str, frame: int, btype: int, blen: int) -> bool:
        """Skip a block too big to hold a packet the sensor reads, by its length; False ends the
        file. The length is checked against its copy at the block's end (pcapng 3.1), so a
        corrupt length is not taken for a block."""
        src = self._in
        if not src.skip(blen - 4) or not src.need(4):
            self._ended(frame, f"block of {blen} bytes after frame {frame} cut short")
            return False
        trailer = struct.unpack_from(endian + "I", src.buf, src.pos)[0]
        src.pos += 4
        if trailer != blen:
            self._anomaly("capture_corrupt_record", f"block of {blen} bytes after frame {frame} ends with "
                          f"length {trailer}")
            return False
        self._anomaly("capture_oversized_record", f"block type {btype:#x} of {blen} bytes after frame {frame} "
                      f"skipped (more than {MAX_RECORD} cannot hold a packet the sensor reads)")
        return True

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


def _is_regular(file: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(file.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def _source(file: BinaryIO, head: bytes) -> _Chunked | _Mapped:
    """An mmap window for a regular uncompressed file, else chunked reads after ``head``."""
    if isinstance(file, gzip.GzipFile) or not _is_regular(file):
        return _Chunked(file, head)
    try:
        source = _Mapped(file)
        source.need(len(head))
        return source
    except (OSError, ValueError):     # a file system that cannot map: read it
        file.seek(len(head))
        return _Chunked(file, head)


class _Replayed(io.RawIOBase):
    """A file whose first bytes were already read, giving them again first: gzip reads the
    magic it was sniffed by, and a pipe cannot seek back to it."""

    def __init__(self, head: bytes, file: BinaryIO):
        super().__init__()
        self._head = head
        self._file = file

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._file.readinto(buffer)


def _open(path: str, name: str) -> BinaryIO:
    if path == "-":
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    try:
        return open(path, "rb")
    except IsADirectoryError:
        raise CaptureError(f"{name}: is a directory, not a capture file") from None
    except FileNotFoundError:
        raise CaptureError(f"{name}: no such file") from None
    except PermissionError:
        raise CaptureError(f"{name}: permission denied") from None
    except OSError as exc:
        raise CaptureError(f"{name}: cannot open ({exc.strerror})") from None


def open_capture(path: str | os.PathLike) -> CaptureReader:
    """Open a pcap, pcapng or gzip'ed pcap/pcapng file, a pipe or FIFO carrying one, or standard
    input (``-``); raise CaptureError if it is none of them. Only the header is read."""
    path = os.fspath(path)
    name = "stdin" if path == "-" else printable(path)
    raw = file = _open(path, name)
    size = os.fstat(raw.fileno()).st_size if _is_regular(raw) else 0
    try:
        head = raw.read(24)
        if head[:2] == GZIP_MAGIC:
            file = gzip.GzipFile(fileobj=_Replayed(head, raw), mode="rb")
            head = file.read(24)
    except _DAMAGED_STREAM as exc:
        raw.close()
        raise CaptureError(f"{name}: unreadable ({exc})") from None
    problem = _not_a_capture(head)
    if problem:
        raw.close()
        raise CaptureError(f"{name}: {problem}")
    reader = PcapngReader if struct.unpack_from("<I", head, 0)[0] == PCAPNG_SHB else PcapReader
    return reader(path, file, head, size, raw)


def _not_a_capture(head: bytes) -> str:
    """Why the first bytes of a file are no capture header, or "" when they are one."""
    if not head:
        return "empty file"
    if len(head) >= 4:
        magic = struct.unpack_from("<I", head, 0)[0]
        swapped = struct.unpack_from(">I", head, 0)[0]
        if magic in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC) or swapped in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC):
            return "" if len(head) == 24 else f"pcap file header cut short ({len(head)} of 24 bytes)"
        if magic == PCAPNG_SHB:
            # The first section's byte-order magic says how to read everything: without it the
            # file cannot be read at all (pcapng 4.1).
            if len(head) < 12:
                return f"pcapng section header cut short ({len(head)} of 12 bytes)"
            if head[8:12] not in (PCAPNG_BYTE_ORDER_MAGIC.to_bytes(4, "little"), PCAPNG_BYTE_ORDER_MAGIC.to_bytes(4, "big")):
                return f"pcapng section header with a bad byte-order magic ({head[8:12].hex()})"
            return ""
    return f"not a pcap or pcapng file (magic {head[:4].hex()})"
