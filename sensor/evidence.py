"""``--evidence DIR``: for every alert, a pcap of the frames of the flows it is about, named
``<alert_id>.pcap`` (the call's flow; for a coercion alert also the back-authentication's).

Replay takes the frames from the capture files: the alerts raised while a file is read are
kept, and once it is done (``from_files``) the files read so far are scanned again for every
frame of those alerts' flows, so each pcap holds its flows whole.

Live capture keeps a bounded ring per flow as frames pass (``observe``): the last
MAX_FRAMES_PER_FLOW frames of each of the MAX_FLOWS most recently active flows, within
MAX_RING_BYTES in all. An alert (``write``) opens a *window* on its flows: the process that
holds their rings writes what the rings hold to a part file ``.<alert_id>.<pid>-<n>.part``, then
appends the flows' later frames for POST_ALERT_SECONDS (at most POST_ALERT_BYTES), so the
call's answer and the rest of the back-authentication are in the pcap. When the window has
closed (``tick``, at the latest ``close``) the parts are merged in time order into
``<alert_id>.pcap``.

``live --workers N``: a coercion alert is raised in the parent, which holds no frames; the
flows' rings are in the workers the fanout hash gave them to (maybe two different ones). The
parent sends the window to every worker over a request channel (``request_channel``; a
datagram of a few hundred bytes, sent without waiting: a worker that cannot take it costs
that alert its frames, counted, never a stalled parent), each worker reads its requests at
its idle ticks and writes a part of its own for the flows it holds, and the parent merges
the parts FINISH_GRACE_SECONDS after the window closed. Capture never waits for any of it:
a worker's work per request is one ring copy and, per later frame of a watched flow, one
write to a file.

The directory is bounded: past ``max_bytes`` the oldest files (pcaps and parts) are removed
(counted as ``evidence_removed``).
"""
from __future__ import annotations

import heapq
import itertools
import ipaddress
import json
import os
import socket
import struct
import time
from collections import OrderedDict, deque
from pathlib import Path

from sensor.alerts import AlertEnvelope
from sensor.anomaly import Stats
from sensor.hosts import canonical_address
from sensor.capture.pcapfile import CaptureError, open_capture
from sensor.net.frames import FrameDecoder

MAX_FRAMES_PER_FLOW = 256       # a DFSCoerce call flow is ~20-40 frames, a back-authentication ~10
MAX_FLOWS = 4096                # flows remembered; the least recently active go first
MAX_RING_BYTES = 32 * 1024 * 1024   # all rings together; the least recently active flow goes first
DEFAULT_MAX_BYTES = 256 * 1024 * 1024   # the evidence directory
# After the alert: the call's answer, and the back-authentication's SESSION_SETUP answer, tree
# connect and logoff, come within a second in the lab captures; 10 s leaves a slow listener
# (or a loaded sensor) room.
POST_ALERT_SECONDS = 10.0
# Frame bytes one process appends to one alert's pcap after the alert: a flow that goes on
# streaming (a file copy over the same session) cannot grow the file further.
POST_ALERT_BYTES = 4 * 1024 * 1024
# Windows open at once in one process (an open part file each); past it the oldest closes
# early: an alert storm costs frames after the alert, not file descriptors.
MAX_OPEN_WINDOWS = 64
# A worker closes its part at its first idle tick past the window (sensor.capture.live's
# TICK_SECONDS, 0.5 s); the parent merges the parts this long after the window's end.
FINISH_GRACE_SECONDS = 2.0
# Largest request datagram: an alert id and a few flows (an IPv6 address is 39 characters).
MAX_REQUEST_BYTES = 4096
# pcap (not pcapng): every tool reads it. Magic for microsecond timestamps, version 2.4.
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")
PCAP_MAGIC_US = 0xA1B2C3D4
SNAPLEN = 262_144

FlowId = tuple[tuple[str, int], tuple[str, int]]
_INSTANCES = itertools.count()
Frame = tuple[float, int, bytes]       # ts, linktype, frame bytes


def flow_id(ip_a: str, port_a: int, ip_b: str, port_b: int) -> FlowId:
    """Both directions of a TCP connection, one key (addresses canonical)."""
    a = (str(canonical_address(ip_a) or ip_a), port_a)
    b = (str(canonical_address(ip_b) or ip_b), port_b)
    return (a, b) if a <= b else (b, a)


