"""One TCP direction fed segments by hand: order, duplicates, overlaps, wrap, gaps."""
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.anomaly import Anomaly, Stats
from sensor.net.stream import FlowKey, StreamData, StreamGap
from sensor.net.tcp import TcpDirection, TcpLimits

FLOW = FlowKey("10.0.0.1", 50000, "10.0.0.2", 445)


def direction(**limits) -> TcpDirection:
    return TcpDirection(FLOW, True, TcpLimits(**limits), Stats())


def stream(events) -> bytes:
    return b"".join(bytes(e.data) for e in events if isinstance(e, StreamData))


def test_in_order_passes_the_frame_memoryview_through():
    d = direction()
    d.segment(0.0, 1, 999, b"", syn=True)
    view = memoryview(b"hello")
    [event] = d.segment(0.1, 2, 1000, view)
    assert event.data is view and event.frame == 2 and event.from_client


def test_one_byte_segments_reversed_are_joined_into_one_delivery():
    d = direction()
    d.segment(0.0, 1, 0, b"", syn=True)
    data = b"\x00\x00\x00\x44\xfeSMB"
    events = []
    for i in reversed(range(len(data))):
        events += d.segment(0.0, 10 + i, 1 + i, data[i:i + 1])
    assert events == [StreamData(FLOW, True, 0.0, data, 10)]
    assert d.buffered == 0


def test_duplicates_and_partial_retransmissions_are_dropped_and_counted():
    d = direction()
    d.segment(0.0, 1, 100, b"", syn=True)
    out = d.segment(0, 2, 101, b"abcd") + d.segment(0, 3, 101, b"abcd") + d.segment(0, 4, 103, b"cdef")
    assert stream(out) == b"abcdef"
    assert d.stats["tcp_retransmitted_segments"] == 1 and d.stats["tcp_partial_retransmissions"] == 1


def test_overlap_with_conflicting_bytes_first_received_wins():
    d = direction()
    d.segment(0.0, 1, 0, b"", syn=True)
    out = d.segment(0, 2, 5, b"EFGH")          # out of order, buffered first
    out += d.segment(0, 3, 3, b"cdXXXXY")      # overlaps the buffered bytes with others
    out += d.segment(0, 4, 1, b"ab")
    assert stream(out) == b"abcdEFGHY"
    conflicts = [e for e in out if isinstance(e, Anomaly)]
    assert [c.name for c in conflicts] == ["tcp_overlap_conflict"] and conflicts[0].flow == FLOW
    assert d.stats["anomaly.tcp_overlap_conflict"] == 1


def test_identical_overlap_is_not_a_conflict():
    d = direction()
    d.segment(0.0, 1, 0, b"", syn=True)
    out = d.segment(0, 2, 3, b"cdef") + d.segment(0, 3, 1, b"abcdefgh")
    assert stream(out) == b"abcdefgh" and not d.stats["anomaly.tcp_overlap_conflict"]


def test_sequence_wraparound():
    d = direction()
    isn = 2**32 - 3
    d.segment(0.0, 1, isn, b"", syn=True)
    out = d.segment(0, 3, (isn + 6) % 2**32, b"fgh") + d.segment(0, 2, isn + 1, b"abcd")
    out += d.segment(0, 4, 2, b"e")    # the byte at offset 5 from isn+1: seq wrapped to 2
    assert stream(out) == b"abcdefgh"


def test_ooo_overflow_declares_the_hole_lost_and_continues():
    d = direction(max_ooo_bytes=10)
    d.segment(0.0, 1, 0, b"", syn=True)
    out = d.segment(0, 2, 1, b"ab")
    out += d.segment(0, 3, 11, b"0123456")
    out += d.segment(0, 4, 18, b"789x")      # 11 bytes buffered > 10: give up on the hole
    gaps = [e for e in out if isinstance(e, StreamGap)]
    assert [g.length for g in gaps] == [8]
    assert stream(out) == b"ab0123456789x"
    assert d.stats["anomaly.tcp_ooo_buffer_full"] == 1 and d.buffered == 0


