"""Packets per second: a bare struct loop over a pcap vs reader, reader+frames, reader+frames+flows,
the whole pipeline with and without the bulk lane (sensor/net/lane.py), and the whole pipeline
fed by the reader's batch entry (sensor/capture/batch.py, as `dfs-sensor replay` feeds it);
with the CPU time per packet beside each (the machine is shared: CPU time moves less than wall).

    .venv/bin/python bench/net_throughput.py ../shared/corpus/zeek/testing/btest/Traces/smb/smb2.pcap
    .venv/bin/python bench/net_throughput.py --steps reader_pipeline_lane,reader_pipeline_batch CAPTURE
"""
from __future__ import annotations

import struct
import sys
import time

from sensor.capture.pcapfile import open_capture
from sensor.net.flows import FlowTable
from sensor.net.frames import FrameDecoder
from sensor.pipeline import Pipeline, PipelineSettings

# Repeat small captures until a run takes long enough to time.
MIN_PACKETS = 200_000


def bare_loop(path: str) -> int:
    """The floor: read the file once, walk the records with struct, touch nothing."""
    with open(path, "rb") as f:
        data = f.read()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    record = struct.Struct(endian + "IIII")
    at, count = 24, 0
    while at + 16 <= len(data):
        caplen = record.unpack_from(data, at)[2]
        data[at + 16:at + 16 + caplen]     # the slice a reader makes of each frame
        at += 16 + caplen
        count += 1
    return count


def reader_only(path: str) -> int:
    return sum(1 for _ in open_capture(path))


def reader_frames(path: str) -> int:
    decoder = FrameDecoder()
    count = 0
    for ts, linktype, data, _frame in open_capture(path):
        decoder.feed(ts, linktype, data)
        count += 1
    return count


def reader_frames_flows(path: str) -> int:
    decoder, table = FrameDecoder(), FlowTable()
    count = 0
    for ts, linktype, data, frame in open_capture(path):
        segment = decoder.feed(ts, linktype, data)
        if segment is not None:
            table.feed(ts, segment, frame)
        count += 1
    table.close(ts)
    return count


def pipeline(path: str, lane: bool) -> int:
    pipe = Pipeline(PipelineSettings(bulk_lane=lane))
    count = 0
    for ts, linktype, data, frame in open_capture(path):
        pipe.feed(ts, linktype, data, frame)
        count += 1
    pipe.close()
    return count


def reader_pipeline_lane(path: str) -> int:
    """The whole pipeline, bulk SMB data frames accounted on the bulk lane (the default)."""
    return pipeline(path, True)


def reader_pipeline_no_lane(path: str) -> int:
    """The whole pipeline, every frame decoded and reassembled."""
    return pipeline(path, False)


def reader_pipeline_batch(path: str) -> int:
    """The whole pipeline, bulk lane and fast path on, fed by the reader itself: the plain
    records of its window walked in place (``replay_into``), as Sensor.process replays."""
    pipe = Pipeline()
    reader = open_capture(path)
    for _records in reader.replay_into(pipe):
        pass
    pipe.close()
    return reader.stats["packets"]


STEPS = (bare_loop, reader_only, reader_frames, reader_frames_flows, reader_pipeline_no_lane,
         reader_pipeline_lane, reader_pipeline_batch)


def measure(step, path: str) -> tuple[float, float]:
    """(packets per second of wall time, microseconds of CPU time per packet)."""
    packets, started, cpu = 0, time.perf_counter(), time.process_time()
    while packets < MIN_PACKETS:
        packets += step(path)
    return packets / (time.perf_counter() - started), (time.process_time() - cpu) / packets * 1e6


if __name__ == "__main__":
    args = sys.argv[1:]
    steps = STEPS
    if args[:1] == ["--steps"]:
        wanted = args[1].split(",")
        steps = tuple(step for step in STEPS if step.__name__ in wanted)
        args = args[2:]
    for capture in args:
        print(capture)
        for step in steps:
            rate, cpu = measure(step, capture)
            print(f"  {step.__name__:22s} {rate:>10,.0f} packets/s  {cpu:6.2f} us CPU/packet")
