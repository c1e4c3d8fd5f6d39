"""NetBIOS session service framing (RFC 1002 4.3) of one direction of an SMB connection.

Every SMB message travels in a session message: a 4-byte header (type, length) and the
message. On port 445 ("direct TCP", MS-SMB2 2.1) the length is 24 bits; on port 139 it is
17 bits, which the same 24-bit reading covers since the 7 bits above are zero there.

State, per direction: the bytes of the message being framed (``_buf``), how many bytes of
an uninteresting payload remain to be skipped without buffering (``_skip``), or a hunt for
the next plausible header after loss or garbage (``_hunting``, ``_tail``).

Messages up to WHOLE_MESSAGE_LIMIT are buffered whole. For a larger one only its first
PEEK_BYTES are buffered, and the ``wants_whole(prefix, length)`` callback decides: pipe
traffic is buffered whole (up to PIPE_MESSAGE_LIMIT); bulk file I/O is handed on as a
prefix and the rest is skipped by length, so a loss inside it costs nothing.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from sensor.anomaly import Stats
from sensor.budget import ByteBudget

SESSION_MESSAGE = 0x00
SESSION_REQUEST = 0x81
POSITIVE_RESPONSE = 0x82
NEGATIVE_RESPONSE = 0x83
RETARGET_RESPONSE = 0x84
KEEPALIVE = 0x85
CONTROL_TYPES = frozenset({SESSION_REQUEST, POSITIVE_RESPONSE, NEGATIVE_RESPONSE,
                           RETARGET_RESPONSE, KEEPALIVE})

MAGICS = frozenset({b"\xfeSMB", b"\xffSMB", b"\xfdSMB", b"\xfcSMB"})
# Smallest message each protocol id can start, by id from FIRST_PROTOCOL_ID:
# COMPRESSION_TRANSFORM_HEADER 16 (0xFC), TRANSFORM_HEADER 52 (0xFD), SMB2 header 64 (0xFE),
# SMB1 header 32 (0xFF; the parser reports a missing WordCount). A tuple indexed by the id:
# the fast path reads it per message (a C index in the compiled core, not a dict lookup).
FIRST_PROTOCOL_ID = 0xFC
MIN_MESSAGE = (16, 52, 64, 32)

# A header-only need: the biggest pipe transaction Windows sends is 64 KiB (MaxTransactSize
# is granted up to 8 MiB but DCE/RPC fragments top out at 65535), so anything this small is
# simply buffered and parsed whole, compounds included.
WHOLE_MESSAGE_LIMIT = 64 * 1024 + 256
# Enough of a large message to read its first SMB header and command: SMB2 header 64 +
# WRITE request 48 (the largest fixed part we read), SMB1 header 32 + WRITE_ANDX 14 words.
PEEK_BYTES = 128
# MS-SMB2 3.3.5.2: Windows caps MaxRead/Write/TransactSize at 8 MiB (large MTU); a pipe
# message beyond that is not one a real server accepts.
PIPE_MESSAGE_LIMIT = 8 * 1024 * 1024
# All partial messages being buffered, every direction of every connection of a pipeline (one
# per process or worker): 64 MiB is 1000 pipe transactions of 64 KiB in flight at once, far
# past a busy DC, while 100k flows x 2 x PIPE_MESSAGE_LIMIT would be 1.6 TiB.
MESSAGE_BUDGET_BYTES = 64 << 20
# Give up on a direction after hunting this far without a plausible header: a little more
# than the largest message that could be in the way.
RESYNC_SCAN_LIMIT = 17 * 1024 * 1024

# A plausible header: session message type 0, 3 length bytes, an SMB protocol id.
_HEADER_PATTERN = re.compile(rb"\x00...[\xfc-\xff]SMB", re.DOTALL)
_HEADER_SPAN = 8

MESSAGE = "message"    # (MESSAGE, payload: bytes, length)         a whole SMB message
HEAD = "head"          # (HEAD, prefix: bytes, length)            start of a skipped message
CONTROL = "control"    # (CONTROL, type: int, length)            session request, keepalive...
ANOMALY = "anomaly"    # (ANOMALY, name: str, detail: str)

WantsWhole = Callable[[bytes, int], bool]
# What is left of a segment the stage took all of (feed's loop ends at an empty view).
_NOTHING_LEFT = memoryview(b"")


class NbssStream:
    """Frames one direction. ``feed`` and ``gap`` return items (tuples, see above)."""

    __slots__ = ("_wants_whole", "stats", "_budget", "_over_budget", "_buf", "_length", "_whole", "_skip",
                 "_hunting", "_tail", "_hunted", "_dead")

    def __init__(self, wants_whole: WantsWhole, stats: Stats, budget: ByteBudget | None = None) -> None:
        self._wants_whole = wants_whole
        self.stats = stats
        self._budget = budget
        self._over_budget = False         # a charge evicted others: report it from feed
        self._buf = bytearray()
        self._length = -1                 # payload length of the message being framed (-1: not read yet)
        self._whole: bool | None = None   # buffer it all? None: not decided yet
        self._skip = 0
        self._hunting = False
        self._tail = b""                  # unmatched end of the hunted bytes (< _HEADER_SPAN)
        self._hunted = 0
        self._dead = False

    @property
    def skipping(self) -> int:
        """Bytes of a payload still to be skipped: the next bytes of this direction are
        certain to be skipped whatever they hold (a gap inside them is absorbed too)."""
        return self._skip

    def take_skip(self, n: int) -> None:
        """``n`` bytes of the skipped payload went by without being fed (the bulk lane)."""
        self._skip -= n
        self.stats["nbss_bytes_skipped"] += n

    def feed(self, data: bytes | memoryview) -> list[tuple]:
        skip = self._skip
        if skip >= len(data):
            # Bulk file data: the whole segment lies inside a payload being skipped (the
            # common case on a file server); no view, no loop.
            self._skip = skip - len(data)
            self.stats["nbss_bytes_skipped"] += len(data)
            return []
        items: list[tuple] = []
        mv = memoryview(data)
        while mv and not self._dead:
            if self._skip:
                n = min(self._skip, len(mv))
                self._skip -= n
                self.stats["nbss_bytes_skipped"] += n
                mv = mv[n:]
            elif self._hunting:
                mv = self._hunt(mv, items)
            else:
                mv = self._frame(mv, items)
        if self._over_budget:
            self._over_budget = False
            items.append((ANOMALY, "nbss_message_budget_exceeded",
                          f"oldest partial messages dropped (all over {self._budget.limit} bytes)"))
        return items

    def gap(self, length: int) -> list[tuple]:
        """``length`` bytes were lost. Absorbed inside a skipped payload, else resync."""
        if self._dead:
            return []
        if length <= self._skip:
            self._skip -= length
            self.stats["nbss_gap_bytes_absorbed"] += length
            return []
        if self._hunting:
            self._tail = b""
            return []
        items: list[tuple] = []
        self._buf.clear()
        self._start_hunt(items, f"gap of {length} bytes")
        return items

    def release(self) -> None:
        """End of the connection: drop what is buffered and its share of the budget."""
        self._reset()

    def _reset(self) -> None:
        self._buf.clear()
        self._length = -1
        self._whole = None
        if self._budget is not None:
            self._budget.release(self)

    def _evicted_by_budget(self, _holder) -> None:
        """The process-wide message budget dropped this (oldest) partial message: resync."""
        self._buf.clear()
        self._length = -1
        self._whole = None
        self._tail = b""
        self._skip = 0
        self._hunting = True
        self._hunted = 0
        self.stats["nbss_messages_dropped_by_budget"] += 1

    def _start_hunt(self, items: list[tuple], reason: str) -> None:
        # Drop the first byte of what was buffered and look for a header in the rest.
        self._tail = bytes(self._buf[1:])
        self._reset()
        self._skip = 0
        self._hunting = True
        self._hunted = 0
        items.append((ANOMALY, "smb_resync", reason))

    def _hunt(self, mv: memoryview, items: list[tuple]) -> memoryview:
        tail = self._tail
        if tail:
            joined = tail + bytes(mv[:_HEADER_SPAN - 1])
            for m in _HEADER_PATTERN.finditer(joined):
                if m.start() >= len(tail):
                    break
                if _plausible(joined, m.start()):
                    self._end_hunt()
                    self._buf += tail[m.start():]
                    return mv
        pos = 0
        while True:
            m = _HEADER_PATTERN.search(mv, pos)
            if m is None:
                break
            if _plausible(mv, m.start()):
                self._end_hunt()
                self._hunted += m.start()
                return mv[m.start():]
            pos = m.start() + 1
        self._hunted += len(mv)
        self._tail = (tail + bytes(mv[-(_HEADER_SPAN - 1):]))[-(_HEADER_SPAN - 1):]
        if self._hunted > RESYNC_SCAN_LIMIT:
            self._dead = True
            items.append((ANOMALY, "smb_resync_failed", f"no header in {self._hunted} bytes"))
        return mv[len(mv):]

    def _end_hunt(self) -> None:
        self._hunting = False
        self._tail = b""
        self.stats["smb_resync_found"] += 1

    # -- what the SMB fast path (sensor/smb/fastpath.py) does in place of ``feed`` for a
    # segment of a message split over segments: the same buffering and budget charges.
    def room(self) -> int:
        """Bytes the message being buffered whole still lacks (0: none is)."""
        if self._whole is not True:
            return 0
        return 4 + self._length - len(self._buf)

    def fits(self, n: int) -> bool:
        """Can ``n`` more bytes be kept without the message budget evicting anything (so
        without an anomaly to report)?"""
        return self._budget is None or self._budget.used + n <= self._budget.limit

    def start(self, data: bytes, length: int) -> None:
        """``data``, between messages: the start of a session message of ``length`` bytes
        that later segments complete, whose header ``_frame`` would accept (type, protocol
        id, minimum length) and buffer whole (at most WHOLE_MESSAGE_LIMIT)."""
        self._length = length
        self._whole = True
        self._keep(data)

    def extend(self, data: bytes) -> bytes | None:
        """``data``: the next bytes of the message being buffered whole, at most ``room()``
        (and ``fits``). The message (without its session header) if they complete it (the
        caller counts it in nbss_messages)."""
        self._keep(data)
        if len(self._buf) < 4 + self._length:
            return None
        return self._complete()

    def _complete(self) -> bytes:
        """The message buffered whole is complete: handed on (counted by the caller in
        nbss_messages), the buffer and its budget freed."""
        del self._buf[:4]       # from the front of a bytearray: no move (CPython keeps an offset)
        message = bytes(self._buf)
        self._reset()
        return message

    def _keep(self, data: bytes | memoryview) -> None:
        self._buf += data
        if self._budget is not None and self._budget.charge(self, len(data), self._evicted_by_budget):
            self._over_budget = True

    def _take(self, mv: memoryview, upto: int) -> memoryview:
        n = upto - len(self._buf)
        if n > 0:
            # Mostly the whole segment, the middle of a message: no views cut then.
            if len(mv) <= n:
                self._keep(mv)
                return _NOTHING_LEFT
            self._keep(mv[:n])
            return mv[n:]
        return mv

    def _frame(self, mv: memoryview, items: list[tuple]) -> memoryview:
        buf = self._buf
        if not buf and len(mv) >= 8 and mv[0] == SESSION_MESSAGE:
            # Fast path: a whole small message inside this chunk, nothing buffered.
            length = (mv[1] << 16) | (mv[2] << 8) | mv[3]
            if (length <= WHOLE_MESSAGE_LIMIT and len(mv) >= 4 + length
                    and bytes(mv[4:8]) in MAGICS and length >= MIN_MESSAGE[mv[4] - FIRST_PROTOCOL_ID]):
                self.stats["nbss_messages"] += 1
                items.append((MESSAGE, bytes(mv[4:4 + length]), length))
                return mv[4 + length:]
        if self._length < 0:
            mv = self._take(mv, 4)
            if len(buf) < 4:
                return mv
            kind = buf[0]
            if kind in CONTROL_TYPES:
                # RFC 1002 4.3.1: 17-bit length, its top bit in the flags byte.
                length = ((buf[1] & 1) << 16) | (buf[2] << 8) | buf[3]
                self.stats[f"nbss_type_0x{kind:02x}"] += 1
                items.append((CONTROL, kind, length))
                self._reset()
                self._skip = length
                return mv
            if kind != SESSION_MESSAGE:
                items.append((ANOMALY, "nbss_bad_type", f"type 0x{kind:02x}"))
                self._start_hunt(items, "bad session type")
                return mv
            self._length = (buf[1] << 16) | (buf[2] << 8) | buf[3]
        length = self._length
        if self._whole is None and len(buf) < 8:
            mv = self._take(mv, 8)
            if len(buf) < 8:
                return mv
            if bytes(buf[4:8]) not in MAGICS or length < MIN_MESSAGE[buf[4] - FIRST_PROTOCOL_ID]:
                items.append((ANOMALY, "smb_bad_magic", bytes(buf[4:8]).hex()))
                self._start_hunt(items, "bad protocol id")
                return mv
            if length <= WHOLE_MESSAGE_LIMIT:
                self._whole = True
        if self._whole is None:
            mv = self._take(mv, 4 + PEEK_BYTES)
            if len(buf) < 4 + PEEK_BYTES:
                return mv
            prefix = bytes(buf[4:])
            if self._wants_whole(prefix, length):
                if length <= PIPE_MESSAGE_LIMIT:
                    self._whole = True
                else:
                    items.append((ANOMALY, "nbss_oversize", f"{length} bytes"))
                    self._whole = False
            else:
                self._whole = False
            if not self._whole:
                self.stats["nbss_messages"] += 1
                items.append((HEAD, prefix, length))
                self._skip = 4 + length - len(buf)
                self._reset()
                return mv
        mv = self._take(mv, 4 + length)
        if len(buf) == 4 + length:
            self.stats["nbss_messages"] += 1
            items.append((MESSAGE, self._complete(), length))
        return mv


def _plausible(data: bytes | memoryview, at: int) -> bool:
    length = (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3]
    return length >= MIN_MESSAGE[data[at + 4] - FIRST_PROTOCOL_ID]
