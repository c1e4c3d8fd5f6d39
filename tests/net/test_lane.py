"""The bulk lane and the SMB fast path change nothing but speed: the same records and counters
with both and with neither (the fast path alone: tests/smb/test_fastpath.py). Nor does the
compiled core (sensor/compiled.py): the same records and counters as the pure-Python modules.

Checked on every capture in pcaps/ and the public corpus, on the large lab capture (slow),
and on real attack flows with 256 KiB SMB2 WRITE/READ transfers put in front of the attack and
re-cut at the TCP layer (segment sizes, reordering, duplicates, overlapping retransmissions,
lost segments with and without an acknowledgement past them, VLAN-tagged copies, a FIN).
"""
from __future__ import annotations

import os
import pickle
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor import compiled
from sensor.capture import pcapfile
from sensor.capture.pcapfile import CaptureError, open_capture
from sensor.net.frames import LINKTYPE_ETHERNET
from sensor.pipeline import Pipeline, PipelineSettings
from tests.conftest import CORPUS, PCAPS, ROOT, corpus_captures, decode_capture
from tests.robustness.recut import ACK, FIN, SEQ_SPACE, Segment, event_facts, extract_flows, frame, turn_offsets
from tests.robustness.test_tcp_recut import recut_turn
from tests.smb.conftest import nbss
from tests.smb.test_smb2 import DISK_FID, read, read_response, write, write_response

# The bulk lab workload: pcaps/large (bench/run builds it), or the benchmark machine's copy.
LARGE = Path(os.environ.get("DFS_SENSOR_LARGE") or next(
    (p for p in (PCAPS / "large" / "mixed.pcap", ROOT.parent / "bench-data" / "large" / "mixed.pcap") if p.is_file()),
    PCAPS / "large" / "mixed.pcap"))
LANE_COUNTERS = ("bulk_lane_packets", "bulk_lane_bytes", "smb_fast_path_packets")
ATTACKS = ["dfscoerce-smb21.pcap", "dfscoerce-smb311-clear.pcap", "dfscoerce-smb202.pcap",
           "dfscoerce-nbss139.pcap"]
BULK = 256 << 10        # one 256 KiB WRITE and READ answer per flow (skipped: > 64 KiB)
MSS = 1448
MAX_SEGMENT = 9000      # a jumbo frame; re-cut retransmissions longer than this are split


def both_ways(run):
    """Run with the lane and the fast path, then with neither: (records, stats, lane packets)."""
    results = []
    for lane in (True, False):
        records, stats = run(PipelineSettings(bulk_lane=lane, fast_path=lane))
        used = stats["bulk_lane_packets"]
        for name in LANE_COUNTERS:
            stats.pop(name, None)
        results.append((records, stats, used))
    return results


def assert_same(run) -> int:
    (records, stats, used), (plain_records, plain_stats, _) = both_ways(run)
    assert records == plain_records
    assert stats == plain_stats
    return used


def decode_readable(path: Path, pipeline_settings: PipelineSettings):
    """The pipeline over what can be read of a capture (some corpus files are damaged)."""
    pipe = Pipeline(pipeline_settings)
    records: list = []
    try:
        for ts, linktype, data, number in open_capture(path):
            records.extend(pipe.feed(ts, linktype, data, number))
    except CaptureError as e:
        records.append(str(e))
    records.extend(pipe.close())
    return records, pipe.stats


def decode_pure(paths: list[Path]) -> list[tuple[list, object]]:
    """``decode_readable`` of each capture (lane and fast path on) by the pure-Python modules:
    in a child process, since a process imports one core or the other (sensor/compiled.py)."""
    script = ("import pickle, sys\nfrom pathlib import Path\nfrom sensor.pipeline import PipelineSettings\n"
              "from tests.net.test_lane import decode_readable\n"
              "sys.stdout.buffer.write(pickle.dumps([decode_readable(Path(p), PipelineSettings()) "
              "for p in sys.argv[1:]]))")
    out = subprocess.run([sys.executable, "-c", script, *map(str, paths)], cwd=ROOT, check=True,
                         env=dict(os.environ, DFS_SENSOR_PURE="1"), capture_output=True).stdout
    return pickle.loads(out)


def needs_compiled_core() -> None:
    if not compiled.COMPILED:
        pytest.skip(f"this process runs the {compiled.CORE} core: compiled vs pure would compare the pure "
                    "path with itself (tests/test_compiled.py fails CI if the core is not built there)")