def test_segment_count_bound():
    d = direction(max_ooo_segments=3)
    d.segment(0.0, 1, 0, b"", syn=True)
    out = []
    for seq in (10, 12, 14, 16):
        out += d.segment(0, 2, seq, b"x")
    assert [e.length for e in out if isinstance(e, StreamGap)] == [9]


def test_peer_ack_beyond_a_hole_with_later_data_is_a_gap():
    d = direction()
    d.segment(0.0, 1, 0, b"", syn=True)
    out = d.segment(0, 2, 1, b"req1")
    out += d.acknowledge(0, 3, 9)           # peer got 4 bytes we never saw: wait for proof
    assert stream(out) == b"req1" and not [e for e in out if isinstance(e, StreamGap)]
    out = d.segment(0, 4, 9, b"req2")       # later data confirms the hole
    assert out == [StreamGap(FLOW, True, 0, 4), StreamData(FLOW, True, 0, b"req2", 4)]


def test_ack_arriving_after_buffered_data_fills_the_hole():
    d = direction()
    d.segment(0.0, 1, 0, b"", syn=True)
    d.segment(0, 2, 1, b"a")
    assert d.segment(0, 3, 5, b"efg") == []
    out = d.acknowledge(0, 4, 8)
    assert out == [StreamGap(FLOW, True, 0, 3), StreamData(FLOW, True, 0, b"efg", 4)]


def test_ack_just_ahead_of_lagging_data_is_no_gap():
    d = direction()
    d.segment(0.0, 1, 0, b"", syn=True)
    assert d.acknowledge(0, 2, 5) == []        # a SPAN shows the ACK first
    assert d.segment(0, 3, 1, b"abcd") == [StreamData(FLOW, True, 0, b"abcd", 3)]


def test_flush_turns_holes_and_acked_tail_into_gaps():
    d = direction()
    d.segment(0.0, 1, 0, b"", syn=True)
    d.segment(0, 2, 1, b"ab")
    d.segment(0, 3, 6, b"fg")
    d.acknowledge(0, 4, 3)
    out = d.flush(1.0, 9)
    assert out == [StreamGap(FLOW, True, 1.0, 3), StreamData(FLOW, True, 1.0, b"fg", 9)]
    d.acknowledge(1.0, 10, 20)
    assert d.flush(2.0) == [StreamGap(FLOW, True, 2.0, 12)]


def test_midstream_first_segment_sets_the_start():
    d = direction()
    out = d.segment(0, 1, 123456, b"mid") + d.segment(0, 2, 123459, b"dle")
    assert stream(out) == b"middle"


def test_far_out_of_window_segment_is_an_anomaly_not_a_buffer():
    d = direction()
    d.segment(0.0, 1, 0, b"", syn=True)
    [anomaly] = d.segment(0, 2, 2**31 - 10, b"x" * 20)
    assert anomaly.name == "tcp_segment_out_of_window" and d.buffered == 0


@settings(max_examples=150, deadline=None)
@given(data=st.binary(min_size=1, max_size=400), isn=st.integers(0, 2**32 - 1), draw=st.data())
def test_any_segmentation_reordering_duplication_delivers_the_same_bytes(data, isn, draw):
    cuts = sorted(draw.draw(st.sets(st.integers(1, len(data) - 1), max_size=30)) if len(data) > 1 else set())
    bounds = [0, *cuts, len(data)]
    segments = [(bounds[i], data[bounds[i]:bounds[i + 1]]) for i in range(len(bounds) - 1)]
    # retransmissions that span several original segments, as a real stack may send them
    extra = draw.draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 64)), max_size=5))
    segments += [(start, data[start:start + size]) for start, size in extra]
    order = draw.draw(st.permutations(segments))
    d = direction()
    out = d.segment(0.0, 0, isn, b"", syn=True)
    for frame, (offset, chunk) in enumerate(order, 1):
        out += d.segment(0.0, frame, (isn + 1 + offset) % 2**32, chunk)
    out += d.flush(1.0)
    assert stream(out) == data
    assert not [e for e in out if not isinstance(e, StreamData)]
    assert d.buffered == 0
