"""``--evidence DIR``: for every alert, a pcap of the frames of the flows it is about, named
``<alert_id>.pcap`` (the call's flow; for a coercion alert also the back-authentication's).

Replay takes the frames from the capture files: the alerts raised while a file is read are
kept, and once it is done (``from_files``) the files read so far are scanned again for every
frame of those alerts' flows, so each pcap holds its flows whole. Live capture keeps a bounded
ring per flow as frames pass (``observe``): the last MAX_FRAMES_PER_FLOW frames of each of the
MAX_FLOWS most recently active flows, within MAX_RING_BYTES in all, written at the alert
(``write``): an alert is raised at the call's answer or at the back-authentication, so the
ring holds the handshake, the bind and the call of a short coercion flow; of a long flow only
its last frames. The directory is bounded: past ``max_bytes`` the oldest evidence files are
removed (counted as ``evidence_removed``).
"""
from __future__ import annotations

import heapq
import ipaddress
import os
import struct
from collections import OrderedDict, deque
from pathlib import Path

from sensor.alerts import AlertEnvelope
from sensor.anomaly import Stats
from sensor.hosts import canonical_address
from sensor.capture.pcapfile import open_capture
from sensor.net.frames import FrameDecoder

MAX_FRAMES_PER_FLOW = 256       # a DFSCoerce call flow is ~20-40 frames, a back-authentication ~10
MAX_FLOWS = 4096                # flows remembered; the least recently active go first
MAX_RING_BYTES = 32 * 1024 * 1024   # all rings together; the least recently active flow goes first
DEFAULT_MAX_BYTES = 256 * 1024 * 1024   # the evidence directory
# pcap (not pcapng): every tool reads it. Magic for microsecond timestamps, version 2.4.
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")
PCAP_MAGIC_US = 0xA1B2C3D4
SNAPLEN = 262_144

FlowId = tuple[tuple[str, int], tuple[str, int]]


def flow_id(ip_a: str, port_a: int, ip_b: str, port_b: int) -> FlowId:
    """Both directions of a TCP connection, one key (addresses canonical)."""
    a = (str(canonical_address(ip_a) or ip_a), port_a)
    b = (str(canonical_address(ip_b) or ip_b), port_b)
    return (a, b) if a <= b else (b, a)


class Evidence:
    def __init__(self, directory: str, max_bytes: int = DEFAULT_MAX_BYTES):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.stats = Stats()
        self._decoder = FrameDecoder()
        self._rings: OrderedDict[FlowId, deque] = OrderedDict()
        self._ring_bytes = 0

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

    def _forget_oldest(self) -> None:
        _, ring = self._rings.popitem(last=False)
        self._ring_bytes -= sum(len(f[2]) for f in ring)
        self.stats["evidence_flows_forgotten"] += 1

    def write(self, alert: AlertEnvelope) -> Path | None:
        """Live: the alert's pcap from the rings (frames of its flows in time order); None
        when no frame is held."""
        rings = [self._rings.get(key) for key in _flow_ids(alert)]
        return self._write(alert, list(heapq.merge(*(r for r in rings if r), key=lambda f: f[0])))

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
            self._write(alert, sorted((f for key in _flow_ids(alert) for f in wanted[key]), key=lambda f: f[0]))

    def _write(self, alert: AlertEnvelope, frames: list) -> Path | None:
        if not frames:
            self.stats["evidence_without_frames"] += 1
            return None
        linktype = frames[0][1]
        path = self.directory / f"{alert.alert_id}.pcap"
        tmp = path.with_suffix(".pcap.tmp")
        with open(tmp, "wb") as out:
            out.write(_PCAP_HEADER.pack(PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, linktype))
            for ts, frame_linktype, raw in frames:
                if frame_linktype != linktype:     # one pcap, one link type
                    self.stats["evidence_frames_other_linktype"] += 1
                    continue
                seconds, micros = divmod(round(ts * 1_000_000), 1_000_000)
                out.write(_PCAP_RECORD.pack(seconds, micros, len(raw), len(raw)))
                out.write(raw)
        os.replace(tmp, path)
        self.stats["evidence_files"] += 1
        self._bound_directory()
        return path

    def _bound_directory(self) -> None:
        files = sorted(self.directory.glob("*.pcap"), key=lambda p: p.stat().st_mtime_ns)
        total = sum(p.stat().st_size for p in files)
        while total > self.max_bytes and len(files) > 1:
            oldest = files.pop(0)
            total -= oldest.stat().st_size
            oldest.unlink()
            self.stats["evidence_removed"] += 1



def _flow_ids(alert: AlertEnvelope) -> list[FlowId]:
    return list(dict.fromkeys(flow_id(f.src_ip, f.src_port, f.dest_ip, f.dest_port)
                              for f in alert.flows if f.src_port is not None and f.dest_port is not None))