LAB = sorted(PCAPS.glob("*.pcap*"))
CORPUS_CAPTURES = corpus_captures(".pcap", ".pcapng", ".cap")


@pytest.fixture(scope="module")
def pure_lab():
    """Every lab capture decoded by the pure-Python core, once (one child process)."""
    needs_compiled_core()
    return dict(zip(LAB, decode_pure(LAB)))


@pytest.fixture(scope="module")
def pure_corpus():
    needs_compiled_core()
    return dict(zip(CORPUS_CAPTURES, decode_pure(CORPUS_CAPTURES)))


@pytest.mark.parametrize("path", LAB, ids=lambda p: p.name)
def test_every_lab_capture_gives_the_same_records_and_counters(path):
    assert_same(lambda s: decode_readable(path, s))


@pytest.mark.parametrize("path", LAB, ids=lambda p: p.name)
def test_every_lab_capture_gives_the_same_records_and_counters_compiled_and_pure(path, pure_lab):
    assert decode_readable(path, PipelineSettings()) == pure_lab[path]


@pytest.mark.parametrize("path", CORPUS_CAPTURES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_capture_gives_the_same_records_and_counters(corpus, path):
    assert_same(lambda s: decode_readable(path, s))


@pytest.mark.parametrize("path", CORPUS_CAPTURES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_capture_gives_the_same_records_and_counters_compiled_and_pure(corpus, path, pure_corpus):
    assert decode_readable(path, PipelineSettings()) == pure_corpus[path]


# -- the batch entry (sensor/capture/batch.py) -----------------------------------------------
def read_capture(path: Path, pipeline_settings: PipelineSettings, batch: bool):
    """``decode_readable`` frame by frame (the stage contract's ``feed``) or through the
    reader's batch entry (``replay_into``), with what the reader counted and reported."""
    pipe = Pipeline(pipeline_settings)
    records: list = []
    reader = None
    try:
        reader = open_capture(path)
        if batch:
            for out in reader.replay_into(pipe):
                records.extend(out)
        else:
            for ts, linktype, data, number in reader:
                records.extend(pipe.feed(ts, linktype, data, number))
    except CaptureError as e:
        records.append(str(e))
    records.extend(pipe.close())
    return records, pipe.stats, reader and (reader.stats, reader.problems, reader.position)


def assert_batch_same(path: Path) -> None:
    """The batch entry gives the per-frame path's records, counters, reader counts and
    warnings, with every fast path on and with none."""
    for lanes in (True, False):
        settings = PipelineSettings(bulk_lane=lanes, fast_path=lanes)
        assert read_capture(path, settings, batch=True) == read_capture(path, settings, batch=False)


@pytest.mark.parametrize("path", LAB, ids=lambda p: p.name)
def test_every_lab_capture_gives_the_same_records_through_the_batch_entry(path):
    assert_batch_same(path)


@pytest.mark.parametrize("path", CORPUS_CAPTURES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_capture_gives_the_same_records_through_the_batch_entry(corpus, path):
    assert_batch_same(path)


def test_batch_entry_hands_back_each_frames_records_before_the_next_frame():
    """The walk returns as soon as a frame completed records, so the runner stores them and
    commits after the same frames as frame by frame (a store batch holds at most
    COMMIT_EVERY_EVENTS events, however many a window of the capture completes)."""
    handed_back = 0
    for path in LAB:
        pipe = Pipeline()
        with open_capture(path) as reader:
            batched = [out for out in reader.replay_into(pipe) if out]
        pipe = Pipeline()
        with open_capture(path) as reader:
            framed = [out for ts, linktype, data, number in reader if (out := pipe.feed(ts, linktype, data, number))]
        assert batched == framed, path.name
        handed_back += len(framed)
    assert handed_back > len(LAB)       # captures where several frames complete records


@pytest.mark.parametrize("window", [4096, 65536 + 4096])
def test_batch_entry_stops_at_every_window_end_and_the_reader_goes_on(monkeypatch, window):
    """A small mmap window: records cross its end every few frames, so the walk hands over
    to the reader's own code, which remaps and walks on; nothing changes."""
    monkeypatch.setattr(pcapfile, "MAP_WINDOW", window)
    for name in ATTACKS + ["family/efsr-backauth-smb.pcap"]:
        assert_batch_same(PCAPS / name)


def test_batch_entry_leaves_empty_oversized_and_cut_records_to_the_reader(tmp_path):
    """Records the reader must judge (empty, oversized, a cut tail) between plain ones: the
    same frames, numbers, anomalies and warnings as frame by frame."""
    with open(PCAPS / "dfscoerce-smb21.pcap", "rb") as f:
        header, body = f.read(24), f.read()
    endian = "<" if header[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    record = struct.Struct(endian + "IIII")
    records, at = [], 0
    while at < len(body):
        caplen = record.unpack_from(body, at)[2]
        records.append(body[at:at + 16 + caplen])
        at += 16 + caplen
    sec = record.unpack_from(records[5])[0]
    empty = record.pack(sec, 0, 0, 0)
    oversized = record.pack(sec, 1, pcapfile.MAX_RECORD + 1, pcapfile.MAX_RECORD + 1) + b"\0" * (pcapfile.MAX_RECORD + 1)
    damaged = header + b"".join(records[:5]) + empty * 3 + b"".join(records[5:10]) + oversized + b"".join(records[10:])
    for cut in (0, 7, len(records[-1]) - 7):     # the whole file, a cut frame, a cut record header
        path = tmp_path / f"damaged-{cut}.pcap"
        path.write_bytes(damaged[:len(damaged) - cut])
        assert_batch_same(path)
        _, stats, (reader_stats, problems, _) = read_capture(path, PipelineSettings(), batch=True)
        assert reader_stats["anomaly.capture_oversized_record"] == 1
        assert stats["packets"] == len(records) - (cut > 0)


@pytest.mark.slow
@pytest.mark.skipif(not LARGE.is_file(), reason="the large lab capture is not built (bench/run builds it)")
def test_large_capture_same_and_almost_all_on_the_lane():
    used = assert_same(lambda s: decode_capture(LARGE, s))
    assert used > 0.9 * 719_323
    settings = PipelineSettings()       # the batch entry, lane and fast path on (replay's way)
    assert read_capture(LARGE, settings, batch=True) == read_capture(LARGE, settings, batch=False)


# -- attack flows with bulk transfers in front, re-cut --------------------------------------
def with_bulk(turns: list[tuple[bool, bytes]]) -> list[tuple[bool, bytes]]:
    """The flow's turns with a WRITE to a disk file and a READ answer of BULK bytes inserted
    before the first client turn after the session setup."""
    payload = bytes(random.Random(7).randbytes(BULK))
    bulk = [(True, nbss(write(900, DISK_FID, payload))), (False, nbss(write_response(900, BULK))),
            (True, nbss(read(901, DISK_FID))), (False, nbss(read_response(901, payload)))]
    at = next(i for i in range(4, len(turns)) if turns[i][0])
    merged = turns[:at] + bulk + turns[at:]
    out: list[tuple[bool, bytes]] = []
    for side, data in merged:          # consecutive turns of one side are one turn
        if out and out[-1][0] == side:
            out[-1] = (side, out[-1][1] + data)
        else:
            out.append((side, data))
    return out


_VLAN = struct.Struct("!HH")


def tag(data: bytes, vlan: int) -> bytes:
    """The same frame with an 802.1Q tag (a SPAN that sees both copies)."""
    return data[:12] + _VLAN.pack(0x8100, vlan) + data[12:]


def bulk_frames(key, turns, rng: random.Random | None, knobs: dict, mss: int = MSS) -> list[bytes]:
    """Handshake, every turn cut into ``mss``-byte segments (re-cut by ``knobs`` when ``rng``), FINs.

    Each segment acknowledges what the peer sent before this turn, except where a lost
    segment is followed by an ACK past it, as a receiver that got it would send."""
    isn = (0xFFFF_0000, 0x7FFF_F000)     # both sequence spaces wrap inside the bulk data
    sent = [0, 0]
    out = [frame(key, Segment(True, 0, b"", 0x02), isn, (0, 0)),
           frame(key, Segment(False, 0, b"", 0x12), isn, (0, 0)),
           frame(key, Segment(True, 0, b"", ACK), isn, (0, 0))]
    for (side, data), offset in zip(turns, turn_offsets(turns)):
        if rng is None:
            segs = [Segment(side, offset + i, data[i:i + mss]) for i in range(0, len(data), mss)]
        else:
            segs = [Segment(s.from_client, s.offset + i, s.data[i:i + MAX_SEGMENT])
                    for s in recut_turn(rng, side, offset, data, knobs)
                    for i in range(0, len(s.data), MAX_SEGMENT)]
        acked = (sent[0], sent[1])
        peer_ack = list(acked)
        for seg in segs:
            lost = rng is not None and len(data) > BULK and rng.random() < knobs["loss"]
            if not lost:
                built = frame(key, seg, isn, acked)
                out.append(built)
                if rng is not None and rng.random() < knobs["vlan"]:
                    out.append(tag(built, 100))
            end = seg.offset + len(seg.data)
            me = 0 if seg.from_client else 1
            if rng is not None and rng.random() < knobs["acks"]:
                # the receiver acknowledges what it got, also past a lost segment
                peer_ack[me] = max(peer_ack[me], end)
                out.append(frame(key, Segment(not seg.from_client, sent[1 - me], b"", ACK), isn,
                                 (peer_ack[0], peer_ack[1])))
        sent[0 if side else 1] = offset + len(data)
    out.append(frame(key, Segment(True, sent[0], b"", FIN | ACK), isn, tuple(sent)))
    out.append(frame(key, Segment(False, sent[1], b"", FIN | ACK), isn, tuple(sent)))
    return out


def run_frames(frames: list[bytes], pipeline_settings: PipelineSettings):
    pipe = Pipeline(pipeline_settings)
    records = []
    for i, data in enumerate(frames, 1):
        records.extend(pipe.feed(1_700_000_000.0 + i / 1000, LINKTYPE_ETHERNET, data, i))
    records.extend(pipe.close())
    return records, pipe.stats


_flows: dict[str, list] = {}


def bulk_flows(name: str):
    if name not in _flows:
        _flows[name] = [(f.key, with_bulk(f.turns)) for f in extract_flows(PCAPS / name)]
    return _flows[name]


@pytest.mark.parametrize("name", ATTACKS)
def test_bulk_in_front_of_an_attack_goes_on_the_lane_and_the_call_is_the_same(name):
    frames = [f for key, turns in bulk_flows(name) for f in bulk_frames(key, turns, None, {})]
    (records, stats, used), (plain, plain_stats, _) = both_ways(lambda s: run_frames(frames, s))
    assert records == plain and stats == plain_stats
    bulk_segments = 2 * BULK // MSS
    assert used >= 0.95 * bulk_segments
    baseline, _ = decode_capture(PCAPS / name)
    assert event_facts(records) == event_facts(baseline)
    assert stats["nbss_bytes_skipped"] >= 2 * BULK - 2 * 128
    assert not any(k.startswith("anomaly.") for k in stats)


KNOBS = st.fixed_dictionaries({
    "sizes": st.sampled_from([(MSS,), (536, MSS), (700, MSS, 9000)]),
    "dup": st.sampled_from([0.0, 0.01, 0.1]),
    "overlap": st.sampled_from([0.0, 0.5]),
    "reorder": st.sampled_from([0.0, 0.3, 1.0]),
    "loss": st.sampled_from([0.0, 0.001, 0.01]),
    "acks": st.sampled_from([0.0, 0.3, 1.0]),
    "vlan": st.sampled_from([0.0, 0.01]),
})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(ATTACKS), knobs=KNOBS, seed=st.integers(0, 2**32 - 1))
def test_any_recut_of_bulk_and_attack_gives_the_same_records_with_and_without_the_lane(name, knobs, seed):
    rng = random.Random(seed)
    frames = [f for key, turns in bulk_flows(name) for f in bulk_frames(key, turns, rng, knobs)]
    assert_same(lambda s: run_frames(frames, s))


def test_seq_wrap_is_inside_the_bulk_data():
    """The re-cut flows above cross 2**32 in both directions during the transfers."""
    _key, turns = bulk_flows(ATTACKS[0])[0]
    client_bytes = sum(len(d) for side, d in turns if side)
    server_bytes = sum(len(d) for side, d in turns if not side)
    assert 0xFFFF_0000 + 1 + client_bytes > SEQ_SPACE
    assert 0x7FFF_F000 + 1 + server_bytes > 1 << 31      # past the half: signed deltas flip


def test_an_ack_past_client_bytes_the_capture_lost_makes_the_gap_at_once_lane_or_not():
    """The server's bulk READ answer acknowledges the start of the client's next request, which
    the capture lost: those data frames must take the slow path (the ACK proves the loss), so
    the resync happens when the rest of the request arrives, not at the end of the flow."""
    key, turns = bulk_flows(ATTACKS[0])[0]
    answer = next(i for i, (side, data) in enumerate(turns) if not side and len(data) > BULK)
    lost = 40
    isn = (1000, 5000)
    offsets = turn_offsets(turns)
    out = [frame(key, Segment(True, 0, b"", 0x02), isn, (0, 0)),
           frame(key, Segment(False, 0, b"", 0x12), isn, (0, 0)),
           frame(key, Segment(True, 0, b"", ACK), isn, (0, 0))]
    sent = [0, 0]
    for i, ((side, data), offset) in enumerate(zip(turns, offsets)):
        start = lost if i == answer + 1 else 0
        for at in range(start, len(data), MSS):
            acked = list(sent)
            if i == answer and at > len(data) // 2:
                acked[0] += lost        # the server got the client's next bytes
            out.append(frame(key, Segment(side, offset + at, data[at:at + MSS]), isn, tuple(acked)))
        sent[0 if side else 1] = offset + len(data)
    out.append(frame(key, Segment(True, sent[0], b"", FIN | ACK), isn, tuple(sent)))
    out.append(frame(key, Segment(False, sent[1], b"", FIN | ACK), isn, tuple(sent)))
    (records, stats, used), (plain, plain_stats, _) = both_ways(lambda s: run_frames(out, s))
    assert used > BULK // MSS
    assert records == plain and stats == plain_stats
    resync = [r for r in records if getattr(r, "name", "") == "smb_resync"]
    assert resync and resync[0].ts < 1_700_000_000.0 + (len(out) - 2) / 1000


_IPV4_TOTAL = struct.Struct("!H")


def with_ip_options(data: bytes) -> bytes:
    """The frame with a 4-byte IPv4 option block (NOP NOP NOP EOL, RFC 791 3.1), IHL 6."""
    total = _IPV4_TOTAL.unpack_from(data, 16)[0]
    return data[:14] + b"\x46" + data[15:16] + _IPV4_TOTAL.pack(total + 4) + data[18:34] + b"\x01\x01\x01\x00" + data[34:]


def as_fragments(data: bytes) -> list[bytes]:
    """The frame's IPv4 datagram in two fragments (RFC 791: offsets in 8-byte units)."""
    payload = data[34:]
    cut = len(payload) // 2 // 8 * 8
    out = []
    for offset, part, more in ((0, payload[:cut], 0x2000), (cut, payload[cut:], 0)):
        header = (data[14:16] + _IPV4_TOTAL.pack(20 + len(part)) + b"\x12\x34"
                  + _IPV4_TOTAL.pack(more | offset // 8) + data[22:34])
        out.append(data[:14] + header + part)
    return out


@pytest.mark.parametrize("odd", ["ip_options", "fragments", "vlan_only", "rst_midway"])
def test_bulk_frames_the_lane_refuses_take_the_slow_path_with_the_same_result(odd):
    """Every 37th frame of the bulk transfers is made one the lane must not admit: IP options,
    IP fragments, only a VLAN-tagged copy; or one RST (TCP flags byte at 47) late in the flow."""
    name = ATTACKS[0]
    frames = [f for key, turns in bulk_flows(name) for f in bulk_frames(key, turns, None, {})]
    rst_at = next(i for i in range(len(frames) * 3 // 4, len(frames)) if len(frames[i]) >= 1000)
    changed: list[bytes] = []
    for i, data in enumerate(frames):
        if odd == "rst_midway":
            changed.append(data if i != rst_at else data[:47] + bytes([data[47] | 0x04]) + data[48:])
        elif i % 37 or len(data) < 1000:
            changed.append(data)
        elif odd == "ip_options":
            changed.append(with_ip_options(data))
        elif odd == "fragments":
            changed.extend(as_fragments(data))
        else:
            changed.append(tag(data, 7))
    (records, stats, used), (plain, plain_stats, _) = both_ways(lambda s: run_frames(changed, s))
    assert records == plain and stats == plain_stats
    assert used > BULK // MSS
