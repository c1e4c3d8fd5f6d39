"""The batch entry from the classic pcap reader to the pipeline: a run of records fed in place.

Replaying a file, the per-frame path costs more around each frame than in it: the reader's
generator resumes, a tuple and a ``bytes`` copy of the frame are made, and the runner calls
``Pipeline.feed`` through Python. ``feed_records`` walks the classic pcap records (pcap spec
section 4: seconds, fraction, captured length, original length, then the bytes) of the
reader's window and hands each frame to the pipeline where it lies (``Pipeline._frame``, at C
level in the compiled core): the bulk lane and the SMB fast path read it in the window, and a
copy is made only of what a later stage keeps (the 12-byte flow key, a message the SMB stage
parses, a frame the full stages decode).

It returns as soon as a frame completed records, so that the runner stores them and commits
(a batch of at most COMMIT_EVERY_EVENTS events, sensor/sensor.py) after the same frames as on
the per-frame path; most frames complete none. It takes only plain records, each wholly inside
the window with 1 to ``max_record`` captured bytes, and stops at the first other one (empty, oversized, crossing the window's end, a cut
header): the reader's own code (sensor/capture/pcapfile.py) handles that record with its one set
of anomaly rules, then walks on. Timestamps are ``sec + frac * scale`` as the reader computes
them, frames are numbered on from ``frame``, and the reader counts the frames and bytes walked.
Per-frame ``feed(ts, linktype, data, frame)`` stays the stage contract (sensor/stage.py): live
capture, evidence and pcapng use it (replay and its ``--jobs`` workers take this entry).
"""
from __future__ import annotations

try:        # the compiled core reads the window through a C pointer; pure Python indexes it
    import cython
    COMPILED = cython.compiled
except ImportError:     # Cython is a build dependency only
    COMPILED = False

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sensor.pipeline import Pipeline

RECORD_HEADER = 16      # ts_sec, ts_frac, incl_len, orig_len: four 32-bit fields


def _u32(buf, at: int, little: bool) -> int:
    """The 32-bit unsigned integer at ``buf[at:at + 4]`` in the capture's byte order."""
    if little:
        value = buf[at + 3]
        value = value << 8 | buf[at + 2]
        value = value << 8 | buf[at + 1]
        return value << 8 | buf[at]
    value = buf[at]
    value = value << 8 | buf[at + 1]
    value = value << 8 | buf[at + 2]
    return value << 8 | buf[at + 3]


def feed_records(pipeline: Pipeline, window, at: int, frame: int, little: bool, scale: float, linktype: int,
                 max_record: int, out: list) -> tuple[int, int, int]:
    """Feed ``pipeline`` the plain records of ``window`` (a ``bytes`` or a read-only mmap)
    from offset ``at``, the last frame fed before them being ``frame``; their records go to
    ``out``. Returns (the offset of the first record not walked, frames fed, bytes captured)."""
    end = len(window)
    if end - at < RECORD_HEADER:
        return at, 0, 0
    if COMPILED:
        view = window
        buf = cython.address(view[0])
    else:
        buf = window
    fed = captured = 0
    while end - at >= RECORD_HEADER:
        caplen = _u32(buf, at + 8, little)
        if not caplen or caplen > max_record or end - at - RECORD_HEADER < caplen:
            break
        ts = _u32(buf, at, little) + _u32(buf, at + 4, little) * scale
        start = at + RECORD_HEADER
        at = start + caplen
        fed += 1
        captured += caplen
        pipeline._frame(ts, linktype, buf, start, at, frame + fed, None, out)
        if out:
            break
    return at, fed, captured