def request_channel() -> tuple[socket.socket, socket.socket]:
    """(worker end, parent end) of one worker's evidence request channel (``live --workers``)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class _PcapOut:
    """A pcap being written: the header at the first frame (its link type is the file's),
    then one record per frame, each in one write."""

    def __init__(self, path: Path, stats: Stats) -> None:
        self.path = path
        self.stats = stats
        self.linktype: int | None = None
        self._file = None

    def add(self, ts: float, linktype: int, raw: bytes) -> int:
        """Append one frame; the bytes written (0: another link type, skipped)."""
        if self._file is None:
            self._file = open(self.path, "wb", buffering=0)
            self.linktype = linktype
            self._file.write(_PCAP_HEADER.pack(PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, linktype))
        if linktype != self.linktype:       # one pcap, one link type
            self.stats["evidence_frames_other_linktype"] += 1
            return 0
        seconds, micros = divmod(round(ts * 1_000_000), 1_000_000)
        self._file.write(_PCAP_RECORD.pack(seconds, micros, len(raw), len(raw)) + raw)
        return len(raw)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _Window:
    """One alert's flows in this process: the ring's frames, then later ones until ``until``."""

    def __init__(self, alert_id: str, flows: tuple[FlowId, ...], until: float, out: _PcapOut) -> None:
        self.alert_id = alert_id
        self.flows = flows
        self.until = until
        self.out = out
        self.post_bytes = 0


class Evidence:
    def __init__(self, directory: str, max_bytes: int = DEFAULT_MAX_BYTES):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.stats = Stats()
        self._decoder = FrameDecoder()
        self._rings: OrderedDict[FlowId, deque] = OrderedDict()
        self._ring_bytes = 0
        self._windows: OrderedDict[str, _Window] = OrderedDict()   # alert_id -> open window
        self._watched: dict[FlowId, list[_Window]] = {}
        self._merge_at: OrderedDict[str, float] = OrderedDict()    # alert_id -> when to merge its parts
        self._workers: list[socket.socket] = []       # --workers parent: the workers hold the rings
        self._requests: socket.socket | None = None   # --workers child: windows the parent asks for
        self._part_tag = f"{os.getpid()}-{next(_INSTANCES)}"     # this one's parts, beside other processes'

    def ask_workers(self, ends: list[socket.socket]) -> None:
        """The ``live --workers`` parent: alerts' windows go to the workers (request channels)."""
        self._workers = ends

    def take_requests(self, end: socket.socket) -> None:
        """A ``live --workers`` child: open the windows the parent sends on ``end``."""
        self._requests = end

    # -- live ------------------------------------------------------------------------------
    def observe(self, ts: float, linktype: int, data, frame: int) -> None:
        segment = self._decoder.feed(ts, linktype, data)
        if segment is None:
            return
        src, dst, sport, dport = segment[:4]
        key = flow_id(str(ipaddress.ip_address(src)), sport, str(ipaddress.ip_address(dst)), dport)
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = deque()
            if len(self._rings) > MAX_FLOWS:
                self._forget_oldest()
        else:
            self._rings.move_to_end(key)
        raw = bytes(data)
        ring.append((ts, linktype, raw))
        self._ring_bytes += len(raw)
        if len(ring) > MAX_FRAMES_PER_FLOW:
            self._ring_bytes -= len(ring.popleft()[2])
        while self._ring_bytes > MAX_RING_BYTES and len(self._rings) > 1:
            self._forget_oldest()
        windows = self._watched.get(key)
        if windows:
            for window in list(windows):
                if window.post_bytes >= POST_ALERT_BYTES:
                    continue
                self._append(window, ts, linktype, raw)
                if window.post_bytes >= POST_ALERT_BYTES:
                    self.stats["evidence_post_alert_cut"] += 1

    def _forget_oldest(self) -> None:
        _, ring = self._rings.popitem(last=False)
        self._ring_bytes -= sum(len(f[2]) for f in ring)
        self.stats["evidence_flows_forgotten"] += 1

    def write(self, alert: AlertEnvelope) -> None:
        """Live, at the alert: open its window (here, or in the workers that hold the rings);
        its pcap is written when the window closes."""
        if alert.alert_id in self._merge_at:
            return
        until = time.monotonic() + POST_ALERT_SECONDS
        flows = tuple(_flow_ids(alert))
        if self._workers:
            message = json.dumps({"alert_id": alert.alert_id, "flows": flows, "until": until}).encode()
            for end in self._workers:
                try:
                    end.send(message, socket.MSG_DONTWAIT)
                except OSError:       # its queue is full, or the worker is gone (stopping)
                    self.stats["anomaly.evidence_request_dropped"] += 1
            until += FINISH_GRACE_SECONDS
        else:
            self._open(alert.alert_id, flows, until)
        self._merge_at[alert.alert_id] = until
        if len(self._merge_at) > MAX_OPEN_WINDOWS:
            self._merge(next(iter(self._merge_at)))

    def _open(self, alert_id: str, flows: tuple[FlowId, ...], until: float) -> None:
        """A window on ``flows``: what their rings hold now, then their frames until ``until``."""
        if alert_id in self._windows:
            return
        out = _PcapOut(self.directory / f".{alert_id}.{self._part_tag}.part", self.stats)
        window = _Window(alert_id, flows, until, out)
        self._windows[alert_id] = window
        for flow in flows:
            self._watched.setdefault(flow, []).append(window)
        for ts, linktype, raw in heapq.merge(*(self._rings.get(f) or () for f in flows), key=lambda f: f[0]):
            self._append(window, ts, linktype, raw, before=True)
        if len(self._windows) > MAX_OPEN_WINDOWS:
            self._close_window(next(iter(self._windows.values())))

    def _append(self, window: _Window, ts: float, linktype: int, raw: bytes, before: bool = False) -> None:
        try:
            written = window.out.add(ts, linktype, raw)
        except OSError:
            self.stats["anomaly.evidence_write_failed"] += 1
            self._close_window(window)
            return
        if not before:
            window.post_bytes += written

    def _close_window(self, window: _Window) -> None:
        window.out.close()
        self._windows.pop(window.alert_id, None)
        for flow in window.flows:
            watching = self._watched.get(flow)
            if watching and window in watching:
                watching.remove(window)
                if not watching:
                    del self._watched[flow]

    def tick(self) -> None:
        """Between frames (live idle ticks): take the parent's requests, close the windows
        whose time is up, merge the pcaps that are due."""
        self._take_requests()
        now = time.monotonic()
        for window in [w for w in self._windows.values() if w.until <= now]:
            self._close_window(window)
        for alert_id in [a for a, at in self._merge_at.items() if at <= now]:
            self._merge(alert_id)

    def close(self) -> None:
        """End of capture: open what the parent asked for (the rings are still here), close
        every window, merge every pcap."""
        self._take_requests()
        for window in list(self._windows.values()):
            self._close_window(window)
        for alert_id in list(self._merge_at):
            self._merge(alert_id)

    def _take_requests(self) -> None:
        while self._requests is not None:
            try:
                message = self._requests.recv(MAX_REQUEST_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:            # the parent is gone
                self._requests.close()
                self._requests = None
                return
            request = json.loads(message)
            if request["until"] <= time.monotonic():    # late: the parent merges the parts soon
                self.stats["anomaly.evidence_request_late"] += 1
                continue
            flows = tuple((tuple(a), tuple(b)) for a, b in request["flows"])
            self._open(request["alert_id"], flows, request["until"])

    def _merge(self, alert_id: str) -> None:
        """The alert's parts (one per process that held its flows) into its pcap, in time order."""
        self._merge_at.pop(alert_id, None)
        window = self._windows.get(alert_id)
        if window is not None:          # merged early (too many open): this process's part ends here
            self._close_window(window)
        frames: list[Frame] = []
        for part in sorted(self.directory.glob(f".{alert_id}.*.part")):
            try:
                with open_capture(part) as reader:
                    frames += ((ts, linktype, bytes(data)) for ts, linktype, data, _ in reader)
            except (CaptureError, OSError):     # cut short by the directory bound, or gone
                self.stats["anomaly.evidence_part_unreadable"] += 1
            part.unlink(missing_ok=True)
        frames.sort(key=lambda f: f[0])
        try:
            self._write(alert_id, frames)
        except OSError:
            self.stats["anomaly.evidence_write_failed"] += 1

    # -- replay ----------------------------------------------------------------------------
    def from_files(self, alerts: list[AlertEnvelope], paths: list[str]) -> None:
        """Replay: every frame of the alerts' flows in the capture files ``paths``."""
        wanted = {key: [] for alert in alerts for key in _flow_ids(alert)}
        decoder = FrameDecoder()
        for path in paths:
            with open_capture(path) as reader:
                for ts, linktype, data, _ in reader:
                    segment = decoder.feed(ts, linktype, data)
                    if segment is None:
                        continue
                    src, dst, sport, dport = segment[:4]
                    frames = wanted.get(flow_id(str(ipaddress.ip_address(src)), sport,
                                                str(ipaddress.ip_address(dst)), dport))
                    if frames is not None:
                        frames.append((ts, linktype, bytes(data)))
        for alert in alerts:
            self._write(alert.alert_id,
                        sorted((f for key in _flow_ids(alert) for f in wanted[key]), key=lambda f: f[0]))

    def _write(self, alert_id: str, frames: list[Frame]) -> None:
        if not frames:
            self.stats["evidence_without_frames"] += 1
            return
        path = self.directory / f"{alert_id}.pcap"
        tmp = path.with_suffix(".pcap.tmp")
        out = _PcapOut(tmp, self.stats)
        try:
            for frame in frames:
                out.add(*frame)
        finally:
            out.close()
        os.replace(tmp, path)
        self.stats["evidence_files"] += 1
        self._bound_directory()

    def _bound_directory(self) -> None:
        files = []
        for pattern in ("*.pcap", ".*.part"):
            for path in self.directory.glob(pattern):
                try:
                    stat = path.stat()
                except FileNotFoundError:     # a part another process just merged
                    continue
                files.append((stat.st_mtime_ns, stat.st_size, path))
        files.sort()
        total = sum(size for _, size, _ in files)
        while total > self.max_bytes and len(files) > 1:
            _, size, oldest = files.pop(0)
            total -= size
            oldest.unlink(missing_ok=True)
            self.stats["evidence_removed"] += 1


def _flow_ids(alert: AlertEnvelope) -> list[FlowId]:
    return list(dict.fromkeys(flow_id(f.src_ip, f.src_port, f.dest_ip, f.dest_port)
                              for f in alert.flows if f.src_port is not None and f.dest_port is not None))
