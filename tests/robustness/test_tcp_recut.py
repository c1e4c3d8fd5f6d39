"""The real attack streams re-cut at the TCP layer give the same events through the whole Pipeline.

Segmentation down to 1 byte, reordering, duplicates, overlapping retransmissions of the same
bytes, sequence numbers across the 2**32 wrap; conflicting overlaps follow first-wins and are
counted. DFS_SENSOR_LONG=1 runs many more examples.
"""
from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PCAPS, decode_capture
from tests.robustness.recut import (SEQ_SPACE, Segment, event_facts, extract_flows, flow_frames, run_frames,
                                    turn_offsets)

LONG = bool(os.environ.get("DFS_SENSOR_LONG"))
EXAMPLES = 1000 if LONG else 25
CAPTURES = ["dfscoerce-smb21.pcap", "dfscoerce-smb1.pcap", "dfscoerce-fragmented.pcap",
            "dfscoerce-nbss139.pcap", "dfscoerce-split-writes.pcap", "dfscoerce-multi-context.pcap",
            "dfscoerce-rpc-integrity.pcap", "dfsnm-other-coercion.pcap"]
SIZES = (1, 2, 3, 5, 13, 64, 536, 1448)
# Segments shuffled together at most: keeps the out-of-order buffer far below its bound, so
# what is tested is reassembly, not the (separately tested) give-up path.
MAX_REORDER_WINDOW = 16

_flows_cache: dict[str, list] = {}


def flows_of(name: str):
    if name not in _flows_cache:
        _flows_cache[name] = extract_flows(PCAPS / name)
    return _flows_cache[name]


def plain_cut(flow) -> list[list[Segment]]:
    return [[Segment(c, off, data)] for (c, data), off in zip(flow.turns, turn_offsets(flow.turns))]


def frames_of(name: str, cut, isn=(1000, 5000)) -> list[bytes]:
    frames = []
    for flow in flows_of(name):
        frames.extend(flow_frames(flow.key, cut(flow), isn))
    return frames


def recut_turn(rng: random.Random, from_client: bool, offset: int, data: bytes, knobs: dict) -> list[Segment]:
    size = rng.choice(knobs["sizes"])
    cuts, i = [], 0
    while i < len(data):
        n = max(1, min(size, rng.randint(1, size * 2)))
        cuts.append(Segment(from_client, offset + i, data[i:i + n]))
        i += n
    segs = []
    for seg in cuts:
        segs.append(seg)
        if rng.random() < knobs["dup"]:
            segs.append(seg)
    if len(cuts) > 1 and rng.random() < knobs["overlap"]:
        # a retransmission spanning several original segments, same bytes
        a = rng.randrange(len(data))
        b = rng.randint(a + 1, len(data))
        segs.insert(rng.randrange(len(segs) + 1), Segment(from_client, offset + a, data[a:b]))
    if rng.random() < knobs["reorder"]:
        window = rng.randint(2, MAX_REORDER_WINDOW)
        for w in range(0, len(segs), window):
            block = segs[w:w + window]
            rng.shuffle(block)
            segs[w:w + window] = block
    return segs


@pytest.fixture(scope="module")
def baselines():
    """Per capture: the events of the original capture, which the plain rebuild must equal."""
    out = {}
    for name in CAPTURES:
        records, _ = decode_capture(PCAPS / name)
        out[name] = event_facts(records)
    return out


@pytest.mark.parametrize("name", CAPTURES)
def test_rebuilt_frames_give_the_capture_events(name, baselines):
    records, _ = run_frames(frames_of(name, plain_cut))
    assert baselines[name], "capture has no catalogued calls"
    assert event_facts(records) == baselines[name]


@pytest.mark.parametrize("name", CAPTURES)
def test_one_byte_segments_in_order(name, baselines):
    def cut(flow):
        return [[Segment(c, off + i, data[i:i + 1]) for i in range(len(data))]
                for (c, data), off in zip(flow.turns, turn_offsets(flow.turns))]
    records, _ = run_frames(frames_of(name, cut))
    assert event_facts(records) == baselines[name]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(CAPTURES), seed=st.integers(0, 2**32 - 1),
       sizes=st.lists(st.sampled_from(SIZES), min_size=1, max_size=3, unique=True),
       dup=st.sampled_from((0.0, 0.1, 0.5)), overlap=st.sampled_from((0.0, 0.3, 1.0)),
       reorder=st.sampled_from((0.0, 0.5, 1.0)),
       isn=st.tuples(st.integers(0, SEQ_SPACE - 1), st.integers(SEQ_SPACE - 4000, SEQ_SPACE - 1)))
def test_any_segmentation_reordering_duplication_gives_the_same_events(baselines, name, seed, sizes, dup,
                                                                      overlap, reorder, isn):
    rng = random.Random(seed)
    knobs = {"sizes": sizes, "dup": dup, "overlap": overlap, "reorder": reorder}

    def cut(flow):
        return [recut_turn(rng, c, off, data, knobs) for (c, data), off in zip(flow.turns, turn_offsets(flow.turns))]
    records, stats = run_frames(frames_of(name, cut, isn))
    assert event_facts(records) == baselines[name]
    assert stats["anomaly.tcp_overlap_conflict"] == 0
    assert stats["tcp_gaps"] == 0


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(CAPTURES), seed=st.integers(0, 2**32 - 1))
def test_conflicting_retransmission_after_the_original_loses_and_is_counted(baselines, name, seed):
    """First wins: an overlapping copy with other bytes, sent after the real bytes were buffered
    out of order, changes nothing but the conflict counter."""
    rng = random.Random(seed)
    conflicts = 0

    def cut(flow):
        nonlocal conflicts
        turns = []
        for (c, data), off in zip(flow.turns, turn_offsets(flow.turns)):
            if len(data) < 8 or rng.random() < 0.5:
                turns.append([Segment(c, off, data)])
                continue
            head, tail = rng.randint(1, len(data) // 2), rng.randint(len(data) // 2 + 1, len(data) - 1)
            # covers the end of one buffered segment and the start of the next; the hole before
            # them is filled last
            forged = bytes(b ^ 0x5A for b in data[tail - 1:tail + 1])
            turns.append([Segment(c, off + tail, data[tail:]), Segment(c, off + head, data[head:tail]),
                          Segment(c, off + tail - 1, forged), Segment(c, off, data[:head])])
            conflicts += 1
        return turns
    records, stats = run_frames(frames_of(name, cut))
    assert event_facts(records) == baselines[name]
    assert stats["anomaly.tcp_overlap_conflict"] == 2 * conflicts   # one per held segment it overlaps
